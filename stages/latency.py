"""Stage latency: a per-block latency table of the final network's blocks, timed on this device, and its check."""

import time

from fitnas import plots, spaces
from fitnas.latency import build_table, calibrate, check, to_cost
from fitnas.pipeline import LATENCY_CHECK, LATENCY_TABLE, METRICS, PLOTS, final_shape, friendly_errors, start_stage, write_json
from fitnas.tracking import stage_run
from fitnas.distributed import pick_device
from fitnas.train import seed_everything


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    cfg = p.latency
    seed_everything(p.seed)
    device = pick_device(p.device)
    space = spaces.get(p.space)
    shape, size = final_shape(p, space)
    start = time.time()
    frame = build_table(space, shape, size, device, cfg)
    # Seeded apart from the other stages' draws, and calibration apart from the check.
    frame, scale = calibrate(frame, space, shape, size, device, cfg, p.seed + 6)
    LATENCY_TABLE.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(LATENCY_TABLE, index=False)
    cost = to_cost(frame, space)
    checked = check(space, shape, size, cost, device, cfg, p.seed + 5)
    raw = checked.table_ms / scale
    checked.to_csv(LATENCY_CHECK, index=False)
    errors = checked.error_pct.abs()
    summary = {
        "device": str(device),
        "batch_size": cfg.batch_size,
        "threads": cfg.threads or 0,
        "blocks": int((frame.slot >= 0).sum()),
        "fixed_ms": float(cost.base),
        "min_ms": cost.min(),
        "max_ms": cost.max(),
        "networks_checked": len(checked),
        "mean_abs_error_pct": float(errors.mean()) if len(checked) else 0.0,
        "max_abs_error_pct": float(errors.max()) if len(checked) else 0.0,
        "mean_error_pct": float(checked.error_pct.mean()) if len(checked) else 0.0,
        "calibration_scale": scale,
        # The same networks against the blocks' raw sums, before calibration.
        "raw_mean_abs_error_pct": float((100 * (raw - checked.measured_ms) / checked.measured_ms).abs().mean()) if len(checked) else 0.0,
        "seconds": time.time() - start,
    }
    write_json(METRICS / "latency.json", summary)
    figure = plots.latency_check(checked, PLOTS / "latency_check.png", str(device))
    print(f"latency: {summary['blocks']} blocks timed on {device} (batch {cfg.batch_size}); networks "
          f"{summary['min_ms']:.3f}-{summary['max_ms']:.3f} ms; table sum vs measured on {len(checked)} networks: "
          f"mean |error| {summary['mean_abs_error_pct']:.1f}%, max {summary['max_abs_error_pct']:.1f}% "
          f"(calibration x{scale:.2f}; raw sums {summary['raw_mean_abs_error_pct']:.1f}%)")
    with stage_run("latency", p, params_path) as run:
        run.log_params({f"latency.{k}": v for k, v in cfg.model_dump().items()} | {"device": str(device)})
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        for path in (LATENCY_TABLE, LATENCY_CHECK, figure):
            run.log_artifact(path)


if __name__ == "__main__":
    main()

"""Stage 3: score n distinct sub-networks with weights inherited from the supernet."""

import random
import time

import pandas as pd

from fitnas import checkpoints, config, data, spaces
from fitnas.pipeline import METRICS, SAMPLES, SUPERNET, TRAIN, VAL, final_costs, friendly_errors, write_json
from fitnas.tracking import stage_run
from fitnas.train import evaluate, pick_device, progress, recalibrate_batchnorm, seed_everything


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = config.load(params_path)
    cfg = p.sample
    seed_everything(p.seed)
    device = pick_device(p.device)
    space = spaces.get(p.space.name)
    saved = checkpoints.load(SUPERNET, "supernet")
    net = space.build_supernet(space.NetworkShape(**saved["shape"]))
    net.load_state_dict(saved["model"])
    net.to(device)

    train, val = data.load_split(TRAIN), data.load_split(VAL)
    if cfg.val_limit is not None:
        val = data.subset(val, cfg.val_limit, p.seed)
    calibration = data.Batches(train, cfg.bn_batch_size, shuffle=True, seed=p.seed + 1, device=device)
    val_batches = data.Batches(val, cfg.batch_size, shuffle=False, seed=p.seed, device=device)
    costs = final_costs(p, space)

    archs = space.sample(cfg.n, random.Random(p.seed + 2))
    rows = []
    start = time.time()
    for arch in progress(archs, "scoring sub-networks"):
        net.set_arch(arch)
        recalibrate_batchnorm(net, calibration, cfg.bn_batches)
        loss, acc = evaluate(net, val_batches)
        rows.append(
            dict(arch=space.to_str(arch), supernet_acc=acc, supernet_loss=loss, flops_M=round(costs.flops(arch), 6), params_M=round(costs.params(arch), 6))
        )
    seconds = time.time() - start
    table = pd.DataFrame(rows)
    SAMPLES.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(SAMPLES, index=False)
    summary = {
        "n": len(table),
        "seconds": seconds,
        "seconds_per_arch": seconds / len(table),
        "supernet_acc_mean": float(table.supernet_acc.mean()),
        "supernet_acc_max": float(table.supernet_acc.max()),
    }
    write_json(METRICS / "sample.json", summary)
    print(f"sample: scored {len(table)} sub-networks in {seconds:.0f}s; best supernet acc {summary['supernet_acc_max']:.4f}")
    with stage_run("sample", p, params_path) as run:
        run.log_params({f"sample.{k}": v for k, v in cfg.model_dump().items()})
        run.log_metrics(summary)
        run.log_artifact(SAMPLES)


if __name__ == "__main__":
    main()

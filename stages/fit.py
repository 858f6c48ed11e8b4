"""Stage 4: fit the graph network on the supernet scores; predict every distinct network (the lookup table)."""

import time

import numpy as np
import pandas as pd

from fitnas import plots, spaces, strategies
from fitnas.metrics import ranking_report
from fitnas.pipeline import HOLDOUT, LOOKUP, METRICS, PLOTS, PREDICTOR, SAMPLES, final_costs, friendly_errors, start_stage, read_samples, write_json
from fitnas.predictors import from_settings
from fitnas.tracking import stage_run
from fitnas.train import seed_everything
from fitnas.util import progress, save_atomic


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    cfg = p.predictor
    seed_everything(p.seed)
    space = spaces.get(p.space)
    samples = read_samples(SAMPLES, space)
    archs = [space.parse(s) for s in samples.arch]
    y = samples.supernet_acc.to_numpy()
    costs = final_costs(p, space)

    def fitted(kind: str, archs, y, what: str):
        """A predictor of this kind fitted to (archs, y), with a progress bar over its training epochs."""
        bar = None

        def report(done: int, loss: float) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        predictor = from_settings(kind, cfg, space, costs.params, p.seed, progress=report)
        with progress(None, f"fit: {kind} {what}", total=getattr(predictor, "total_epochs", None)) as bar:
            return predictor.fit(archs, y)

    rng = np.random.default_rng(p.seed)
    order = rng.permutation(len(archs))
    n_test = max(2, int(round(cfg.holdout * len(archs))))
    test_idx, train_idx = order[:n_test], order[n_test:]
    fit_archs, fit_y = [archs[i] for i in train_idx], y[train_idx]
    test_archs, test_y = [archs[i] for i in test_idx], y[test_idx]

    holdout = pd.DataFrame({"arch": samples.arch.to_numpy()[test_idx], "measured_acc": test_y})
    report: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for kind in [cfg.kind] + [b for b in cfg.baselines if b != cfg.kind]:
        start = time.time()
        predictor = fitted(kind, fit_archs, fit_y, "on the fit split")
        holdout[f"pred_{kind}"] = predictor.query(test_archs)
        seconds[kind] = time.time() - start
        report[kind] = ranking_report(holdout[f"pred_{kind}"].to_numpy(), test_y)
        print(f"fit: {kind:6s} held-out Kendall tau {report[kind]['kendall_tau']:.3f}  ({seconds[kind]:.1f}s)", flush=True)

    holdout["predicted"] = holdout[f"pred_{cfg.kind}"]  # the chosen predictor's, for dvc plots
    # The lookup table comes from the chosen predictor refitted on every sample.
    start = time.time()
    predictor = fitted(cfg.kind, archs, y, "on every sample")
    # The predictor is kept too: a space too large to list is searched with it, and its table
    # then holds the networks the fit has scores for, the samples.
    table = strategies.lookup_table(space, predictor, costs, samples)
    refit_seconds = time.time() - start
    LOOKUP.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(LOOKUP, index=False)
    save_atomic(predictor.state(), PREDICTOR)
    holdout.to_csv(HOLDOUT, index=False)
    metrics = {
        "predictor": cfg.kind,
        "n_fit": len(fit_archs),
        "threads": p.threads,
        "n_holdout": len(test_archs),
        "lookup_rows": len(table),
        "lookup_seconds": refit_seconds,
        # How long early stopping let the final fit train (neural predictors only).
        **({"fitted_epochs": predictor.fitted_epochs} if hasattr(predictor, "fitted_epochs") else {}),
        **{f"{kind}.{k}": v for kind, r in report.items() for k, v in r.items() if k != "n"},
        **{f"{kind}.fit_seconds": s for kind, s in seconds.items()},
    }
    write_json(METRICS / "fit.json", metrics)
    scatter = plots.predicted_vs_measured(holdout, report, PLOTS / "fit_scatter.png")
    with stage_run("fit", p, params_path) as run:
        run.log_params({f"predictor.{k}": v for k, v in cfg.model_dump().items()})
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        run.log_metrics({f"fit.{cfg.kind}.kendall_tau": report[cfg.kind]["kendall_tau"]}, to_parent=True)
        run.log_artifact(scatter)
        run.log_artifact(LOOKUP)


if __name__ == "__main__":
    main()

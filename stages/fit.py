"""Stage 4: fit a predictor of the space; predict every distinct network (the lookup table).

Without anchors (results/anchors.csv has no rows) the predictor of `predictor.kind` is fitted on
the supernet scores, as in the paper. With anchors (networks trained alone, and their accuracy)
the multi-fidelity predictor fits those true accuracies and takes the supernet scores and the
zero-cost proxies of the samples as low-fidelity signals, params as a free one: the cheap signals'
shared error is what a few real trainings correct.
"""

import time

import numpy as np
import pandas as pd

from fitnas import plots, spaces, strategies
from fitnas.metrics import ranking_report
from fitnas.pipeline import (
    ANCHORS, HOLDOUT, LOOKUP, METRICS, PLOTS, PREDICTOR, SAMPLES, final_costs, friendly_errors, read_anchors,
    read_samples, start_stage, write_json,
)
from fitnas.predictors import MultiFidelityPredictor, from_settings
from fitnas.predictors.multifidelity import MIN_TRUTHS
from fitnas.tracking import stage_run
from fitnas.train import seed_everything
from fitnas.util import progress, save_atomic


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    cfg = p.predictor
    seed_everything(p.seed)
    space = spaces.get(p.space)
    proxies = tuple(p.sample.proxies)
    samples = read_samples(SAMPLES, space, proxies)
    anchors = read_anchors(ANCHORS, space, MIN_TRUTHS)  # before any fitting: a bad file stops nothing half-done
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

    # How well each predictor, and each free ranking, orders supernet scores it was not fitted on.
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
    for name in ("flops_M", *proxies):
        values = samples[name].to_numpy(dtype=float)[test_idx]
        report[name] = ranking_report(np.nan_to_num(values, nan=-np.inf), test_y)
        print(f"fit: {name:6s} ranks the held-out scores at Kendall tau {report[name]['kendall_tau']:.3f}", flush=True)
    holdout["predicted"] = holdout[f"pred_{cfg.kind}"]  # the chosen predictor's, for dvc plots

    # The lookup table: from every sample, and the anchors when there are some.
    start = time.time()
    if len(anchors):
        predictor = fused(p, space, samples, archs, anchors, proxies, costs.params)
        print(f"fit: multifidelity on {len(anchors)} anchors + {len(archs)} supernet scores: "
              f"cross-validated Kendall tau {predictor.report['cv_kendall_tau']:.3f}; weights "
              + ", ".join(f"{c} {w:.1f}" for c, w in zip(predictor.components, predictor.weights) if w > 0), flush=True)
    else:
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
        "lookup_predictor": predictor.name,  # multifidelity when anchors were used, else predictor.kind
        "anchors": len(anchors),
        "n_fit": len(fit_archs),
        "threads": p.threads,
        "n_holdout": len(test_archs),
        "lookup_rows": len(table),
        "lookup_seconds": refit_seconds,
        # How long early stopping let the final fit train (neural predictors only).
        **({"fitted_epochs": predictor.fitted_epochs} if hasattr(predictor, "fitted_epochs") else {}),
        **{f"{kind}.{k}": v for kind, r in report.items() for k, v in r.items() if k != "n"},
        **{f"{kind}.fit_seconds": s for kind, s in seconds.items()},
        **(fusion_metrics(predictor) if len(anchors) else {}),
    }
    write_json(METRICS / "fit.json", metrics)
    scatter = plots.predicted_vs_measured(holdout, {k: report[k] for k in seconds}, PLOTS / "fit_scatter.png")
    with stage_run("fit", p, params_path) as run:
        run.log_params({f"predictor.{k}": v for k, v in cfg.model_dump().items()}
                       | {"fit.lookup_predictor": predictor.name, "fit.anchors": len(anchors)})
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        run.log_metrics({f"fit.{cfg.kind}.kendall_tau": report[cfg.kind]["kendall_tau"]}, to_parent=True)
        run.log_artifact(scatter)
        run.log_artifact(LOOKUP)


def fused(p, space, samples: pd.DataFrame, archs, anchors: pd.DataFrame, proxies, params_fn) -> MultiFidelityPredictor:
    """The multi-fidelity predictor fitted on the anchors, with the samples' cheap signals as low fidelity.

    Proxies enter as their ranks (-inf and NaN, a proxy's verdict on a broken network, rank last):
    the fusion reads only orders, and raw synflow values span hundreds of orders of magnitude.
    """
    low = {"supernet": (archs, samples.supernet_acc.to_numpy(dtype=float))}
    for name in proxies:
        values = np.nan_to_num(samples[name].to_numpy(dtype=float), nan=-np.inf)
        low[name] = (archs, pd.Series(values).rank(pct=True).to_numpy())
    predictor = from_settings(MultiFidelityPredictor.name, p.predictor, space, params_fn, p.seed)
    # Minutes, not seconds (README): say what runs, since the fusion reports no steps of its own.
    print(f"fit: multifidelity on {len(anchors)} anchors: pre-training {len(low)} experts ({', '.join(low)}), "
          f"then cross-validating their fine-tuning on the anchors", flush=True)
    return predictor.fit([space.parse(a) for a in anchors.arch], anchors.accuracy.to_numpy(dtype=float),
                         low=low, free={"params": params_fn})


def fusion_metrics(predictor: MultiFidelityPredictor) -> dict[str, float]:
    """The fusion's own evidence: its cross-validated ranking of the anchors, and each component's weight and tau."""
    r = predictor.report
    return {
        "multifidelity.cv_kendall_tau": r["cv_kendall_tau"],
        **{f"multifidelity.weight.{c}": w for c, w in zip(r["components"], r["weights"])},
        **{f"multifidelity.cv_kendall_tau.{c}": t for c, t in r["cv_tau_each"].items()},
    }


if __name__ == "__main__":
    main()

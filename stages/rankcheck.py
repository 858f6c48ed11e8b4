"""Rank check (off the default path): networks trained from scratch, the ground truth for every ranking."""

import time

from fitnas import plots, predictors, scoring, spaces, strategies

from fitnas.data.splits import load_split
from fitnas.pipeline import (
    LOOKUP,
    PREDICTOR,
    METRICS,
    PLOTS,
    RANKCHECK,
    RANKCHECK_CACHE,
    SAMPLES,
    TRAIN,
    VAL,
    final_costs,
    friendly_errors,
    start_stage,
    read_lookup,
    read_samples,
    SUPERNET,
    write_json,
)
from fitnas.rankcheck import POOL_PER_ARCH, RANKERS, pick_archs, rank_report, standalone_results, training_key, verdict
from fitnas.tracking import stage_run
from fitnas.distributed import pick_device
from fitnas.train import progress, seed_everything


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    cfg = p.rankcheck
    seed_everything(p.seed)
    device = pick_device(p.device)
    space = spaces.get(p.space)
    start = time.time()
    costs = lambda: final_costs(p, space)  # noqa: E731
    # A space too large to list: random networks, predicted by the saved predictor.
    pool, source = strategies.pool_for(space, lambda: read_lookup(LOOKUP), lambda: predictors.load_file(PREDICTOR, space, costs().params), costs,
                                       POOL_PER_ARCH * cfg.archs, p.seed + 5)
    # Seeded apart from the sample stage's draw (seed + 2) and the supernet's probes (seed + 3).
    picked = pick_archs(space, pool, read_samples(SAMPLES, space).arch, cfg.archs, p.seed + 4)

    scorer = scoring.from_files(p, space, device, SUPERNET, TRAIN, VAL)
    scores = [scorer.score(space.parse(arch)) for arch in progress(picked.arch, "rankcheck: supernet scores")]
    picked["supernet_acc"] = [acc for _, acc in scores]
    picked["supernet_loss"] = [loss for loss, _ in scores]

    # Trained at the supernet's shape: the networks whose scores are checked, only trained alone.
    key = training_key(p, scorer.shape, space, [TRAIN, VAL])
    trained, cached = standalone_results(p, space, scorer.shape, picked, device, RANKCHECK_CACHE,
                                         load_split(TRAIN), load_split(VAL), key)
    table = picked.join(trained)
    table.to_csv(RANKCHECK, index=False)

    report = rank_report(table, cfg.bootstrap, p.seed)
    seconds = time.time() - start
    summary = report | {"seconds": seconds, "seconds_per_network": float(table.train_seconds.mean()), "from_cache": cached, "threads": p.threads}
    write_json(METRICS / "rankcheck.json", summary)
    titles = RANKERS | {"predicted_acc": f"{p.predictor.kind} prediction ({source})"}
    figure = plots.rank_check(table, report, titles, PLOTS / "rankcheck.png")
    for column in RANKERS:
        print(f"rankcheck: {column:>13}  Kendall tau {report[f'{column}.kendall_tau']:+.3f} "
              f"[{report[f'{column}.kendall_tau_low']:+.3f}, {report[f'{column}.kendall_tau_high']:+.3f}]  "
              f"Spearman rho {report[f'{column}.spearman_rho']:+.3f}")
    print(verdict(report, p.predictor.kind))

    with stage_run("rankcheck", p, params_path) as run:
        run.log_params({f"rankcheck.{k}": v for k, v in cfg.model_dump().items()})
        run.log_metrics(summary)
        run.log_metrics({f"rankcheck.{column}.kendall_tau": report[f"{column}.kendall_tau"]
                         for column in ("predicted_acc", "supernet_acc")}, to_parent=True)
        for path in (figure, RANKCHECK, METRICS / "rankcheck.json"):
            run.log_artifact(path)


if __name__ == "__main__":
    main()

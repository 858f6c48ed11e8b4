"""Rank check (off the default path): networks trained from scratch, the ground truth for every ranking.

Under torchrun the trainings (network x seed) are shared out across the ranks, each trained exactly
as one process would train it; rank 0 then scores the supernet and the zero-cost proxies (seconds)
and writes the outputs.
"""

import time

from fitnas import config, distributed, plots, predictors, scoring, spaces, strategies

from fitnas.data.splits import load_split
from fitnas.pipeline import (
    ANCHORS,
    LOOKUP,
    PREDICTOR,
    METRICS,
    PLOTS,
    RANKCHECK,
    SAMPLES,
    TRAIN,
    TRUTH_TABLE,
    VAL,
    final_costs,
    friendly_errors,
    start_stage,
    read_anchors,
    read_lookup,
    read_samples,
    SUPERNET,
    write_json,
)
from fitnas.rankcheck import (
    POOL_PER_ARCH,
    RANKERS,
    end_result,
    mean_over_seeds,
    pick_archs,
    rank_report,
    training_key,
    truth_results,
    verdict,
    zero_cost_scores,
)
from fitnas.tracking import stage_run
from fitnas.train import progress, seed_everything

@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    with distributed.session(p.distributed, p.device) as world:
        rankcheck(p, params_path, world)


def rankcheck(p: config.Params, params_path: str, world: distributed.World) -> None:
    cfg = p.rankcheck
    seed_everything(p.seed)
    space = spaces.get(p.space)
    start = time.time()
    costs = lambda: final_costs(p, space)  # noqa: E731
    # A space too large to list: random networks, predicted by the saved predictor.
    pool, source = strategies.pool_for(space, lambda: read_lookup(LOOKUP), lambda: predictors.load_file(PREDICTOR, space, costs().params), costs,
                                       POOL_PER_ARCH * cfg.archs, p.seed + 5)
    # The anchors are trained for the fit: checking it on networks it was given the answer for would flatter it.
    anchors = list(read_anchors(ANCHORS, space, 0).arch) if ANCHORS.is_file() else []
    excluded = list(read_samples(SAMPLES, space).arch) + anchors
    # Seeded apart from the sample stage's draw (seed + 2) and the supernet's probes (seed + 3).
    picked = pick_archs(space, pool, excluded, cfg.archs, p.seed + 4)

    scorer = scoring.from_files(p, space, world.device, SUPERNET, TRAIN, VAL)
    train_split, val_split = load_split(TRAIN), load_split(VAL)
    # Trained at the supernet's shape: the networks whose scores are checked, only trained alone.
    key = training_key(p, scorer.shape, space, [TRAIN, VAL])
    trained, had = truth_results(p, space, scorer.shape, list(picked.arch), world.device, TRUTH_TABLE,
                                 train_split, val_split, key, world)
    # The end result: does the search's choice beat the biggest network that fits the same budget?
    strategy = strategies.for_space(space, lambda: read_lookup(LOOKUP), lambda: predictors.load_file(PREDICTOR, space, costs().params),
                                    costs, None, p.search, p.seed)
    picks = strategies.budget_picks(strategy, cfg.budgets)
    end_archs = list(dict.fromkeys([*picks.choice, *picks.largest]))
    ended, end_had = truth_results(p, space, scorer.shape, end_archs, world.device, TRUTH_TABLE, train_split, val_split,
                                   key, world, label="rankcheck end result")
    if not world.is_main:
        return

    scores = [scorer.score(space.parse(arch)) for arch in progress(picked.arch, "rankcheck: supernet scores")]
    picked["supernet_acc"] = [acc for _, acc in scores]
    picked["supernet_loss"] = [loss for loss, _ in scores]
    for name, values in zero_cost_scores(space, list(picked.arch), scorer.shape, train_split, p.sample.proxy_batch, p.seed).items():
        picked[name] = values
    table = picked.merge(mean_over_seeds(trained), on="arch", how="left", validate="one_to_one")
    table.to_csv(RANKCHECK, index=False)

    report = rank_report(table, cfg.bootstrap, p.seed)
    end = end_result(picks, mean_over_seeds(ended)) if end_archs else {}
    seconds = time.time() - start
    summary = report | end | {"seconds": seconds, "seconds_per_training": float(trained.train_seconds.mean()),
                              "trainings": len(trained) + len(ended), "from_table": had + end_had,
                              "processes": world.size, "threads": p.threads}
    write_json(METRICS / "rankcheck.json", summary)
    titles = RANKERS | {"predicted_acc": f"{p.predictor.kind} prediction ({source})"}
    figure = plots.rank_check(table, report, titles, PLOTS / "rankcheck.png")
    print(f"rankcheck: the truth agrees with itself (seed 0 vs seed 1) at Kendall tau {report['truth.self_kendall_tau']:+.3f} "
          f"[{report['truth.self_kendall_tau_low']:+.3f}, {report['truth.self_kendall_tau_high']:+.3f}]; a perfect ranking "
          f"would reach about {report['truth.ceiling_kendall_tau']:+.3f} against the mean of the seeds")
    for column in RANKERS:
        print(f"rankcheck: {column:>13}  Kendall tau {report[f'{column}.kendall_tau']:+.3f} "
              f"[{report[f'{column}.kendall_tau_low']:+.3f}, {report[f'{column}.kendall_tau_high']:+.3f}]  "
              f"Spearman rho {report[f'{column}.spearman_rho']:+.3f}  "
              f"precision@10% {report[f'{column}.precision_top10']:.2f}  regret {report[f'{column}.regret_top1']:.4f}")
    print(verdict(report, p.predictor.kind))
    for row in picks.itertuples():
        name = f"end.q{round(row.fraction * 100):02d}"
        print(f"rankcheck: FLOPs <= {row.flops_budget:.2f} M ({row.fraction:.0%} of the range): the search's choice "
              f"{end[f'{name}.choice_acc']:.4f} ({row.choice_flops_M:.2f} M), the largest network "
              f"{end[f'{name}.largest_acc']:.4f} ({row.largest_flops_M:.2f} M)")
    if end:
        print(f"rankcheck: the search's choice is at least as accurate as the largest network at "
              f"{end['end.choice_at_least_as_good']} of {end['end.budgets']} budgets")

    with stage_run("rankcheck", p, params_path) as run:
        run.log_params({f"rankcheck.{k}": v for k, v in cfg.model_dump().items()})
        run.log_metrics({k: v for k, v in summary.items() if not isinstance(v, str)})
        run.log_metrics({f"rankcheck.{column}.kendall_tau": report[f"{column}.kendall_tau"]
                         for column in ("predicted_acc", "supernet_acc")}, to_parent=True)
        for path in (figure, RANKCHECK, METRICS / "rankcheck.json"):
            run.log_artifact(path)


if __name__ == "__main__":
    main()

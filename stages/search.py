"""Stage 5: the best predicted architecture under the budget, the top-k and the Pareto front."""

from fitnas import plots, predictors, spaces, strategies
from fitnas.latency import read_table
from fitnas.pipeline import (
    CANDIDATES,
    CHOICE,
    LATENCY_TABLE,
    LOOKUP,
    PREDICTOR,
    METRICS,
    PARETO,
    PARETO_LATENCY,
    PLOTS,
    TOPK,
    final_costs,
    final_shape,
    friendly_errors,
    start_stage,
    read_lookup,
    write_json,
)
from fitnas.search import COST_COLUMNS, non_binding, non_binding_message, pareto_front, top_k, within_budget
from fitnas.tracking import stage_run


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    space = spaces.get(p.space)
    budget = p.budget
    latency = read_table(LATENCY_TABLE, space) if LATENCY_TABLE.is_file() or budget.latency_ms else None
    costs = lambda: final_costs(p, space)  # noqa: E731
    strategy = strategies.for_space(space, lambda: read_lookup(LOOKUP), lambda: predictors.load_file(PREDICTOR, space, costs().params),
                                    costs, latency, p.search, p.seed)
    table, searched = strategy.candidates(budget, p.search.pareto_points)
    label, ranges = strategy.label, strategy.ranges()  # ranges: each cost's over the whole space
    loose = non_binding(budget, ranges)
    table.to_csv(CANDIDATES, index=False)  # what the choice was made from, latency included
    best = top_k(table, budget, p.search.top_k)
    chosen = best.iloc[0]
    front = pareto_front(table)
    latency_front = pareto_front(table, "latency_ms") if "latency_ms" in table else None
    best.to_csv(TOPK, index=False)
    front.to_csv(PARETO, index=False)
    (latency_front if latency_front is not None else front.iloc[:0]).to_csv(PARETO_LATENCY, index=False)
    unconstrained = table.sort_values("predicted_acc", ascending=False).iloc[0]
    choice = {
        "arch": chosen["arch"],
        "predicted_acc": float(chosen["predicted_acc"]),
        "flops_M": float(chosen["flops_M"]),
        "params_M": float(chosen["params_M"]),
        **({"latency_ms": float(chosen["latency_ms"])} if "latency_ms" in table else {}),
        "budget": {"flops": p.budget.flops, "params": p.budget.params, "latency_ms": p.budget.latency_ms},
        # Enumerable spaces: feasible networks of the space; others: of those the searches scored whole.
        "feasible": len(within_budget(table, budget)),
        "best_unconstrained_arch": unconstrained["arch"],
        # A budget every network of the space meets changes nothing: said, and recorded.
        "non_binding": loose,
        **{f"budget_{name}_binding": name not in loose for name in budget.limits()},
        "space_range": {COST_COLUMNS[name]: list(bounds) for name, bounds in ranges.items()},
        **searched,
    }
    write_json(CHOICE, choice)
    write_json(METRICS / "search.json", {k: v for k, v in choice.items() if isinstance(v, (int, float))})  # bools too
    figure = plots.pareto(table, front, chosen, PLOTS / "pareto.png", p.budget.flops, latency_front, p.budget.latency_ms, label)
    print(f"search: {budget.describe()}: {choice['feasible']} feasible of {len(table)} {label}")
    if loose:
        print(f"search: {non_binding_message(budget, loose, ranges, final_shape(p, space)[1])}")
    print(f"search: chose {chosen['arch']}  predicted {chosen['predicted_acc']:.4f}, "
          f"{chosen['flops_M']:.2f} MFLOPs, {chosen['params_M']:.4f} M params"
          + (f", {chosen['latency_ms']:.3f} ms" if "latency_ms" in table else ""))
    with stage_run("search", p, params_path) as run:
        run.log_params({"budget.flops": p.budget.flops, "budget.params": p.budget.params,
                        "budget.latency_ms": p.budget.latency_ms, "search.top_k": p.search.top_k})
        if searched:
            run.log_params({f"search.{k}": v for k, v in p.search.model_dump().items() if k != "top_k"})
        run.log_metrics({k: v for k, v in choice.items()
                         if isinstance(v, (int, float)) and (k in ("predicted_acc", "feasible") or k.startswith("search_"))})
        run.set_tags({"chosen_arch": chosen["arch"]}, to_parent=True)
        for path in (figure, TOPK, PARETO, CHOICE, CANDIDATES):
            run.log_artifact(path)


if __name__ == "__main__":
    main()

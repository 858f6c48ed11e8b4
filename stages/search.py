"""Stage 5: the best predicted architecture under the budget, the top-k and the Pareto front."""

import pandas as pd
import torch

from fitnas import plots, spaces
from fitnas.latency import add_latency, read_table
from fitnas.pipeline import (
    CANDIDATES,
    CHOICE,
    LATENCY_TABLE,
    LOOKUP,
    METRICS,
    PARETO,
    PARETO_LATENCY,
    PLOTS,
    TOPK,
    final_shape,
    friendly_errors,
    start_stage,
    read_lookup,
    write_json,
)
from fitnas.search import COST_COLUMNS, Budget, non_binding, non_binding_message, pareto_front, table_ranges, top_k, within_budget
from fitnas.tracking import stage_run


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    space = spaces.get(p.space)
    budget = Budget(p.budget.flops, p.budget.params, p.budget.latency_ms)
    latency = read_table(LATENCY_TABLE, space) if LATENCY_TABLE.is_file() or budget.latency_ms else None
    searched = {}
    if space.ENUMERABLE:
        # Every distinct network is in the fit's lookup table: a budget is a filter.
        table = read_lookup(LOOKUP)
        if latency is not None:
            table = add_latency(table, space, latency)
        label = "all distinct networks"
        ranges = table_ranges(table)
    else:
        table, searched, ranges = search_space(p, space, budget, latency)
        label = "networks the searches scored"
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
        if not space.ENUMERABLE:
            run.log_params({f"search.{k}": v for k, v in p.search.model_dump().items() if k != "top_k"})
        run.log_metrics({k: v for k, v in choice.items()
                         if isinstance(v, (int, float)) and (k in ("predicted_acc", "feasible") or k.startswith("search_"))})
        run.set_tags({"chosen_arch": chosen["arch"]}, to_parent=True)
        for path in (figure, TOPK, PARETO, CHOICE, CANDIDATES):
            run.log_artifact(path)


def search_space(p, space, budget: Budget, latency) -> tuple[pd.DataFrame, dict, dict]:
    """A space too large to tabulate: search it against the fitted graph network.

    The search at the budget, then `search.pareto_points` more at FLOPs budgets
    across the range for the Pareto front; every network they scored whole
    makes the table the choice and the front are read from. Also returns each cost's range over the space.
    """
    from fitnas import chainsearch
    from fitnas.pathscore import PathGCN
    from fitnas.pipeline import final_costs, load_predictor

    predictor = load_predictor(space)
    scorer = PathGCN(predictor, space)
    tables = chainsearch.cost_tables(final_costs(p, space), latency)
    # One thread: the scoring is many small tensor operations, which a second thread
    # slows down whenever another process holds the other core.
    torch.set_num_threads(1)
    result = chainsearch.run(p.search.method, space, scorer, tables, budget, p.search, p.seed)
    print(f"search: {result.method} over {space.size:.3g} networks ({budget.describe()}): {result.seconds:.1f}s, "
          f"{result.evaluations:,} candidates scored by the graph network", flush=True)
    found = [result.candidates]
    for flops in chainsearch.pareto_budgets(tables, p.search.pareto_points):
        found.append(chainsearch.run(p.search.method, space, scorer, tables, Budget(flops=flops), p.search, p.seed).candidates)
    table = pd.concat(found).drop_duplicates("arch").reset_index(drop=True)
    ranges = {name: (float(cost.min()), float(cost.max())) for name, cost in tables.items()}  # the whole space's, not the table's
    details = {
        "search_method": result.method,
        "search_seconds": result.seconds,
        "search_evaluations": result.evaluations,
        "space_size": float(space.size),
    }
    return table, details, ranges


if __name__ == "__main__":
    main()

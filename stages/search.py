"""Stage 5: the best predicted architecture under the budget, the top-k and the Pareto front."""

from fitnas import config, plots
from fitnas.pipeline import CHOICE, LOOKUP, METRICS, PARETO, PLOTS, TOPK, friendly_errors, read_lookup, write_json
from fitnas.search import Budget, pareto_front, top_k, within_budget
from fitnas.tracking import preflight, stage_run


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = config.load(params_path)
    preflight()  # MLflow unreachable: fail now, before any work
    table = read_lookup(LOOKUP)
    budget = Budget(p.budget.flops, p.budget.params)
    best = top_k(table, budget, p.search.top_k)
    chosen = best.iloc[0]
    front = pareto_front(table)
    best.to_csv(TOPK, index=False)
    front.to_csv(PARETO, index=False)
    unconstrained = table.sort_values("predicted_acc", ascending=False).iloc[0]
    choice = {
        "arch": chosen["arch"],
        "predicted_acc": float(chosen["predicted_acc"]),
        "flops_M": float(chosen["flops_M"]),
        "params_M": float(chosen["params_M"]),
        "budget": {"flops": p.budget.flops, "params": p.budget.params},
        "feasible": len(within_budget(table, budget)),
        "best_unconstrained_arch": unconstrained["arch"],
    }
    write_json(CHOICE, choice)
    write_json(METRICS / "search.json", {k: v for k, v in choice.items() if isinstance(v, (int, float))})
    figure = plots.pareto(table, front, chosen, PLOTS / "pareto.png", p.budget.flops)
    print(f"search: {budget.describe()}: {choice['feasible']} feasible of {len(table)} distinct networks")
    print(f"search: chose {chosen['arch']}  predicted {chosen['predicted_acc']:.4f}, "
          f"{chosen['flops_M']:.2f} MFLOPs, {chosen['params_M']:.4f} M params")
    with stage_run("search", p, params_path) as run:
        run.log_params({"budget.flops": p.budget.flops, "budget.params": p.budget.params, "search.top_k": p.search.top_k})
        run.log_metrics({"predicted_acc": choice["predicted_acc"], "feasible": choice["feasible"]})
        run.set_tags({"chosen_arch": chosen["arch"]}, to_parent=True)
        for path in (figure, TOPK, PARETO, CHOICE):
            run.log_artifact(path)


if __name__ == "__main__":
    main()

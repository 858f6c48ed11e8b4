"""Constrained search over the lookup table: best under a budget, top-k, Pareto front.

The lookup table holds one row per distinct network with its predicted
accuracy and costs, so any budget is answered by filtering, not by training.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

COST_COLUMNS = {"flops": "flops_M", "params": "params_M"}


class BudgetError(ValueError):
    """No architecture of the table meets the budget; the message gives the smallest costs available."""


@dataclass(frozen=True)
class Budget:
    flops: float | None = None  # millions of MACs
    params: float | None = None  # millions

    def describe(self) -> str:
        parts = [f"flops <= {self.flops} M" if self.flops else "", f"params <= {self.params} M" if self.params else ""]
        return ", ".join(p for p in parts if p) or "unconstrained"


def within_budget(table: pd.DataFrame, budget: Budget) -> pd.DataFrame:
    keep = pd.Series(True, index=table.index)
    if budget.flops is not None:
        keep &= table["flops_M"] <= budget.flops
    if budget.params is not None:
        keep &= table["params_M"] <= budget.params
    feasible = table[keep]
    if feasible.empty:
        raise BudgetError(
            f"no architecture meets the budget ({budget.describe()}): the smallest available are "
            f"{table['flops_M'].min():.3f} M FLOPs and {table['params_M'].min():.4f} M params. "
            "Raise budget.flops / budget.params (or pass larger --flops / --params)."
        )
    return feasible


def top_k(table: pd.DataFrame, budget: Budget, k: int) -> pd.DataFrame:
    """The k best predicted architectures under the budget; ties go to the cheaper one."""
    feasible = within_budget(table, budget)
    ranked = feasible.sort_values(["predicted_acc", "flops_M", "arch"], ascending=[False, True, True])
    return ranked.head(k).reset_index(drop=True)


def pareto_front(table: pd.DataFrame, cost: str = "flops_M") -> pd.DataFrame:
    """Rows that no other row beats on both predicted accuracy (higher) and cost (lower)."""
    ranked = table.sort_values([cost, "predicted_acc"], ascending=[True, False])
    best_cheaper = ranked["predicted_acc"].cummax().shift(fill_value=float("-inf"))
    return ranked[ranked["predicted_acc"] > best_cheaper].reset_index(drop=True)

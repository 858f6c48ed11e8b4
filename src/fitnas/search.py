"""Constrained search over the lookup table: best under a budget, top-k, Pareto front.

The lookup table holds one row per distinct network with its predicted
accuracy and costs, so any budget is answered by filtering, not by training.
"""

from __future__ import annotations

import pandas as pd

from fitnas.config import UNITS, Budget  # noqa: F401  (Budget: the one class, the schema's)
from fitnas.errors import BudgetError

COST_COLUMNS = {"flops": "flops_M", "params": "params_M", "latency_ms": "latency_ms"}


def smallest_message(budget: Budget, smallest: dict[str, float]) -> str:
    """The BudgetError text: what was asked, the smallest value each cost reaches, how to fix it."""
    reach = ", ".join(f"{smallest[name]:.{3 if name == 'flops' else 4}f} {UNITS[name]}" for name in smallest)
    keys = " / ".join(f"budget.{name}" for name in budget.limits()) or "the budget"
    options = " / ".join(f"--max-{name.replace('_', '-')}" for name in budget.limits())  # fitnas lookup's options
    return (f"no architecture meets the budget ({budget.describe()}): the smallest available are {reach}. "
            f"Raise {keys} (or pass larger {options}).")


# Where a budget of hundreds of MFLOPs means something: the paper's mobile setting.
PAPER_PROFILE = "profiles/mobilenet-imagenet.yaml"


def table_ranges(table: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """(smallest, largest) of each cost a budget can constrain, over the rows of a table of the whole space."""
    return {name: (float(table[column].min()), float(table[column].max()))
            for name, column in COST_COLUMNS.items() if column in table}


def non_binding(budget: Budget, ranges: dict[str, tuple[float, float]]) -> list[str]:
    """The budgets set that every network of the space meets: they change nothing."""
    return [name for name, limit in budget.limits().items() if name in ranges and ranges[name][1] <= limit]


def non_binding_message(budget: Budget, names: list[str], ranges: dict[str, tuple[float, float]], input_size: int) -> str:
    """One line: which budget binds nothing, the space's range at this input size, where such a budget binds."""
    limits = budget.limits()
    parts = [f"budget.{name} = {limits[name]:g} binds nothing: every network of this space is "
             f"{ranges[name][0]:.4g}-{ranges[name][1]:.4g} {UNITS[name]} at {input_size}x{input_size}" for name in names]
    return ("; ".join(parts) + f" (the paper's 400-MFLOPs mobile setting is {PAPER_PROFILE}, 224x224); "
            "the choice is the best of the space as if unconstrained")


def within_budget(table: pd.DataFrame, budget: Budget) -> pd.DataFrame:
    keep = pd.Series(True, index=table.index)
    for name, limit in budget.limits().items():
        column = COST_COLUMNS[name]
        if column not in table:
            raise BudgetError(f"budget.{name} is set but the table has no {column} column: "
                              "build the latency table first (`dvc repro latency` or `fitnas latency-table`)")
        keep &= table[column] <= limit
    feasible = table[keep]
    if feasible.empty:
        smallest = {"flops": table["flops_M"].min(), "params": table["params_M"].min()}
        if "latency_ms" in table:
            smallest["latency_ms"] = table["latency_ms"].min()
        raise BudgetError(smallest_message(budget, smallest))
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

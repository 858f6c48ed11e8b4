"""How a space is searched, chosen by what the space offers (as NNI and Once-for-All keep space and strategy apart).

* A space that lists every distinct network (`space.enumerate()`) is tabulated: the fit predicts
  every network once (`lookup_table`), and a budget is a filter over that table (`TableSearch`).
* Any other space is searched against the fitted predictor (`SpaceSearch`): progressive segments
  or evolution (`fitnas.chainsearch`), any predictor driving it through a `Scorer`.

The fit stage, the search stage, `fitnas lookup` and the rank check all come here, so each
answers a budget the same way, and none of them asks which space it has.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from fitnas import chainsearch
from fitnas.costs import AdditiveCost, CostModel
from fitnas.errors import ConfigError
from fitnas.latency import add_latency
from fitnas.predictors import Predictor, scorer_for
from fitnas.search import Budget, table_ranges, top_k, within_budget
from fitnas.spaces.base import SearchSpace
from fitnas.util import progress

QUERY_CHUNK = 2048  # networks per predictor call while tabulating (a progress-bar step)


def tabulated(space: SearchSpace) -> bool:
    """Whether the fit can predict every network of the space (it lists them)."""
    return space.enumerate() is not None


def lookup_table(space: SearchSpace, predictor: Predictor, costs: CostModel, samples: pd.DataFrame) -> pd.DataFrame:
    """The fit's table: every distinct network of a tabulated space, else the networks the fit has scores for.

    Columns: arch, predicted_acc, flops_M, params_M, cells (how many of the space's architectures
    are this network), supernet_acc (measured with inherited weights, where it was).
    """
    listed = space.enumerate()
    archs = list(listed) if listed is not None else [space.parse(text) for text in samples.arch]
    names = [space.to_str(a) for a in archs]
    measured = dict(zip(samples.arch, samples.supernet_acc))
    chunks = progress(range(0, len(archs), QUERY_CHUNK), "fit: predicting every network")
    predicted = np.concatenate([predictor.query(archs[i : i + QUERY_CHUNK]) for i in chunks])
    return pd.DataFrame(
        {
            "arch": names,
            "predicted_acc": predicted,
            "flops_M": [round(costs.flops(a), 6) for a in archs],
            "params_M": [round(costs.params(a), 6) for a in archs],
            "cells": [space.multiplicity(a) for a in archs],
            "supernet_acc": [measured.get(n, np.nan) for n in names],
        }
    )


def random_pool(space: SearchSpace, predictor: Predictor, costs: CostModel, n: int, seed: int) -> pd.DataFrame:
    """n distinct random networks in the lookup table's columns, predicted by the fitted predictor."""
    archs = space.sample(n, random.Random(seed))
    return pd.DataFrame(
        {
            "arch": [space.to_str(arch) for arch in archs],
            "predicted_acc": predictor.query(archs),
            "flops_M": [round(costs.flops(arch), 6) for arch in archs],
            "params_M": [round(costs.params(arch), 6) for arch in archs],
        }
    )


class TableSearch:
    """Every distinct network is in the fit's lookup table: a budget is a filter."""

    label = "all distinct networks"

    def __init__(self, space: SearchSpace, lookup: pd.DataFrame, latency: AdditiveCost | None):
        self.table = add_latency(lookup, space, latency) if latency is not None else lookup

    def candidates(self, budget: Budget, pareto_points: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
        """(the table a choice is made from, details for search.json)."""
        return self.table, {}

    def best(self, budget: Budget, k: int) -> pd.DataFrame:
        return top_k(self.table, budget, k)

    def ranges(self) -> dict[str, tuple[float, float]]:
        """(smallest, largest) of each cost over the space: the table holds every network."""
        return table_ranges(self.table)


class SpaceSearch:
    """A space too large to tabulate, searched against the fitted predictor."""

    label = "networks the searches scored"

    def __init__(self, space: SearchSpace, predictor: Predictor, costs: CostModel, latency: AdditiveCost | None,
                 settings: Any, seed: int, method: str | None = None):
        self.space, self.settings, self.seed = space, settings, seed
        self.method = method or settings.method
        self.scorer = scorer_for(predictor, space)
        self.scorer_name = "graph network" if predictor.name == "gcn" else f"{predictor.name} predictor"
        self.tables = chainsearch.cost_tables(costs, latency)

    def _run(self, budget: Budget) -> chainsearch.SearchResult:
        # One thread: the scoring is many small tensor operations, which a second thread
        # slows down whenever another process holds the other core.
        torch.set_num_threads(1)
        return chainsearch.run(self.method, self.space, self.scorer, self.tables, budget, self.settings, self.seed)

    def candidates(self, budget: Budget, pareto_points: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The search at the budget, then `pareto_points` more at FLOPs budgets across the range for the
        Pareto front; every network they scored whole makes the table the choice is read from."""
        result = self._run(budget)
        print(f"search: {result.method} over {self.space.size:.3g} networks ({budget.describe()}): {result.seconds:.1f}s, "
              f"{result.evaluations:,} candidates scored by the {self.scorer_name}", flush=True)
        found = [result.candidates]
        for flops in chainsearch.pareto_budgets(self.tables, pareto_points):
            found.append(self._run(Budget(flops=flops)).candidates)
        table = pd.concat(found).drop_duplicates("arch").reset_index(drop=True)
        details = {
            "search_method": result.method,
            "search_seconds": result.seconds,
            "search_evaluations": result.evaluations,
            "space_size": float(self.space.size),
        }
        return table, details

    def best(self, budget: Budget, k: int) -> pd.DataFrame:
        return top_k(self._run(budget).candidates, budget, k)

    def ranges(self) -> dict[str, tuple[float, float]]:
        """(smallest, largest) of each cost over the whole space (not only the networks scored)."""
        return {name: (float(cost.min()), float(cost.max())) for name, cost in self.tables.items()}


def for_space(space: SearchSpace, lookup: Callable[[], pd.DataFrame], predictor: Callable[[], Predictor],
              costs: Callable[[], CostModel], latency: AdditiveCost | None, settings: Any, seed: int,
              method: str | None = None) -> TableSearch | SpaceSearch:
    """The strategy for the space. `lookup`, `predictor` and `costs` load the fit's artifacts when called
    (the caller knows where they are): only what the strategy needs is read."""
    if tabulated(space):
        if method is not None:
            raise ConfigError(f"space {space.NAME} is tabulated (every network is in the lookup table): "
                              "a search method does not apply; leave it out")
        return TableSearch(space, lookup(), latency)
    return SpaceSearch(space, predictor(), costs(), latency, settings, seed, method)


def pool_for(space: SearchSpace, lookup: Callable[[], pd.DataFrame], predictor: Callable[[], Predictor],
             costs: Callable[[], CostModel], n: int, seed: int) -> tuple[pd.DataFrame, str]:
    """Networks with predictions to pick checks from: the lookup table, or random networks the predictor scores."""
    if tabulated(space):
        return lookup(), "the fit's lookup table"
    return random_pool(space, predictor(), costs(), n, seed), "the fitted predictor"


def budget_picks(strategy: TableSearch | SpaceSearch, fractions: Sequence[float]) -> pd.DataFrame:
    """At each fraction of the space's FLOPs range: the search's choice and the largest-FLOPs network under that budget.

    `strategy` is the search stage's (`for_space`). The biggest network that fits is
    the free alternative a user has; the end result asks whether the search beats it. In a
    space too large to list, both come from the networks the search scored.
    """
    low, high = strategy.ranges()["flops"]
    threads = torch.get_num_threads()  # a searched space's search sets one thread; the trainings must not inherit it
    rows = []
    try:
        for fraction in fractions:
            budget = Budget(flops=low + fraction * (high - low))
            table, _ = strategy.candidates(budget)
            choice = top_k(table, budget, 1).iloc[0]
            largest = within_budget(table, budget).sort_values(["flops_M", "params_M", "arch"],
                                                              ascending=[False, False, True]).iloc[0]
            rows.append({"fraction": fraction, "flops_budget": budget.flops,
                         "choice": choice["arch"], "choice_flops_M": float(choice["flops_M"]),
                         "largest": largest["arch"], "largest_flops_M": float(largest["flops_M"])})
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows, columns=["fraction", "flops_budget", "choice", "choice_flops_M", "largest", "largest_flops_M"])

"""Searching a chain space too large to enumerate, against the fitted graph network.

Two searches, each under any combination of FLOPs, params and latency budgets:

* `progressive`: the paper's search. The chain is cut into segments of
  `segment` layers. Each segment's whole sub-space (7^7 = 823,543 candidates
  by default) is scored by the graph network with the earlier segments fixed to
  their best partial architecture and the later ones to random completions,
  and the best `super_cells` partial architectures become the next segment's
  super-cells. At the end every combination of super-cells (6^3 = 216) is
  scored whole and the best is taken: the super-cells expanded into a network.
* `evolution`: Once-for-All's evolutionary search over the whole space, with
  constraint-aware mutation and crossover (children that break the budget are
  redrawn, then repaired towards cheaper blocks).

Costs are additive per layer (`fitnas.costs.AdditiveCost`), so budgets are
checked for a whole segment of candidates in one numpy call. Under a budget the
progressive search gives each segment a share of what the budget leaves above
the cheapest network, in proportion to how much the segment can spend, and
keeps as super-cells the segment's best partial architecture within its share
and the best at 0.6, 0.8, 1.2, 1.4 and 1.7 times it: the best ones together
always meet the budget, and the final combination can move budget between
segments (on the benchmark this beat keeping the 6 best within the share;
bench/README.md).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fitnas.costs import AdditiveCost
from fitnas.search import COST_COLUMNS, Budget, BudgetError, smallest_message
from fitnas.train import progress


@dataclass
class SearchResult:
    """What a search found: every architecture it scored whole, best first, and how long it took."""

    candidates: pd.DataFrame  # arch, predicted_acc, score, flops_M, params_M[, latency_ms]
    seconds: float
    evaluations: int  # architectures the graph network scored (segment candidates included)
    method: str
    details: dict = field(default_factory=dict)


def cost_tables(cost_model, latency: AdditiveCost | None = None) -> dict[str, AdditiveCost]:
    """The additive costs a chain space's search can constrain, by budget name."""
    tables = dict(cost_model.tables)
    if latency is not None:
        tables["latency_ms"] = latency
    return tables


def _limits(tables: dict[str, AdditiveCost], budget: Budget) -> dict[str, float]:
    """The constrained costs; a BudgetError naming the smallest reachable values when one cannot be met."""
    limits = budget.limits()
    for name in limits:
        if name not in tables:
            raise BudgetError(f"budget.{name} is set but there is no {name} table: build the latency table first "
                              "(`dvc repro latency` or `fitnas latency-table`)")
    # Every dimension's cheapest architecture at once: the choice cheapest in all constrained costs.
    if any(tables[name].min() > limit + 1e-9 for name, limit in limits.items()):
        raise BudgetError(smallest_message(budget, {name: tables[name].min() for name in tables}))
    return limits


def _frame(space, archs: np.ndarray, scores: np.ndarray, scorer, tables: dict[str, AdditiveCost]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "arch": [space.to_str(tuple(a)) for a in archs],
            "predicted_acc": scorer.to_accuracy(scores),
            "score": scores,
        }
    )
    for name, table in tables.items():
        frame[COST_COLUMNS[name]] = np.round(table.batch(archs), 6)
    return frame.sort_values(["score", "flops_M"], ascending=[False, True]).reset_index(drop=True)


def _within(tables: dict[str, AdditiveCost], limits: dict[str, float], archs: np.ndarray) -> np.ndarray:
    keep = np.ones(len(archs), dtype=bool)
    for name, limit in limits.items():
        keep &= tables[name].batch(archs) <= limit + 1e-9
    return keep


# ----------------------------------------------------------------------------
# Progressive segment search


def segments_of(num_layers: int, segment: int) -> list[tuple[int, int]]:
    return [(start, min(start + segment, num_layers)) for start in range(0, num_layers, segment)]


def progressive(
    space,
    scorer,
    tables: dict[str, AdditiveCost],
    budget: Budget = Budget(),
    segment: int = 7,
    super_cells: int = 6,
    contexts: int = 2,
    seed: int = 0,
) -> SearchResult:
    """The paper's progressive segment search (see the module docstring)."""
    start_time, start_evaluations = time.time(), scorer.evaluations
    limits = _limits(tables, budget)
    rng = np.random.default_rng(seed)
    parts = segments_of(space.num_slots, segment)
    # Per constrained cost: what each layer can spend above its cheapest choice.
    extra = {name: tables[name].table - tables[name].lowest()[:, None] for name in limits}
    spare = {name: limit - tables[name].min() for name, limit in limits.items()}
    reach = {name: [float(np.nansum(np.nanmax(extra[name][a:b], axis=1))) for a, b in parts] for name in limits}
    spent = {name: 0.0 for name in limits}

    chosen: list[np.ndarray] = []  # per segment: [super-cells, segment layers] op indices
    bar = progress(parts, f"progressive search ({budget.describe()})")
    for s, (a, b) in enumerate(bar):
        choices = [np.array(space.choices[layer]) for layer in range(a, b)]
        scores = np.zeros([len(c) for c in choices])
        for _ in range(contexts):
            context = np.array(space.random_cell(_Random(rng)))
            for t, (c0, c1) in enumerate(parts[:s]):
                context[c0:c1] = chosen[t][0]  # earlier segments: their best partial architecture
            scores += scorer.score_segment(context, a, b)
        scores /= contexts
        # The segment's share of what the budget leaves, in proportion to what it can spend;
        # super-cells are picked on a ladder of fractions of it (LADDER).
        share = np.zeros(scores.shape)  # each candidate's cost as a fraction of its share of the budget (worst cost)
        for name in limits:
            later = sum(reach[name][s:])
            allowance = (spare[name] - spent[name]) * (reach[name][s] / later if later > 0 else 1.0)
            share = np.maximum(share, _segment_sum(extra[name], a, choices) / max(allowance, 1e-12))
        if not (share <= 1 + 1e-9).any():
            raise BudgetError(f"no architecture of segment {s} (layers {a}-{b - 1}) fits its share of the budget "
                              f"({budget.describe()}); raise the budget")
        if limits:
            best = _ladder(scores, share, super_cells)
        else:
            best = _top(scores, np.ones(scores.shape, dtype=bool), super_cells)
        digits = np.stack(np.unravel_index(best, scores.shape), axis=1)
        picked = np.stack([choices[j][digits[:, j]] for j in range(len(choices))], axis=1)
        chosen.append(picked)  # picked[0]: the best within the share
        for name in limits:
            spent[name] += float(_segment_sum(extra[name], a, [picked[:1, j] for j in range(len(choices))], zip_=True)[0])

    # Every combination of super-cells, scored whole: the best one is the answer.
    combos = np.array([np.concatenate(parts_) for parts_ in itertools.product(*chosen)])
    combos = combos[_within(tables, limits, combos)]
    scores = scorer.score(combos)
    return SearchResult(
        candidates=_frame(space, combos, scores, scorer, tables),
        seconds=time.time() - start_time,
        evaluations=scorer.evaluations - start_evaluations,
        method="progressive",
        details={"segments": len(parts), "super_cells": super_cells, "combinations": len(combos)},
    )


# Under a budget, a segment's super-cells are its best partial architectures at these
# fractions of its share of the budget: the first (the best within the share) keeps
# every later segment's share reachable, the others let the final combination move
# budget between segments.
LADDER = (1.0, 0.6, 0.8, 1.2, 1.4, 1.7)


def _ladder(scores: np.ndarray, share: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the best candidate at each rung of LADDER (then the next best within the share)."""
    picked: list[int] = []
    rungs = list(LADDER[:k]) + [1.0] * max(0, k - len(LADDER))
    for rung in rungs:
        allowed = (share <= rung + 1e-9) & ~_mask(np.array(picked, dtype=int), scores.shape)
        picked += list(_top(scores, allowed, 1))
    return np.array(picked, dtype=int)


def _top(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k best allowed scores, best first."""
    flat = np.where(allowed.ravel(), scores.ravel(), -np.inf)
    k = min(k, int(allowed.sum()))
    if k <= 0:
        return np.zeros(0, dtype=int)
    best = np.argpartition(-flat, k - 1)[:k]
    return best[np.argsort(-flat[best], kind="stable")]


def _mask(indices: np.ndarray, shape: tuple) -> np.ndarray:
    mask = np.zeros(int(np.prod(shape)), dtype=bool)
    mask[indices] = True
    return mask.reshape(shape)


def _segment_sum(extra: np.ndarray, start: int, choices: list[np.ndarray], zip_: bool = False) -> np.ndarray:
    """The cost of a segment's candidates: over the product of `choices` (one axis each), or zipped rows."""
    if zip_:
        return sum(extra[start + j, c] for j, c in enumerate(choices))
    total = np.zeros([len(c) for c in choices])
    for j, c in enumerate(choices):
        shape = [1] * len(choices)
        shape[j] = len(c)
        total = total + extra[start + j, c].reshape(shape)
    return total


class _Random:
    """A `random.Random`-like view of a numpy generator, for `space.random_cell`."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def choice(self, items):
        return items[int(self.rng.integers(len(items)))]


# ----------------------------------------------------------------------------
# Evolutionary search


class _Sampler:
    """Vectorised random architectures, mutation, crossover and repair under the budget."""

    def __init__(self, space, tables: dict[str, AdditiveCost], limits: dict[str, float], rng: np.random.Generator):
        self.rng = rng
        self.tables, self.limits = tables, limits
        self.counts = np.array([len(c) for c in space.choices])
        width = self.counts.max()
        self.choices = np.array([list(c) + [c[0]] * (width - len(c)) for c in space.choices])
        # Repair moves a layer to a choice that is cheaper in the budget's costs, each relative to its spare room.
        weight = np.zeros(self.choices.shape)
        for name, limit in limits.items():
            table = tables[name].table
            room = max(limit - tables[name].min(), 1e-9)
            weight += np.nan_to_num((table - tables[name].lowest()[:, None]) / room, nan=np.inf)
        self.weight = weight

    def random(self, n: int) -> np.ndarray:
        index = (self.rng.random((n, len(self.counts))) * self.counts).astype(int)
        return self.choices[np.arange(len(self.counts)), index]

    def feasible(self, archs: np.ndarray) -> np.ndarray:
        return _within(self.tables, self.limits, archs)

    def repair(self, archs: np.ndarray) -> np.ndarray:
        """Infeasible rows get random layers moved to cheaper choices until they fit."""
        archs = archs.copy()
        layers = np.arange(archs.shape[1])
        for _ in range(10 * archs.shape[1]):
            bad = np.flatnonzero(~self.feasible(archs))
            if len(bad) == 0:
                break
            current = self.weight[layers, archs[bad]]  # [rows, layers]
            cheaper = self.weight[None, :, :] < current[:, :, None] - 1e-12  # [rows, layers, ops]
            movable = cheaper.any(axis=2)
            stuck = ~movable.any(axis=1)
            if stuck.all():
                break
            rows, cheaper, movable = bad[~stuck], cheaper[~stuck], movable[~stuck]
            # A random movable layer per row, then a random cheaper op for it.
            layer = np.argmax(np.where(movable, self.rng.random(movable.shape), -1.0), axis=1)
            options = cheaper[np.arange(len(rows)), layer]
            op = np.argmax(np.where(options, self.rng.random(options.shape), -1.0), axis=1)
            archs[rows, layer] = op
        return archs

    def constrained(self, make, n: int, tries: int = 10) -> np.ndarray:
        """n rows from `make(n)`, redrawing rows that break the budget, then repairing what still does."""
        out = make(n)
        for _ in range(tries):
            bad = np.flatnonzero(~self.feasible(out))
            if len(bad) == 0:
                return out
            out[bad] = make(len(bad))
        return self.repair(out)


def evolution(
    space,
    scorer,
    tables: dict[str, AdditiveCost],
    budget: Budget = Budget(),
    population: int = 100,
    generations: int = 100,
    parents: float = 0.25,
    mutation_prob: float = 0.1,
    mutation_share: float = 0.5,
    seed: int = 0,
) -> SearchResult:
    """Once-for-All's evolutionary search over the whole space (see the module docstring)."""
    start_time, start_evaluations = time.time(), scorer.evaluations
    limits = _limits(tables, budget)
    rng = np.random.default_rng(seed)
    sampler = _Sampler(space, tables, limits, rng)
    n_parents = max(2, int(round(parents * population)))
    n_mutants = int(round(mutation_share * (population - n_parents)))

    pop = sampler.constrained(sampler.random, population)
    scores = scorer.score(pop)
    seen: dict[bytes, float] = {}

    def remember(archs: np.ndarray, values: np.ndarray) -> None:
        for arch, value in zip(archs, values):
            seen[arch.astype(np.int8).tobytes()] = float(value)

    remember(pop, scores)
    for _ in progress(range(generations), f"evolution ({budget.describe()})"):
        order = np.argsort(-scores, kind="stable")[:n_parents]
        elite, elite_scores = pop[order], scores[order]

        def mutants(n: int) -> np.ndarray:
            base = elite[rng.integers(n_parents, size=n)]
            change = rng.random(base.shape) < mutation_prob
            return np.where(change, sampler.random(n), base)

        def crossed(n: int) -> np.ndarray:
            a, b = elite[rng.integers(n_parents, size=n)], elite[rng.integers(n_parents, size=n)]
            return np.where(rng.random(a.shape) < 0.5, a, b)

        children = np.concatenate(
            [sampler.constrained(mutants, n_mutants), sampler.constrained(crossed, population - n_parents - n_mutants)]
        )
        child_scores = scorer.score(children)
        remember(children, child_scores)
        pop = np.concatenate([elite, children])
        scores = np.concatenate([elite_scores, child_scores])

    archs = np.array([np.frombuffer(key, dtype=np.int8).astype(int) for key in seen])
    values = np.array(list(seen.values()))
    return SearchResult(
        candidates=_frame(space, archs, values, scorer, tables),
        seconds=time.time() - start_time,
        evaluations=scorer.evaluations - start_evaluations,
        method="evolution",
        details={"population": population, "generations": generations, "distinct_archs": len(seen)},
    )


def run(method: str, space, scorer, tables: dict[str, AdditiveCost], budget: Budget, settings, seed: int) -> SearchResult:
    """The search params.yaml's `search` section asks for (`fitnas.config.Search`)."""
    if method == "progressive":
        return progressive(space, scorer, tables, budget, settings.segment, settings.super_cells, settings.contexts, seed)
    if method == "evolution":
        e = settings.evolution
        return evolution(space, scorer, tables, budget, e.population, e.generations, e.parents,
                         e.mutation_prob, e.mutation_share, seed)
    raise ValueError(f"unknown search method {method!r}; use progressive or evolution")


def pareto_budgets(tables: dict[str, AdditiveCost], points: int) -> list[float]:
    """FLOPs budgets spread over the space's range (its cheapest and dearest networks excluded)."""
    low, high = tables["flops"].min(), tables["flops"].max()
    return [float(v) for v in np.linspace(low, high, points + 2)[1:-1]]

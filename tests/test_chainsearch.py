import itertools

import numpy as np
import pytest

from fitnas import chainsearch
from fitnas.costs import AdditiveCost
from fitnas.search import Budget, BudgetError
from fitnas.spaces.mobilenet import ChainSpace, layout

# Small enough to enumerate (5 ops, 6 layers: 10,000 networks), so searches can be checked against the optimum.
SMALL = layout(stem=8, first=8, widths=(8, 16, 16), depths=(2, 2, 2), strides=(1, 2, 2), head=32,
                     kernels=(3, 5), expansions=(3, 6), in_channels=1, num_classes=10)


class AdditiveScorer:
    """A stand-in for the graph network whose best architecture is known: a sum of per-(layer, op) values."""

    def __init__(self, space, seed=0):
        rng = np.random.default_rng(seed)
        self.space = space
        self.values = rng.normal(size=(space.num_layers, len(space.OPS)))
        self.evaluations = 0

    def score(self, archs):
        archs = np.asarray(archs)
        self.evaluations += len(archs)
        return self.values[np.arange(archs.shape[1]), archs].sum(1)

    def score_segment(self, context, start, stop):
        total = self.score(np.array([context]))[0] - sum(self.values[i, context[i]] for i in range(start, stop))
        grids = np.meshgrid(*[self.values[i, list(self.space.choices[i])] for i in range(start, stop)], indexing="ij")
        self.evaluations += grids[0].size
        return total + sum(grids)

    def to_accuracy(self, scores):
        return np.asarray(scores)


@pytest.fixture(scope="module")
def setup():
    space = ChainSpace(SMALL)
    tables = chainsearch.cost_tables(space.cost_model(SMALL, 28))
    # A made-up latency table: each block costs its FLOPs / 2 ms (skip free).
    tables["latency_ms"] = AdditiveCost(0.5, tables["flops"].table / 2)
    return space, tables


def brute_force(space, scorer, tables, budget):
    archs = np.array(list(itertools.product(*space.choices)))
    keep = np.ones(len(archs), dtype=bool)
    for name, limit in budget.limits().items():
        keep &= tables[name].batch(archs) <= limit
    scores = scorer.score(archs[keep])
    return archs[keep][np.argmax(scores)], scores.max()


def test_unconstrained_progressive_search_finds_the_optimum_of_an_additive_score(setup):
    space, tables = setup
    scorer = AdditiveScorer(space)
    result = chainsearch.progressive(space, scorer, tables, segment=4, super_cells=3, contexts=1)
    best = space.parse(result.candidates.arch.iloc[0])
    optimum = tuple(int(c[np.argmax(scorer.values[i, list(c)])]) for i, c in enumerate(space.choices))
    assert best == optimum
    assert result.details["combinations"] == 3 * 3
    assert result.candidates.score.is_monotonic_decreasing


@pytest.mark.parametrize("method", ["progressive", "evolution"])
@pytest.mark.parametrize("share", [0.3, 0.6])
def test_searches_respect_every_combination_of_budgets(setup, method, share):
    space, tables = setup
    scorer = AdditiveScorer(space, seed=1)
    low, high = tables["flops"].min(), tables["flops"].max()
    plow, phigh = tables["params"].min(), tables["params"].max()
    llow, lhigh = tables["latency_ms"].min(), tables["latency_ms"].max()
    for budget in [
        Budget(flops=low + share * (high - low)),
        Budget(params=plow + share * (phigh - plow)),
        Budget(flops=low + share * (high - low), latency_ms=llow + 0.8 * share * (lhigh - llow)),
        Budget(flops=high, params=plow + share * (phigh - plow), latency_ms=lhigh),
    ]:
        if method == "progressive":
            result = chainsearch.progressive(space, scorer, tables, budget, segment=3, super_cells=4, contexts=1)
        else:
            result = chainsearch.evolution(space, scorer, tables, budget, population=40, generations=20, seed=3)
        found = result.candidates
        assert len(found) > 0
        for name, limit in budget.limits().items():
            assert (found[{"flops": "flops_M", "params": "params_M", "latency_ms": "latency_ms"}[name]] <= limit + 1e-6).all()
        _, optimum = brute_force(space, scorer, tables, budget)
        best = found.score.iloc[0]
        assert best <= optimum + 1e-9
        # Both searches get close to the optimum of this easy score (its spread is about 10).
        assert best >= optimum - 1.5, (method, budget, best, optimum)


def test_costs_of_candidates_are_the_tables(setup):
    space, tables = setup
    result = chainsearch.evolution(space, AdditiveScorer(space), tables, population=10, generations=2)
    row = result.candidates.iloc[0]
    arch = space.parse(row.arch)
    assert row.flops_M == pytest.approx(tables["flops"](arch), abs=1e-5)
    assert row.latency_ms == pytest.approx(tables["latency_ms"](arch), abs=1e-5)
    assert result.evaluations == 10 + 2 * (10 - 2)  # the first population, then each generation's children


@pytest.mark.parametrize("budget, named", [(Budget(flops=0.01), "M FLOPs"), (Budget(latency_ms=0.1), "ms")])
def test_impossible_budget_names_the_smallest_values(setup, budget, named):
    space, tables = setup
    for search in (chainsearch.progressive, chainsearch.evolution):
        with pytest.raises(BudgetError) as err:
            search(space, AdditiveScorer(space), tables, budget)
        message = str(err.value)
        assert "smallest available" in message and named in message
        assert f"{tables['flops'].min():.3f} M FLOPs" in message


def test_latency_budget_without_a_latency_table_says_how_to_build_it(setup):
    space, tables = setup
    without = {k: v for k, v in tables.items() if k != "latency_ms"}
    with pytest.raises(BudgetError, match="fitnas latency-table"):
        chainsearch.progressive(space, AdditiveScorer(space), without, Budget(latency_ms=5))


def test_pareto_budgets_span_the_range(setup):
    _, tables = setup
    budgets = chainsearch.pareto_budgets(tables, 4)
    assert len(budgets) == 4 and tables["flops"].min() < budgets[0] < budgets[-1] < tables["flops"].max()

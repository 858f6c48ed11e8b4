import pandas as pd
import pytest

from fitnas.search import Budget, BudgetError, pareto_front, top_k


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "arch": ["a", "b", "c", "d", "e"],
            "predicted_acc": [0.90, 0.80, 0.85, 0.70, 0.95],
            "flops_M": [50.0, 10.0, 30.0, 5.0, 80.0],
            "params_M": [0.5, 0.1, 0.3, 0.05, 0.9],
        }
    )


def test_unconstrained_picks_the_best(table):
    assert top_k(table, Budget(), 1).arch.tolist() == ["e"]
    assert top_k(table, Budget(), 3).arch.tolist() == ["e", "a", "c"]


def test_budgets_are_respected(table):
    best = top_k(table, Budget(flops=40), 5)
    assert best.arch.tolist() == ["c", "b", "d"]
    assert (best.flops_M <= 40).all()
    best = top_k(table, Budget(flops=60, params=0.2), 5)
    assert best.arch.tolist() == ["b", "d"]


def test_impossible_budget_names_the_smallest_costs(table):
    with pytest.raises(BudgetError) as err:
        top_k(table, Budget(flops=1.0), 3)
    message = str(err.value)
    assert "5.000 M FLOPs" in message and "0.0500 M params" in message
    assert "budget.flops" in message


def test_pareto_front(table):
    front = pareto_front(table)
    assert front.arch.tolist() == ["d", "b", "c", "a", "e"]
    dominated = pd.concat([table, pd.DataFrame([{"arch": "z", "predicted_acc": 0.6, "flops_M": 60.0, "params_M": 1.0}])])
    assert "z" not in pareto_front(dominated).arch.tolist()


def test_latency_budget_combines_with_the_others(table):
    table = table.assign(latency_ms=[3.0, 1.0, 2.0, 0.5, 4.0])
    assert top_k(table, Budget(latency_ms=2.5), 5).arch.tolist() == ["c", "b", "d"]
    assert top_k(table, Budget(flops=20, latency_ms=2.5), 5).arch.tolist() == ["b", "d"]
    assert top_k(table, Budget(params=0.2, latency_ms=0.7), 5).arch.tolist() == ["d"]
    with pytest.raises(BudgetError) as err:
        top_k(table, Budget(latency_ms=0.1), 3)
    assert "0.5000 ms" in str(err.value) and "budget.latency_ms" in str(err.value)
    assert "latency_ms <= 0.1 ms" in str(err.value)


def test_latency_budget_without_latency_column_says_how_to_build_it(table):
    with pytest.raises(BudgetError, match="latency table"):
        top_k(table, Budget(latency_ms=1.0), 3)

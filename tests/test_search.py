from pathlib import Path

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


@pytest.fixture
def search_folder(tmp_path, monkeypatch):
    """What the search stage reads: params.yaml, a lookup table of 40 networks (1-40 MFLOPs), the validation split."""
    import shutil

    import numpy as np
    import pandas as pd

    from fitnas.data import splits
    from fitnas.spaces import nb201

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    cells = nb201.all_cells()[:40]
    (tmp_path / "results").mkdir()
    pd.DataFrame({"arch": [nb201.to_str(c) for c in cells], "predicted_acc": [0.5 + 0.01 * k for k in range(40)],
                  "flops_M": [1.0 + k for k in range(40)], "params_M": [0.1 + 0.01 * k for k in range(40)]}
                 ).to_csv(tmp_path / "results/lookup.csv", index=False)
    splits.save_split(tmp_path / "data/prepared/val.pt", np.zeros((4, 28, 28), np.uint8), np.arange(4), [str(i) for i in range(10)])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    return tmp_path


def set_budget(folder: Path, **budget) -> None:
    import yaml

    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["budget"].update(budget)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def test_a_budget_that_binds_nothing_says_so_in_one_line_and_is_recorded(search_folder, capsys):
    """`dvc exp run -S budget.flops=400` on the default space: every network is under 40 MFLOPs (issue 18)."""
    import json

    from fitnas.stages import search

    set_budget(search_folder, flops=400, params=0.2)
    search.main("params.yaml")
    lines = [line for line in capsys.readouterr().out.splitlines() if "binds nothing" in line]
    assert len(lines) == 1
    assert "budget.flops = 400 binds nothing: every network of this space is 1-40 M FLOPs at 28x28" in lines[0]
    assert "profiles/mobilenet-imagenet.yaml" in lines[0] and "budget.params" not in lines[0]  # params 0.2 binds
    choice = json.loads((search_folder / "results/choice.json").read_text())
    assert choice["non_binding"] == ["flops"] and choice["space_range"]["flops_M"] == [1.0, 40.0]
    metrics = json.loads((search_folder / "metrics/search.json").read_text())
    assert metrics["budget_flops_binding"] is False and metrics["budget_params_binding"] is True


def test_a_budget_that_binds_says_nothing_extra(search_folder, capsys):
    import json

    from fitnas.stages import search

    set_budget(search_folder, flops=20)
    search.main("params.yaml")
    assert "binds nothing" not in capsys.readouterr().out
    assert json.loads((search_folder / "results/choice.json").read_text())["non_binding"] == []

"""bench/multifidelity.py on a tiny synthetic table (the real table is not needed by tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitnas.spaces import nb201

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_multifidelity", ROOT / "bench" / "multifidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # --jobs > 1 sends its functions to worker processes by name
    spec.loader.exec_module(module)
    return module


bench = load_bench()
TINY = ["--k", "8,16", "--low-n", "60", "--seeds", "2", "--epochs", "2", "--ensemble", "1", "--synflow-shape", "2,1,4"]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """200 cells with a made-up truth and a low fidelity biased against 3x3 convolutions."""
    weight = {"skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 4.0, "avg_pool_3x3": 0.5}
    cells = nb201.all_cells()
    rng = np.random.default_rng(0)
    rows = []
    for i in rng.choice(len(cells), 200, replace=False):
        ops = [nb201.OPS[o] for o in nb201.canonical(cells[i])]
        acc = 60.0 + sum(weight.get(op, 0.0) for op in ops)
        rows.append((nb201.to_str(cells[i]), acc, acc - 1.5 * ops.count("nor_conv_3x3") + rng.normal(0, 0.5), 1.0, 0.1))
    path = tmp_path_factory.mktemp("nb201") / "table.csv"
    pd.DataFrame(rows, columns=list(bench.COLUMNS)).to_csv(path, index=False)
    return path


def test_tiny_study_writes_every_row_table_and_plot_and_resumes(table, tmp_path):
    report = bench.main([str(table), *TINY, "--out", str(tmp_path), "--jobs", "2"])
    assert {p.name for p in tmp_path.iterdir()} >= {"multifidelity.json", "multifidelity.md", "multifidelity.png",
                                                     "multifidelity.runs.jsonl", "multifidelity.synflow.csv"}
    saved = json.loads((tmp_path / "multifidelity.json").read_text())
    summary = pd.DataFrame(saved["summary"])
    assert set(summary.method) == set(bench.ORDER)
    assert set(summary.k) == {8, 16} and (summary.seeds == 2).all()
    for row in saved["summary"]:
        assert {"method", "k", "kendall_tau_mean", "kendall_tau_std", "seeds"} <= set(row)
        assert -1.0 <= row["kendall_tau_mean"] <= 1.0
    # The fixed rankings learn nothing: one value at every K and seed.
    fixed = summary[summary.method.isin(bench.FIXED_ROWS)]
    assert fixed.kendall_tau_std.max() == pytest.approx(0.0)
    # Every cell was judged; the default's weights sum to one.
    runs = [r for r in saved["runs"] if r["method"] == "multifidelity"]
    assert len(runs) == 4 and all(sum(r["weights"].values()) == pytest.approx(1.0) for r in runs)
    assert "| **multifidelity** |" in (tmp_path / "multifidelity.md").read_text()
    assert report["summary"] == saved["summary"]
    synflow = pd.read_csv(tmp_path / "multifidelity.synflow.csv")
    assert len(synflow) == len({nb201.canonical(nb201.parse(s)) for s in pd.read_csv(table).arch_str})

    # --resume re-fits nothing: the journal stays as it is and the summary is the same.
    journal = (tmp_path / "multifidelity.runs.jsonl").read_text()
    again = bench.main([str(table), *TINY, "--out", str(tmp_path), "--jobs", "1", "--resume"])
    assert (tmp_path / "multifidelity.runs.jsonl").read_text() == journal
    assert again["summary"] == saved["summary"]
    # Other settings are another study: nothing of this one is reused.
    assert bench.read_journal(tmp_path / "multifidelity.runs.jsonl", {**saved["config"], "low_n": 61}) == []

    # The saved components re-weigh offline (bench/multifidelity_weightings.py) to the same default row.
    spec = importlib.util.spec_from_file_location("bench_weightings", ROOT / "bench" / "multifidelity_weightings.py")
    weightings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weightings)
    offline = weightings.main([str(tmp_path / "multifidelity.cache"), str(table)])
    assert set(offline) == {(s, k) for s in (0, 1) for k in (8, 16)}
    for r in runs:
        assert offline[(r["seed"], r["k"])]["multifidelity"] == pytest.approx(r["kendall_tau"], abs=1e-9)


def test_one_process_and_several_measure_the_same_without_synflow(table, tmp_path):
    args = [str(table), "--k", "10", "--low-n", "50", "--seeds", "1", "--epochs", "2", "--ensemble", "1",
            "--synflow-shape", "none"]
    alone = bench.main([*args, "--jobs", "1", "--out", str(tmp_path / "one")])
    together = bench.main([*args, "--jobs", "2", "--out", str(tmp_path / "two")])
    assert "synflow" not in {r["method"] for r in alone["summary"]}
    assert not (tmp_path / "one" / "multifidelity.synflow.csv").exists()
    key = lambda r: (r["method"], r["k"], r["seed"])  # noqa: E731
    a = sorted(alone["runs"], key=key)
    b = sorted(together["runs"], key=key)
    assert [key(r) for r in a] == [key(r) for r in b]
    assert [r["kendall_tau"] for r in a] == pytest.approx([r["kendall_tau"] for r in b], abs=1e-12)


def test_the_splits_are_disjoint_and_nested():
    low, k10 = bench.split(1000, 300, 10, seed=3)
    _, k20 = bench.split(1000, 300, 20, seed=3)
    assert not set(low) & set(k20) and list(k20[:10]) == list(k10)
    with pytest.raises(SystemExit, match="exceeds"):
        bench.split(100, 95, 10, seed=0)


def test_a_table_without_the_low_fidelity_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"arch_str": [nb201.EXAMPLE], "test_acc_200ep": [90.0]}).to_csv(path, index=False)
    with pytest.raises(SystemExit, match="val_acc_12ep"):
        bench.load_table(str(path))
    with pytest.raises(SystemExit, match="cannot read"):
        bench.load_table(str(tmp_path / "missing.csv"))


def test_nested_tau_is_honest_where_the_grids_best_is_optimistic():
    from fitnas.predictors.multifidelity import simplex_weights

    spec = importlib.util.spec_from_file_location("bench_weightings", ROOT / "bench" / "multifidelity_weightings.py")
    weightings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weightings)
    rng = np.random.default_rng(0)
    y = rng.normal(size=25)
    fold = np.arange(25) % 5
    # Pure noise: the grid's best weights on 25 values find a tau that is not there; chosen without
    # the values they are judged on, they find about none (means over 20 draws).
    draws = [rng.normal(size=(25, 4)) for _ in range(20)]
    best = np.mean([simplex_weights(noise, y)[1] for noise in draws])
    nested = np.mean([weightings.nested_kendall_tau(noise, y, fold) for noise in draws])
    assert best > 0.2 and abs(nested) < 0.1, (best, nested)
    # One informative column is chosen inside every fold: the nested tau is about its own.
    informative = np.column_stack([draws[0][:, :2], y + 0.3 * rng.normal(size=25)])
    assert weightings.nested_kendall_tau(informative, y, fold) > 0.6

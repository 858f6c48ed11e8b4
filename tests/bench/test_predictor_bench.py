"""bench/predictors.py on a tiny setting and a synthetic table (the real table is not needed by tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitnas.metrics import kendall_tau
from fitnas.spaces import nb201

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_predictors", ROOT / "bench" / "predictors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # --jobs > 1 sends its functions to worker processes by name
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """Every cell with a made-up accuracy that depends on its canonical ops."""
    weight = {"skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 4.0, "avg_pool_3x3": 0.5}
    cells = nb201.all_cells()
    acc = [60.0 + sum(weight.get(nb201.OPS[op], 0.0) for op in nb201.canonical(c)) for c in cells]
    path = tmp_path_factory.mktemp("nb201") / "table.csv"
    pd.DataFrame({"arch_str": [nb201.to_str(c) for c in cells], "test_acc_200ep": acc}).to_csv(path, index=False)
    return path


def test_tiny_benchmark_writes_every_number_table_and_plot(table, tmp_path):
    report = bench.main([str(table), "--sizes", "20,40", "--seeds", "2", "--noise-n", "40", "--epochs", "3",
                         "--ensemble", "1", "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} >= {"predictors.json", "predictors.md", "predictors.png"}
    saved = json.loads((tmp_path / "predictors.json").read_text())
    assert saved["cells"] == 15625 and saved["settings"]["epochs"] == 3
    # 2 sizes x 2 seeds + 2 noise seeds, each with all four predictors.
    assert len(saved["runs"]) == (2 * 2 + 2) * 4
    summary = pd.DataFrame(saved["summary"])
    assert set(summary.predictor) == {"gcn", "mlp", "rf", "params"}
    assert set(zip(summary.study, summary.n)) == {("size", 20), ("size", 40), ("noise", 40)}
    for row in saved["runs"]:
        assert -1.0 <= row["kendall_tau"] <= 1.0 and 0.0 <= row["precision_top1"] <= 1.0
        assert row["fit_seconds"] >= 0 and row["query_seconds"] >= 0
    # The params baseline learns nothing, so it scores the same on every seed.
    params = summary[(summary.predictor == "params") & (summary.study == "size")]
    assert params.kendall_tau_std.max() == pytest.approx(0.0)
    assert saved["noise"]["noisy_tau"] == pytest.approx(0.60, abs=0.03)
    markdown = (tmp_path / "predictors.md").read_text()
    assert "| gcn | 20 |" in markdown and "Noise study" in markdown
    assert report["summary"] == saved["summary"]

    # --resume finds every run in the journal and fits nothing again; other settings are not reused.
    journal = (tmp_path / "predictors.runs.jsonl").read_text()
    assert len(journal.splitlines()) == len(saved["runs"])
    again = bench.main([str(table), "--sizes", "20,40", "--seeds", "2", "--noise-n", "40", "--epochs", "3",
                        "--ensemble", "1", "--out", str(tmp_path), "--resume"])
    assert (tmp_path / "predictors.runs.jsonl").read_text() == journal
    assert again["summary"] == saved["summary"]
    assert bench.read_journal(tmp_path / "predictors.runs.jsonl", {**saved["settings"], "epochs": 4}) == []


def test_one_process_and_several_measure_the_same(table, tmp_path):
    args = [str(table), "--sizes", "30", "--seeds", "2", "--noise-n", "30", "--epochs", "3", "--ensemble", "1"]
    alone = bench.main([*args, "--jobs", "1", "--out", str(tmp_path / "one")])
    together = bench.main([*args, "--jobs", "2", "--out", str(tmp_path / "two")])
    key = ("study", "n", "seed", "predictor")
    assert [tuple(r[k] for k in key) for r in alone["runs"]] == [tuple(r[k] for k in key) for r in together["runs"]]
    assert [r["kendall_tau"] for r in alone["runs"]] == pytest.approx([r["kendall_tau"] for r in together["runs"]], abs=1e-12)


def test_noise_scale_hits_the_target_tau():
    truth = np.linspace(0.0, 1.0, 2000)
    sigma = bench.noise_scale(truth, 0.6, seed=3)
    noisy = truth + sigma * np.random.default_rng(3).standard_normal(len(truth))
    assert kendall_tau(noisy, truth) == pytest.approx(0.6, abs=0.002)


def test_a_table_without_the_truth_column_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"arch_str": [nb201.EXAMPLE], "accuracy": [90.0]}).to_csv(path, index=False)
    with pytest.raises(SystemExit, match="test_acc_200ep"):
        bench.load_table(str(path))
    with pytest.raises(SystemExit, match="cannot read"):
        bench.load_table(str(tmp_path / "missing.csv"))


def test_unknown_predictor_is_refused(table, tmp_path):
    with pytest.raises(SystemExit, match="xgboost"):
        bench.main([str(table), "--predictors", "gcn,xgboost", "--out", str(tmp_path)])


def test_noise_n_0_skips_the_noise_study_and_still_writes_the_summary(table, tmp_path):
    """`--noise-n 0` ("0 skips it") crashed writing the markdown (issue 18); with the other options at tiny settings."""
    report = bench.main([str(table), "--sizes", "20", "--seeds", "1", "--predictors", "params,rf", "--noise-n", "0",
                         "--noise-tau", "0.5", "--epochs", "2", "--ensemble", "1", "--jobs", "1", "--out", str(tmp_path)])
    assert report["noise"] is None and {r["study"] for r in report["runs"]} == {"size"}
    assert {r["predictor"] for r in report["runs"]} == {"params", "rf"}
    markdown = (tmp_path / "predictors.md").read_text()
    assert "| rf | 20 |" in markdown and "Noise study" not in markdown
    assert (tmp_path / "predictors.png").is_file()


def test_noise_tau_sets_the_noisy_values_own_tau(table, tmp_path):
    report = bench.main([str(table), "--sizes", "20", "--seeds", "1", "--predictors", "params", "--noise-n", "30",
                         "--noise-tau", "0.4", "--jobs", "1", "--out", str(tmp_path)])
    assert report["noise"]["target_tau"] == 0.4 and report["noise"]["noisy_tau"] == pytest.approx(0.4, abs=0.03)

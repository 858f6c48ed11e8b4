"""bench/supernet_levers.py at tiny settings: each variant trained by the supernet stage, judged, journaled."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import stage_project
from fitnas.spaces import nb201

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_supernet_levers", ROOT / "bench" / "supernet_levers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def test_variants_are_trained_by_the_stage_judged_on_the_truth_and_resumed_from_the_journal(tmp_path, monkeypatch, capsys):
    project = stage_project(tmp_path / "p", {"supernet": {"epochs": 1}, "sample": {"proxies": []}})
    archs = [nb201.to_str(a) for a in nb201.SPACE.sample(8, random.Random(0))]
    pd.DataFrame({"arch": archs, "standalone_acc": [0.8 + 0.01 * i for i in range(8)]}).to_csv(project / "truth.csv", index=False)
    monkeypatch.chdir(project)
    args = ["--truth", "truth.csv", "--variants", "base", "--variant", "pair=supernet.ensemble=2",
            "--variant", "calib=sample.bn_batches=1", "--bootstrap", "20", "--out", "out", "--work", "work"]
    report = bench.main(args)
    names = [row["name"] for row in report["variants"]]
    assert names == ["base", "pair", "calib"]
    base, pair, calib = report["variants"]
    # scored differently, trained the same: one supernet, trained once
    assert calib["supernet"] == base["supernet"] != pair["supernet"]
    assert calib["train_seconds"] == base["train_seconds"] and calib["key"] != base["key"]
    for row in report["variants"]:
        assert -1 <= row["kendall_tau"] <= 1 and row["low"] <= row["high"]
        assert row["networks"] == 8 and row["train_seconds"] > 0
    assert json.loads((project / "work" / pair["supernet"] / "metrics" / "supernet.json").read_text())["ensemble"] == 2
    assert "| pair | supernet.ensemble=2 |" in (project / "out" / "supernet_levers.md").read_text()

    # the gain over base is paired: computed on the same resamples of the networks
    assert pair["gain"] == pytest.approx(pair["kendall_tau"] - base["kendall_tau"])
    assert pair["gain_low"] <= pair["gain"] <= pair["gain_high"] and "gain" not in base

    capsys.readouterr()
    again = bench.main(args)  # every variant from the journal: nothing retrained
    assert "from out/supernet_levers.runs.jsonl" in capsys.readouterr().out
    assert [r["kendall_tau"] for r in again["variants"]] == [r["kendall_tau"] for r in report["variants"]]

    # a journal of an earlier version (no scores) is completed by scoring the same supernets again
    journal = project / "out" / "supernet_levers.runs.jsonl"
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "scores"}) + "\n" for row in rows))
    capsys.readouterr()
    completed = bench.main(args)
    assert capsys.readouterr().out.count("its scores recomputed") == 3
    assert [r["scores"] for r in completed["variants"]] == [r["scores"] for r in report["variants"]]


def test_a_bad_variant_or_a_missing_truth_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="unknown variant 'nope'"):
        bench.main(["--variants", "nope", "--truth", "x.csv"])
    with pytest.raises(SystemExit, match="write NAME=KEY=VALUE"):
        bench.main(["--variants", "", "--variant", "broken"])
    with pytest.raises(SystemExit, match="x.csv not found"):
        bench.main(["--variants", "base", "--truth", "x.csv"])


def test_keys_follow_what_training_and_scoring_read():
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    truth = pd.DataFrame({"arch": ["a", "b"], "standalone_acc": [0.8, 0.9]})
    same = bench.with_overrides(params, {"anchors.n": 16, "sample.n": 50, "predictor.kind": "mlp"})
    assert bench.variant_key(same, truth) == bench.variant_key(params, truth)
    scored = bench.with_overrides(params, {"sample.bn_batches": 9})
    assert bench.supernet_key(scored) == bench.supernet_key(params)
    assert bench.variant_key(scored, truth) != bench.variant_key(params, truth)
    trained = bench.with_overrides(params, {"supernet.lr": 0.3})
    assert bench.supernet_key(trained) != bench.supernet_key(params)
    assert bench.variant_key(params, truth.assign(standalone_acc=[0.9, 0.8])) != bench.variant_key(params, truth)

"""Every documented option of the other bench scripts, at tiny settings (issue 18): each runs and writes what it says."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import CHAIN_TINY, ROOT, TINY, merged

TINY_PREDICTOR = {"predictor": {"hidden": 8, "layers": 1, "epochs": 3, "ensemble": 1, "validation": 0.0}}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_search_bench_every_option(tmp_path):
    bench = load("search")
    profile = tmp_path / "tiny.yaml"
    params = merged(merged(yaml.safe_load((ROOT / "params.yaml").read_text()), CHAIN_TINY), TINY_PREDICTOR)
    profile.write_text(yaml.safe_dump(params))
    cache = tmp_path / "gcn.pt"
    common = ["--profile", str(profile), "--input-size", "28", "--samples", "20", "--seeds", "1", "--out", str(tmp_path)]
    quick = bench.main([*common, "--quick", "--cache", str(cache)])
    assert cache.is_file() and (tmp_path / "search-quick.json").is_file() and (tmp_path / "search-quick.md").is_file()
    assert {r["method"] for r in quick["runs"]} == {"progressive", "evolution", "random"}
    assert all("teacher" in r for r in quick["runs"])
    full = bench.main([*common, "--cache", str(cache)])  # the GCN from the cache; every budget, the long evolution
    assert (tmp_path / "search.json").is_file() and {r["method"] for r in full["runs"]} >= {"evolution-500"}
    assert len({r["budget"] for r in full["runs"]}) == 3
    own = bench.main(["--profile", str(profile), "--input-size", "28", "--predictor", str(cache), "--quick", "--out", str(tmp_path / "own")])
    assert own["meta"]["predictor"] == str(cache) and not any("teacher" in r for r in own["runs"])


def test_step_cost_bench_every_option(tmp_path):
    bench = load("step_cost")
    out = tmp_path / "step.json"
    report = bench.main(["--archs", "1", "--channels", "4", "--cells", "1", "--batch", "8", "--steps", "1", "--rounds", "2",
                         "--warmup", "0", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report)) and len(saved["devices"]["cpu"]["archs"]) == 1
    assert saved["devices"]["cpu"]["name"] == "cpu, 1 thread(s)" and saved["settings"]["batch"] == 8


def test_nb201_classes_bench(tmp_path):
    from fitnas.spaces import nb201

    bench = load("nb201_classes")
    cells = nb201.all_cells()
    rng = np.random.default_rng(0)
    table = tmp_path / "table.csv"
    pd.DataFrame({"arch_str": [nb201.to_str(c) for c in cells], "test_acc_200ep": rng.uniform(80, 90, len(cells)),
                  "flops_M": 1.0, "params_M": 0.1}).to_csv(table, index=False)
    report = bench.main(str(table), str(tmp_path / "out"))
    assert report["cells"] == len(cells) and report["distinct_networks"] == len(nb201.distinct())
    assert json.loads((tmp_path / "out" / "nb201_classes.json").read_text()) == report


@pytest.mark.slow
def test_supernet_ranking_bench_every_option(supernet_project, tmp_path, monkeypatch):
    """In a copy of a stage folder with a trained supernet: samples scored, a made-up rank check table."""
    from fitnas.spaces import nb201
    from fitnas.stages import sample

    project = tmp_path / "project"
    shutil.copytree(supernet_project, project, ignore=shutil.ignore_patterns("reference", ".fitnas"))
    monkeypatch.chdir(project)
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    sample.main("params.yaml")
    sampled = set(pd.read_csv("results/samples.csv").arch)
    picked = [a for a in (nb201.to_str(c) for c in nb201.sample(30, random.Random(9))) if a not in sampled][:4]
    pd.DataFrame({"arch": picked, "flops_M": [1.0, 2.0, 3.0, 4.0], "standalone_acc": [0.2, 0.4, 0.3, 0.5]}).to_csv(
        "results/rankcheck.csv", index=False)
    bench = load("supernet_ranking")
    report = bench.main(["--params", "params.yaml", "--supernets", "4x1", "--sample-sizes", "10,12", "--truth-seeds", "1",
                         "--out", str(tmp_path / "out")])
    assert [(r["channels"], r["epochs"]) for r in report["supernets"]] == [(4, 1)]
    assert [r["n"] for r in report["sample_sizes"]] == [10, 12] and [r["seed"] for r in report["truth_seeds"]] == [1]
    assert (tmp_path / "out" / "supernet_ranking.md").is_file()
    none = bench.main(["--supernets", "", "--sample-sizes", "12", "--truth-seeds", "0", "--out", str(tmp_path / "out0")])
    assert none["supernets"] == [] and none["truth_seeds"] == []

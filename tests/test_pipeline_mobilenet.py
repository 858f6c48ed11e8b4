"""End to end on the chain space: the same stages, a fitted predictor instead of a table, searches under budgets."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch

from conftest import run
from test_pipeline import STAGES, ran_stages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reproduced(tiny_chain_project):
    result = run([sys.executable, "-m", "dvc", "repro"], tiny_chain_project)
    run(["git", "add", "-A"], tiny_chain_project)
    run(["git", "commit", "-qm", "baseline"], tiny_chain_project)
    return tiny_chain_project, result.stdout


def _space(project):
    from fitnas import config, spaces

    return spaces.get(config.load(project / "params.yaml").space)


def test_every_stage_runs_on_the_chain_space(reproduced, monkeypatch):
    project, output = reproduced
    assert ran_stages(output) == STAGES
    space = _space(project)
    assert space.num_layers == 9

    samples = pd.read_csv(project / "results/samples.csv")
    assert len(samples) == 30 and samples.arch.is_unique
    lookup = pd.read_csv(project / "results/lookup.csv")
    assert set(lookup.arch) == set(samples.arch)  # a searched space's table holds the samples

    from fitnas import config, predictors
    from fitnas.pipeline import final_costs

    monkeypatch.chdir(project)  # the pipeline's paths are the project's
    costs = final_costs(config.load("params.yaml"), space)
    predictor = predictors.load_file(project / "models/predictor.pt", space, costs.params)
    assert predictor.name == json.loads((project / "metrics/fit.json").read_text())["lookup_predictor"] == "multifidelity"
    arch = space.parse(lookup.arch.iloc[0])
    assert predictor.query([arch])[0] == pytest.approx(lookup.predicted_acc.iloc[0], abs=1e-5)

    latency = json.loads((project / "metrics/latency.json").read_text())
    assert latency["networks_checked"] == 2 and latency["mean_abs_error_pct"] >= 0
    table = pd.read_csv(project / "results/latency.csv")
    assert len(table) == 1 + sum(len(c) for c in space.choices)

    choice = json.loads((project / "results/choice.json").read_text())
    from fitnas.chainsearch import segments_of
    from fitnas.pathscore import segment_size

    # Every candidate of every segment (4 layers, 4 layers, 1 layer), then the 3 x 3 x 3 combinations of super-cells.
    segments = sum(segment_size(space, a, b) for a, b in segments_of(9, 4))
    assert choice["search_method"] == "progressive" and choice["search_evaluations"] == segments + 27
    candidates = pd.read_csv(project / "results/candidates.csv")
    assert choice["arch"] in set(candidates.arch) and {"latency_ms", "flops_M"} <= set(candidates.columns)
    final = json.loads((project / "metrics/final.json").read_text())
    assert final["arch"] == choice["arch"]
    assert final["flops_M"] == pytest.approx(choice["flops_M"], rel=1e-6)  # the search's costs = the built network
    for path in ("plots/pareto.png", "plots/latency_check.png", "results/pareto_latency.csv"):
        assert (project / path).is_file(), path
    status = run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project)
    assert "up to date" in status.stdout


def test_budget_and_method_experiments_rerun_only_search_and_retrain(reproduced):
    project, _ = reproduced
    before = json.loads((project / "results/choice.json").read_text())
    candidates = pd.read_csv(project / "results/candidates.csv")
    budget = round((candidates.flops_M.min() + before["flops_M"]) / 2, 3)
    latency = round(float(candidates.latency_ms.quantile(0.5)), 4)
    result = run([sys.executable, "-m", "dvc", "exp", "run", "-S", f"budget.flops={budget}",
                  "-S", f"budget.latency_ms={latency}", "-S", "search.method=evolution"], project)
    assert ran_stages(result.stdout) == {"search", "retrain"}
    after = json.loads((project / "results/choice.json").read_text())
    assert after["search_method"] == "evolution"
    assert after["flops_M"] <= budget and after["latency_ms"] <= latency
    final = json.loads((project / "metrics/final.json").read_text())
    assert final["flops_M"] <= budget and final["latency_ms"] <= latency
    assert final["budget_flops"] == budget and final["budget_latency_ms"] == latency


def test_lookup_answers_several_budgets_from_one_fit(reproduced):
    project, _ = reproduced
    candidates = pd.read_csv(project / "results/candidates.csv")
    low, high = candidates.flops_M.min(), candidates.flops_M.max()
    budgets = [round(low + 0.2 * (high - low), 2), round(low + 0.8 * (high - low), 2)]
    result = run([sys.executable, "-m", "fitnas.cli", "lookup", "--max-flops", str(budgets[0]), "--max-flops", str(budgets[1]),
                  "--top", "1"], project)
    assert result.stdout.count("budget:") == 2
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [float(r[2]) <= b for r, b in zip(rows, budgets)] == [True, True]
    assert float(rows[0][1]) <= float(rows[1][1]) + 1e-9  # a larger budget predicts no worse


def test_rank_check_on_the_chain_space(reproduced):
    project, _ = reproduced
    run([sys.executable, "-m", "dvc", "repro", "rankcheck/dvc.yaml"], project)
    table = pd.read_csv(project / "results/rankcheck.csv")
    samples = pd.read_csv(project / "results/samples.csv")
    assert len(table) == 4 and table.arch.is_unique and not set(table.arch) & set(samples.arch)
    assert table.standalone_acc.between(0, 1).all()
    from fitnas import predictors

    space = _space(project)
    predictor = predictors.load_file(project / "models/predictor.pt", space, lambda arch: 0.0)
    archs = [space.parse(a) for a in table.arch]
    assert predictor.query(archs) == pytest.approx(table.predicted_acc.to_numpy(), abs=1e-5)
    report = json.loads((project / "metrics/rankcheck.json").read_text())
    assert -1 <= report["predicted_acc.kendall_tau"] <= 1

import random

import pandas as pd
import pytest
from typer.testing import CliRunner

from fitnas.cli import app
from fitnas.spaces import nb201

runner = CliRunner()


@pytest.fixture
def table(tmp_path, monkeypatch):
    """A lookup table over the real distinct networks with made-up predictions.

    In an empty folder: the command also reads the working folder's latency table when one is there.
    """
    monkeypatch.chdir(tmp_path)
    archs = nb201.distinct()
    costs = nb201.cost_model(nb201.NetworkShape(8, 1, 1, 10), 28)
    rng = random.Random(0)
    frame = pd.DataFrame(
        {
            "arch": [nb201.to_str(a) for a in archs],
            "predicted_acc": [0.5 + 0.4 * rng.random() for _ in archs],
            "flops_M": [round(costs.flops(a), 6) for a in archs],
            "params_M": [round(costs.params(a), 6) for a in archs],
        }
    )
    path = tmp_path / "lookup.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_lookup_answers_several_budgets(table):
    path, frame = table
    result = runner.invoke(app, ["lookup", "--max-flops", "5", "--max-flops", "8", "--max-params", "0.05", "--top", "3", "--table", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.count("budget:") == 2
    lines = [line for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 6
    for line in lines:
        _, _, flops, params, _ = line.split()
        assert float(params) <= 0.05
    feasible = frame[(frame.flops_M <= 8) & (frame.params_M <= 0.05)]
    assert f"{feasible.predicted_acc.max():.4f}" in result.output


def test_lookup_impossible_budget_is_a_clean_error(table):
    path, _ = table
    result = runner.invoke(app, ["lookup", "--max-flops", "0.01", "--table", str(path)])
    assert result.exit_code == 1
    assert "no architecture meets the budget" in result.output and "smallest available" in result.output


def test_lookup_without_a_table_says_how_to_make_one(tmp_path):
    result = runner.invoke(app, ["lookup", "--table", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "dvc repro fit" in result.output


def test_describe_reports_costs_and_prediction_of_the_canonical_form(table):
    path, frame = table
    # node 1 <- input by conv, node 2 unused dead branch: same network as its canonical form
    text = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"
    canonical = nb201.to_str(nb201.canonical(nb201.parse(text)))
    assert canonical != text
    result = runner.invoke(app, ["describe", text, "--table", str(path)])
    assert result.exit_code == 0, result.output
    row = frame[frame.arch == canonical].iloc[0]
    assert f"{row.flops_M:.3f} M" in result.output and f"{row.predicted_acc:.4f}" in result.output
    assert canonical in result.output


def test_describe_malformed_arch_shows_the_expected_form(table):
    path, _ = table
    result = runner.invoke(app, ["describe", "|conv~0|+|oops|", "--table", str(path)])
    assert result.exit_code == 1
    assert "expected: |op~0|+|op~0|op~1|+|op~0|op~1|op~2|" in result.output
    assert "Traceback" not in result.output


def test_help_lists_stages_and_queries():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("prepare", "supernet", "sample", "anchors", "fit", "search", "retrain", "rankcheck", "lookup", "describe", "predict", "experiments", "doctor"):
        assert name in result.output
    text = runner.invoke(app, ["predict", "--help"], terminal_width=200).output
    assert "--model MODEL" in text and "--json" in text and "<" not in text.replace("<=", ""), text


@pytest.fixture
def chain_project(tmp_path, monkeypatch):
    """What `fitnas lookup` reads for a searched space: params, the fitted predictor, the data's shape."""
    import numpy as np
    import torch
    import yaml

    from fitnas.data import splits
    from fitnas.predictors import GCNPredictor, gcn_state
    from fitnas.spaces.mobilenet import ChainSpace
    from fitnas.spaces.mobilenet import layout as mobilenet_layout

    shape = {"stem": 8, "first": 8, "widths": [8, 16, 16], "depths": [3, 3, 2], "strides": [1, 2, 2], "head": 16}
    params = {"space": {"name": "mobilenet", "mobilenet": shape},
              "search": {"segment": 4, "super_cells": 3, "contexts": 1, "evolution": {"population": 20, "generations": 5}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    space = ChainSpace(mobilenet_layout(**shape))
    archs = space.sample(30, random.Random(0))
    predictor = GCNPredictor(space, hidden=8, layers=2, epochs=2, ensemble=1, validation=0).fit(archs, [sum(a) for a in archs])
    (tmp_path / "models").mkdir()
    torch.save(gcn_state(predictor), tmp_path / "models/predictor.pt")
    (tmp_path / "data/prepared").mkdir(parents=True)
    splits.save_split(tmp_path / "data/prepared/val.pt", np.zeros((4, 28, 28)), np.arange(4), [str(i) for i in range(10)])
    monkeypatch.chdir(tmp_path)
    return space


@pytest.mark.parametrize("method", ["progressive", "evolution"])
def test_lookup_searches_a_space_too_large_to_tabulate(chain_project, method):
    space = chain_project
    costs = space.cost_model(space.network_shape(None, 1, 10), 28)
    low, high = costs.tables["flops"].min(), costs.tables["flops"].max()
    budgets = [round(low + 0.3 * (high - low), 2), round(low + 0.7 * (high - low), 2)]
    args = ["lookup", "--max-flops", str(budgets[0]), "--max-flops", str(budgets[1]), "--top", "2", "--method", method]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("budget:") == 2
    rows = [line.split() for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4
    for (rank, _, flops, params, arch), budget in zip(rows, [budgets[0]] * 2 + [budgets[1]] * 2):
        assert float(flops) <= budget
        assert costs.flops(space.parse(arch)) == pytest.approx(float(flops), abs=0.01)


def test_lookup_of_a_searched_space_needs_the_latency_table_for_a_latency_budget(chain_project):
    result = runner.invoke(app, ["lookup", "--max-latency-ms", "3"])
    assert result.exit_code == 1 and "fitnas latency-table" in result.output


def test_help_lists_the_latency_table_command():
    result = runner.invoke(app, ["--help"])
    assert "latency-table" in result.output


def test_describe_a_network_of_a_searched_space(chain_project):
    space = chain_project
    arch = space.to_str(space.random_cell(random.Random(1)))
    result = runner.invoke(app, ["describe", arch, "--space", "mobilenet"])
    assert result.exit_code == 0, result.output
    costs = space.cost_model(space.network_shape(None, 1, 10), 28)
    assert f"{costs.flops(space.parse(arch)):.3f} M" in result.output and "predicted acc:" in result.output
    bad = runner.invoke(app, ["describe", "k3e3", "--space", "mobilenet"])
    assert bad.exit_code == 1 and "expected:" in bad.output


def test_describe_unknown_space_is_a_usage_error(table):
    path, _ = table
    result = runner.invoke(app, ["describe", nb201.EXAMPLE, "--table", str(path), "--space", "darts"])
    assert result.exit_code == 2 and "unknown search space 'darts'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_lookup_table_that_is_a_folder(tmp_path):
    result = runner.invoke(app, ["lookup", "--table", str(tmp_path)])
    assert result.exit_code == 1 and "is a folder, not a table" in result.output


# --------------------------------------------------------------------------
# One CLI (issue 18)


def test_version_and_short_help():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"fitnas {version('fitnas')}"
    for args in (["-h"], ["lookup", "-h"], ["describe", "-h"], ["prepare", "-h"], ["doctor", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage:" in result.output, args


@pytest.mark.parametrize("command", ["prepare", "supernet", "sample", "anchors", "fit", "search", "retrain", "latency-table",
                                     "rankcheck", "lookup", "describe", "experiments", "doctor"])
def test_every_command_reads_the_params_file_with_params_and_click_metavars(command):
    text = runner.invoke(app, [command, "--help"], terminal_width=200).output
    assert "--params PATH" in text and "--config" not in text, text
    assert "<" not in text.replace("<=", ""), text  # no typer type columns: <list[float]>, <bool>, <path>


def test_lookup_budget_options_are_named_max(table):
    path, frame = table
    text = runner.invoke(app, ["lookup", "--help"], terminal_width=200).output
    for option in ("--max-flops FLOAT", "--max-params FLOAT", "--max-latency-ms FLOAT", "--top INTEGER", "--method [progressive|evolution]"):
        assert option in text
    result = runner.invoke(app, ["lookup", "--max-params", "0.05", "--table", str(path)])
    assert result.exit_code == 0 and "params <= 0.05 M" in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-3"])
def test_a_budget_that_is_not_a_positive_number_is_refused(table, value):
    path, _ = table
    result = runner.invoke(app, ["lookup", "--max-flops", value, "--table", str(path)])
    assert result.exit_code == 2 and "is not a budget" in result.output and "--max-flops" in result.output


def test_options_that_do_not_apply_are_errors(table, tmp_path, monkeypatch):
    path, _ = table
    monkeypatch.chdir(tmp_path)
    method = runner.invoke(app, ["lookup", "--method", "evolution", "--table", str(path)])
    assert method.exit_code == 2 and "--method applies to a space too large to tabulate" in method.output
    unknown = runner.invoke(app, ["lookup", "--method", "random", "--table", str(path)])
    assert unknown.exit_code == 2 and "'random' is not one of progressive, evolution" in unknown.output
    missing = tmp_path / "nope.yaml"
    for args in (["lookup", "--table", str(path)], ["describe", nb201.EXAMPLE, "--table", str(path)]):
        result = runner.invoke(app, [*args, "--params", str(missing)])
        assert result.exit_code == 2 and f"{missing} does not exist" in result.output, args
    stage = runner.invoke(app, ["search", "--params", str(missing)])
    assert stage.exit_code == 1 and f"{missing} not found" in stage.output


def test_lookup_of_a_searched_space_refuses_a_table(chain_project):
    result = runner.invoke(app, ["lookup", "--max-flops", "5", "--table", "results/lookup.csv"])
    assert result.exit_code == 2 and "--table" in result.output


def test_describe_follows_space_name_of_the_params_file(chain_project):
    space = chain_project
    arch = space.to_str(space.random_cell(random.Random(2)))
    result = runner.invoke(app, ["describe", arch])  # no --space: params.yaml says mobilenet
    assert result.exit_code == 0, result.output
    assert "predicted acc:" in result.output and "fitted graph network" in result.output

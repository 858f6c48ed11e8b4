"""`fitnas experiments`: `dvc exp show --json` cut down to the headline and the params that differ."""

from __future__ import annotations

from typer.testing import CliRunner

from fitnas.cli import app
from fitnas.experiments import headline, markdown


def data(test_acc, flops, lr, budget, timestamp="2026-12-03T10:34:00", rankcheck=None):
    metrics = {
        "metrics/final.json": {"data": {"test_acc": test_acc, "flops_M": flops, "params_M": 0.05, "arch": "|x|"}},
        "metrics/fit.json": {"data": {"gcn.kendall_tau": 0.4, "mlp.kendall_tau": 0.1}},
    }
    if rankcheck is not None:
        metrics["metrics/rankcheck.json"] = {"data": {"predicted_acc.kendall_tau": rankcheck}}
    params = {"seed": 0, "supernet": {"lr": lr, "epochs": 5}, "budget": {"flops": budget}, "rankcheck": {"budgets": [0.25, 0.5]}}
    return {"rev": "x", "timestamp": timestamp, "params": {"params.yaml": {"data": params}}, "metrics": metrics,
            "deps": {"stages/fit.py": {"hash": "abc"}}}


# The shape of `dvc exp show --json` (DVC 3.67): the workspace, then each baseline commit with its experiments.
ENTRIES = [
    {"rev": "workspace", "name": None, "data": data(0.156, 5.7, 0.05, None, timestamp=None, rankcheck=0.3), "experiments": None},
    {"rev": "bf06009aaaa", "name": "main", "data": data(0.196, 7.0, 0.1, None), "experiments": [
        {"name": "genic-maya", "revs": [{"rev": "fedd0fe1111", "name": "genic-maya", "data": data(0.156, 5.7, 0.05, None)}]},
        {"name": "nodal-seed", "revs": [{"rev": "19871202222", "name": "nodal-seed", "data": data(0.392, 3.2, 0.1, 4.23)}]},
    ]},
]


def test_headline_keeps_the_headline_metrics_and_only_the_params_that_differ():
    table = headline(ENTRIES, "gcn")
    assert table.Experiment.tolist() == ["workspace", "main", "fedd0fe [genic-maya]", "1987120 [nodal-seed]"]
    assert table.Created.tolist() == ["-", "2026-12-03 10:34", "2026-12-03 10:34", "2026-12-03 10:34"]
    assert list(table.columns) == ["Experiment", "Created", "test_acc", "flops_M", "params_M", "fit_tau", "truth_tau",
                                   "supernet.lr", "budget.flops"]  # no latency in these rows, no unchanged param
    assert table.test_acc.tolist() == [0.156, 0.196, 0.156, 0.392] and (table.fit_tau == 0.4).all()
    assert table["budget.flops"].isna().tolist() == [True, True, True, False]
    assert headline(ENTRIES, "mlp").fit_tau.tolist() == [0.1] * 4  # the fit's tau is the configured predictor's


def test_markdown_shows_missing_values_as_dashes_and_aligns_the_columns():
    text = markdown(headline(ENTRIES, "gcn"))
    lines = text.splitlines()
    assert len(lines) == 6 and len({len(line) for line in lines}) == 1
    assert lines[0].startswith("| Experiment") and set(lines[1]) <= {"|", "-"}
    assert "| 4.23 " in lines[5] and lines[2].split("|")[-2].strip() == "-"


def test_outside_a_dvc_project_the_command_says_where_to_run_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["experiments"])
    assert result.exit_code == 1 and "run it from the project folder" in result.output
    assert "Traceback" not in result.output

"""MLflow tracking: the store is checked before any work, a dead server is one clear error, FITNAS_TRACKING=off opts out."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from fitnas import tracking
from fitnas.spaces import nb201
from fitnas.stages import search

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sqlite_store_checks(tmp_path):
    assert tracking.problem(f"sqlite:///{tmp_path / 'mlflow.db'}") is None
    assert not (tmp_path / "mlflow.db").exists()  # checking creates nothing
    assert "missing or not writable" in tracking.problem(f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}")
    (tmp_path / "junk.db").write_text("not a database")
    assert "is not an SQLite database" in tracking.problem(f"sqlite:///{tmp_path / 'junk.db'}")


def test_a_dead_server_is_reported_quickly(monkeypatch):
    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.time()
    reason = tracking.problem(uri)
    assert reason.startswith("the server does not answer") and time.time() - start < 30
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(tracking.TrackingError) as err:
        tracking.preflight()
    assert uri in str(err.value) and "FITNAS_TRACKING=off" in str(err.value)
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    tracking.preflight()  # opted out: nothing to check


@pytest.fixture
def search_project(tmp_path, monkeypatch):
    """A folder holding what the search stage reads: params.yaml and a lookup table."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    cells = nb201.all_cells()[:40]
    (tmp_path / "results").mkdir()
    pd.DataFrame(
        {
            "arch": [nb201.to_str(c) for c in cells],
            "predicted_acc": [0.5 + 0.01 * k for k in range(40)],
            "flops_M": [1.0 + k for k in range(40)],
            "params_M": [0.1 + 0.01 * k for k in range(40)],
        }
    ).to_csv(tmp_path / "results/lookup.csv", index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_fails_before_any_work_when_the_server_is_down(search_project, monkeypatch, capsys):
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("FITNAS_TRACKING", raising=False)
    with pytest.raises(SystemExit) as code:
        search.main("params.yaml")
    assert code.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: MLflow tracking at {uri} cannot be used: the server does not answer")
    assert "FITNAS_TRACKING=off dvc repro" in err and "Traceback" not in err
    assert not (search_project / "results/choice.json").exists()  # nothing was computed or written
    assert (search_project / "results/lookup.csv").is_file()  # nor anything deleted


def test_stage_runs_untracked_when_opted_out(search_project, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    search.main("params.yaml")
    assert "[mlflow] search: not tracked (FITNAS_TRACKING=off)" in capsys.readouterr().out
    assert (search_project / "results/choice.json").is_file() and (search_project / "plots/pareto.png").is_file()
    assert not (search_project / "mlflow.db").exists() and not (search_project / "mlruns").exists()


def test_stage_logs_to_the_default_sqlite_file(search_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FITNAS_TRACKING", raising=False)
    search.main("params.yaml")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{search_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fitnas")
    runs = client.search_runs([experiment.experiment_id], "tags.`fitnas.stage` = 'search'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"pareto.png", "pareto.csv", "choice.json"}

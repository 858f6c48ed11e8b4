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


def truncated_store(folder: Path) -> Path:
    """A real mlflow.db cut in half: its header is fine, its pages are not (issue 18)."""
    from mlflow import MlflowClient

    path = folder / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    run = client.create_run(client.create_experiment("fitnas"))
    for k in range(100):
        client.log_metric(run.info.run_id, f"m{k}", k)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def test_a_truncated_database_is_found_by_a_real_query(tmp_path):
    path = truncated_store(tmp_path)
    reason = tracking.problem(f"sqlite:///{path}", "fitnas")
    assert reason.startswith(f"{path} is damaged (") and f"mv {path} {path}.broken" in reason


def test_stage_refuses_a_truncated_database_before_any_work(search_project, monkeypatch, capsys):
    truncated_store(search_project)
    capsys.readouterr()  # MLflow's own log lines while making the store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FITNAS_TRACKING", raising=False)
    with pytest.raises(SystemExit) as code:
        search.main("params.yaml")
    err = capsys.readouterr().err
    assert code.value.code == 1 and len(err.strip().splitlines()) == 1 and "is damaged" in err
    assert not (search_project / "results/choice.json").exists() and not (search_project / "metrics").exists()


@pytest.mark.parametrize("uri", ["ftp://x", "s3://bucket/runs"])
def test_a_scheme_mlflow_has_no_store_for_is_refused_before_any_work(search_project, monkeypatch, capsys, uri):
    assert "MLflow has no tracking store for the scheme" in tracking.problem(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("FITNAS_TRACKING", raising=False)
    with pytest.raises(SystemExit):
        search.main("params.yaml")
    err = capsys.readouterr().err
    assert err.startswith(f"error: MLflow tracking at {uri} cannot be used: MLflow has no tracking store for the scheme")
    assert not (search_project / "results/choice.json").exists()


def test_a_folder_store_is_checked_without_creating_it(tmp_path):
    assert tracking.problem(str(tmp_path / "mlruns")) is None and not (tmp_path / "mlruns").exists()
    assert tracking.problem(f"file:{tmp_path / 'mlruns'}") is None
    (tmp_path / "afile").write_text("x")
    assert "is not a folder" in tracking.problem(str(tmp_path / "afile"))
    assert "missing or not writable" in tracking.problem(str(tmp_path / "no" / "such" / "mlruns"))


def test_a_deleted_experiment_is_named_with_the_way_out(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.delete_experiment(client.create_experiment("fitnas"))
    reason = tracking.problem(uri, "fitnas")
    assert "the experiment 'fitnas' is deleted there" in reason and "mlflow.experiment" in reason
    assert tracking.problem(uri, "other") is None


def test_runs_left_running_by_a_killed_stage_are_ended_by_the_next(search_project, monkeypatch):
    import os
    import socket
    import subprocess
    import sys

    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FITNAS_TRACKING", raising=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{search_project / 'mlflow.db'}")
    experiment = client.create_experiment("fitnas", artifact_location=(search_project / "mlruns").as_uri())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    killed = client.create_run(experiment, tags={"fitnas.stage": "supernet", "fitnas.host": host, "fitnas.pid": dead})
    alive = client.create_run(experiment, tags={"fitnas.stage": "sample", "fitnas.host": host, "fitnas.pid": str(os.getpid())})
    elsewhere = client.create_run(experiment, tags={"fitnas.stage": "fit", "fitnas.host": "another-host", "fitnas.pid": dead})
    search.main("params.yaml")
    status = {run: client.get_run(run.info.run_id).info.status for run in (killed, alive, elsewhere)}
    assert status[killed] == "KILLED" and status[alive] == "RUNNING" and status[elsewhere] == "RUNNING"
    assert "had ended without closing the run" in client.get_run(killed.info.run_id).data.tags["fitnas.ended"]
    stage = client.search_runs([experiment], "tags.`fitnas.stage` = 'search'")[0]
    assert stage.info.status == "FINISHED" and stage.data.tags["fitnas.pid"] == str(os.getpid())

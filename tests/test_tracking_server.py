"""The pipeline against a real MLflow tracking server on loopback, and what a stage says when it is down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import TINY, make_project, merged, run
from test_pipeline import STAGES

pytestmark = pytest.mark.slow

# Smaller still than the shared tiny configuration: this test is about tracking, not results.
SMALL = merged(TINY, {
    "data": {"val_size": 300, "train_limit": 600, "test_limit": 200},
    "sample": {"n": 12, "val_limit": 200},
    "predictor": {"epochs": 10, "baselines": ["params"], "validation": 0.0},
})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (its own process group): politely, then for sure."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its own backend store and artifact folder; stopped after the module."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: stopped with its workers
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # first request warms the server up
        yield uri, home, proc
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def tracked(server, tmp_path_factory):
    uri, home, _ = server
    project = make_project(tmp_path_factory.mktemp("server-project"), SMALL)
    result = run([sys.executable, "-m", "dvc", "repro"], project, env_extra={"MLFLOW_TRACKING_URI": uri})
    return project, result.stdout


def test_the_pipeline_logs_grouped_runs_to_the_server(server, tracked):
    uri, home, _ = server
    project, output = tracked
    assert f"at {uri}" in output
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fitnas")
    parents = client.search_runs([experiment.experiment_id], "tags.`fitnas.role` = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.tags["fitnas.stage"] for c in children} == STAGES
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.data.params["sample.n"] == "12" and 0.0 <= parent.data.metrics["test_acc"] <= 1.0
    assert "fit.gcn.kendall_tau" in parent.data.metrics and "chosen_arch" in parent.data.tags
    by_stage = {c.data.tags["fitnas.stage"]: c for c in children}
    history = client.get_metric_history(by_stage["supernet"].info.run_id, "train_loss")
    assert [m.step for m in history] == [1]
    # Artifacts went through the server into its own store, none into the project.
    artifacts = {a.path for a in client.list_artifacts(by_stage["search"].info.run_id)}
    assert {"pareto.png", "pareto.csv", "choice.json"} <= artifacts
    for stage, plot in (("supernet", "supernet_curves.png"), ("fit", "fit_scatter.png"), ("retrain", "retrain_curves.png")):
        assert plot in {a.path for a in client.list_artifacts(by_stage[stage].info.run_id)}, stage
    assert list((home / "artifacts").rglob("pareto.png"))
    assert not (project / "mlruns").exists() and not (project / "mlflow.db").exists()


def test_a_stage_says_when_the_server_is_down_and_can_run_without_it(server, tracked):
    uri, _, proc = server
    project, _ = tracked
    stop(proc)
    choice = (project / "results/choice.json").read_bytes()
    (project / "results/choice.json").unlink()

    down = run([sys.executable, "stages/search.py"], project, check=False, env_extra={"MLFLOW_TRACKING_URI": uri})
    assert down.returncode == 1
    assert f"error: MLflow tracking at {uri} cannot be used: the server does not answer" in down.stderr
    assert "FITNAS_TRACKING=off dvc repro" in down.stderr and "Traceback" not in down.stderr
    assert not (project / "results/choice.json").exists()  # stopped before any work
    assert (project / "results/lookup.csv").is_file()  # and deleted nothing

    off = run([sys.executable, "stages/search.py"], project, env_extra={"MLFLOW_TRACKING_URI": uri, "FITNAS_TRACKING": "off"})
    assert "not tracked (FITNAS_TRACKING=off)" in off.stdout
    assert (project / "results/choice.json").read_bytes() == choice

    # Through DVC: it removes the failing stage's cached outputs before running it; they come back from
    # its cache. Uncached metrics persist (DVC could not restore them).
    metrics = (project / "metrics/search.json").read_bytes()
    failed = run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "search"], project, check=False,
                 env_extra={"MLFLOW_TRACKING_URI": uri})
    assert failed.returncode != 0 and "the server does not answer" in failed.stdout + failed.stderr
    assert (project / "results/lookup.csv").is_file() and (project / "models/final.pt").is_file()
    assert (project / "metrics/search.json").read_bytes() == metrics
    run([sys.executable, "-m", "dvc", "checkout", "search"], project)
    assert (project / "results/choice.json").read_bytes() == choice
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project).stdout

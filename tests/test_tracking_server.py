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


# Loads the registered model as a user without fitnas would: fitnas cannot even be imported.
LOAD_WITHOUT_FITNAS = """
import importlib.abc, json, sys

class NoFitnas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fitnas" or name.startswith("fitnas."):
            raise ImportError("fitnas is not installed here")

sys.meta_path.insert(0, NoFitnas())
import mlflow.pyfunc, torch

model = mlflow.pyfunc.load_model(sys.argv[1])
test = torch.load("data/prepared/test.pt", weights_only=True)
table = model.predict(test["images"].numpy())
print(json.dumps({
    "accuracy": float((table["label"].to_numpy() == test["labels"].numpy()).mean()), "rows": len(table),
    "columns": list(table.columns), "metadata": model.metadata.metadata,
    "fitnas_imported": [name for name in sys.modules if name.split(".")[0] == "fitnas"],
}))
"""


def test_the_registered_model_loads_without_fitnas_and_scores_as_retraining(server, tracked):
    import json

    uri, _, _ = server
    project, output = tracked
    assert "registered models:/fitnas/1" in output  # mlflow.model_name is null: the experiment's name
    loaded = run([sys.executable, "-c", LOAD_WITHOUT_FITNAS, "models:/fitnas/1"], project,
                 env_extra={"MLFLOW_TRACKING_URI": uri})
    got = json.loads(loaded.stdout.strip().splitlines()[-1])
    final = json.loads((project / "metrics/final.json").read_text())
    assert got["fitnas_imported"] == []
    assert got["rows"] == SMALL["data"]["test_limit"]
    assert got["accuracy"] == final["test_acc"]  # the ONNX model in MLflow scores the test set as retraining did
    meta = got["metadata"]
    assert meta["classes"][0] == "T-shirt/top" and len(meta["classes"]) == 10 and got["columns"][:3] == ["class", "label", "probability"]
    assert (meta["mean"], meta["std"], meta["channels"], meta["size"]) == ([0.286], [0.353], 1, 28)
    assert meta["arch"] == final["arch"]

    from mlflow import MlflowClient
    from mlflow.models import Model

    client = MlflowClient(tracking_uri=uri)
    version = client.get_model_version("fitnas", "1")
    parent = client.search_runs([client.get_experiment_by_name("fitnas").experiment_id], "tags.`fitnas.role` = 'parent'")[0]
    assert version.run_id == parent.info.run_id  # linked to the pipeline execution's run
    assert parent.data.tags["fitnas.model_version"] == "models:/fitnas/1"
    assert version.tags["arch"] == final["arch"] and float(version.tags["test_acc"]) == pytest.approx(final["test_acc"], abs=1e-4)
    for key in ("flops_M", "params_M", "latency_table_ms", "latency_torch_ms", "latency_onnx_ms"):
        assert float(version.tags[key]) > 0, key
    import mlflow

    mlflow.set_tracking_uri(uri)
    info = Model.load("models:/fitnas/1")
    spec = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "uint8" and list(spec["shape"]) == [-1, 1, 28, 28]
    assert info.saved_input_example_info is not None


def test_what_the_ui_shows_reads_the_same_through_the_client(server, tracked):
    """What the MLflow UI was seen to get wrong (docs/mlflow-ui.md): the experiment's kind, the parent's duration, headline metrics."""
    uri, _, _ = server
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fitnas")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the training view, not GenAI's
    parent = client.search_runs([experiment.experiment_id], "tags.`fitnas.role` = 'parent'")[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.start_time <= min(c.info.start_time for c in children)
    assert parent.info.end_time >= max(c.info.end_time for c in children)  # the parent spans the pipeline
    retrain = next(c for c in children if c.data.tags["fitnas.stage"] == "retrain")
    assert retrain.info.end_time - retrain.info.start_time >= 1000 * json_of(tracked[0], "final")["train_seconds"]
    headline = {"test_acc", "flops_M", "params_M", "latency_ms", "measured_onnx_ms", "measured_torch_ms", "fit.gcn.kendall_tau"}
    assert headline <= set(parent.data.metrics)
    assert parent.data.metrics["test_acc"] == pytest.approx(json_of(tracked[0], "final")["test_acc"])
    # The runs table's columns: the view the printed link opens (?viewStateShareKey=fitnas-headline).
    import json

    view = json.loads(experiment.tags["mlflow.sharedViewState.fitnas-headline"])
    assert {f"metrics.`{name}`" for name in headline} <= set(view["selectedColumns"])
    assert "viewStateShareKey=fitnas-headline&workflowType=machine_learning" in tracked[1]
    assert "mlflow.pyfunc.load_model('models:/fitnas/VERSION')" in client.get_registered_model("fitnas").description
    description = client.get_model_version("fitnas", "1").description
    assert description.startswith(f"Execution {parent.info.run_name}: test accuracy")
    assert description.endswith(json_of(tracked[0], "final")["arch"])


def json_of(project, name: str) -> dict:
    import json

    return json.loads((project / f"metrics/{name}.json").read_text())


def test_predict_with_the_registered_model_agrees_with_the_project_model(server, tracked):
    import json

    import torch
    from PIL import Image

    uri, _, _ = server
    project, _ = tracked
    test = torch.load(project / "data/prepared/test.pt", weights_only=True)
    folder = project / "to-classify"
    folder.mkdir(exist_ok=True)
    for k in range(6):
        Image.fromarray(test["images"][k, 0].numpy()).save(folder / f"{k}.png")
    fitnas = [sys.executable, "-m", "fitnas.cli", "predict", "to-classify", "--json"]
    local = run(fitnas, project).stdout
    registered = run([*fitnas, "--model", "models:/fitnas/1"], project, env_extra={"MLFLOW_TRACKING_URI": uri}).stdout
    rows = [json.loads(line) for line in local.splitlines()]
    assert len(rows) == 6 and [json.loads(line)["class"] for line in registered.splitlines()] == [r["class"] for r in rows]
    for row, again in zip(rows, (json.loads(line) for line in registered.splitlines())):
        assert again["probability"] == pytest.approx(row["probability"], abs=1e-6)
    missing = run([*fitnas, "--model", "models:/fitnas/9"], project, check=False, env_extra={"MLFLOW_TRACKING_URI": uri})
    assert missing.returncode == 1 and missing.stderr.startswith("error: cannot load models:/fitnas/9")


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

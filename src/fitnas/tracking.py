"""MLflow tracking: one parent run per pipeline execution, one child run per stage.

DVC runs each stage as its own process and passes no execution id, so the
stages of one execution find each other by a key: the params file, the git
commit and the DVC experiment name. A parent collects at most one run of each
stage; when a stage finds its name already there, it is a new execution
(say `dvc repro -f`, or code changed without a commit) and opens a new parent.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

from fitnas.config import Params, flatten

DEFAULT_URI_FILE = "mlflow.db"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_URI_FILE).resolve()}"


def _git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "no-git"


def execution_key(params_path: Path) -> str:
    digest = hashlib.sha1()
    digest.update(params_path.read_bytes())
    digest.update(_git_head().encode())
    digest.update(os.environ.get("DVC_EXP_NAME", "").encode())
    return digest.hexdigest()[:16]


class StageRun:
    """A child run for one stage; also writes the headline numbers onto the parent."""

    def __init__(self, client, run_id: str, parent_id: str):
        self.client = client
        self.run_id = run_id
        self.parent_id = parent_id

    def log_params(self, params: dict[str, object]) -> None:
        for key, value in params.items():
            self.client.log_param(self.run_id, key, value)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, to_parent: bool = False) -> None:
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), timestamp=now, step=step or 0)
            if to_parent:
                self.client.log_metric(self.parent_id, key, float(value), timestamp=now, step=step or 0)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: dict[str, str], to_parent: bool = False) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
            if to_parent:
                self.client.set_tag(self.parent_id, key, value)


class NoRun:
    """Where ranks other than 0 log under torchrun: nowhere."""

    def log_params(self, *args, **kwargs) -> None:
        pass

    log_metrics = log_artifact = set_tags = log_params


class stage_run:
    """Context manager: `with stage_run("fit", params) as run: run.log_metrics(...)`.

    With `enabled=False` (every rank but 0 under torchrun) it logs nothing.
    """

    def __init__(self, stage: str, params: Params, params_path: str | Path = "params.yaml", enabled: bool = True):
        self.stage = stage
        self.params = params
        self.params_path = Path(params_path)
        self.enabled = enabled

    def __enter__(self) -> StageRun | NoRun:
        if not self.enabled:
            self.run = None
            return NoRun()
        from mlflow import MlflowClient

        uri = tracking_uri()
        client = MlflowClient(tracking_uri=uri)
        experiment_id = self._experiment(client, uri)
        key = execution_key(self.params_path)
        parent_id = self._parent(client, experiment_id, key)
        child = client.create_run(
            experiment_id,
            run_name=self.stage,
            tags={"mlflow.parentRunId": parent_id, "fitnas.stage": self.stage, "fitnas.execution": key},
        )
        self.run = StageRun(client, child.info.run_id, parent_id)
        print(f"[mlflow] {self.stage}: run {child.info.run_id} in parent {parent_id} at {uri}")
        return self.run

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.run is None:
            return
        status = "FINISHED"
        if exc_type is not None:
            # Stopped by a signal (the stage resumes when run again) is not a failure.
            stopped = issubclass(exc_type, KeyboardInterrupt) or hasattr(exc, "signum")
            status = "KILLED" if stopped else "FAILED"
        self.run.client.set_terminated(self.run.run_id, status)

    def _experiment(self, client, uri: str) -> str:
        name = self.params.mlflow.experiment
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
            artifacts = Path("mlruns").resolve().as_uri()
        return client.create_experiment(name, artifact_location=artifacts)

    def _parent(self, client, experiment_id: str, key: str) -> str:
        parents = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`fitnas.execution` = '{key}' and tags.`fitnas.role` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if parents:
            parent_id = parents[0].info.run_id
            siblings = client.search_runs(
                [experiment_id],
                # A stage that failed or was stopped there is re-run or resumed within the same execution.
                filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`fitnas.stage` = '{self.stage}'"
                " and attributes.status = 'FINISHED'",
                max_results=1,
            )
            if not siblings:
                return parent_id
        exp_name = os.environ.get("DVC_EXP_NAME")
        run_name = exp_name or time.strftime("repro-%Y%m%d-%H%M%S")
        parent = client.create_run(
            experiment_id, run_name=run_name, tags={"fitnas.execution": key, "fitnas.role": "parent"}
        )
        for dotted, value in flatten(self.params).items():
            client.log_param(parent.info.run_id, dotted, "null" if value is None else value)
        client.set_terminated(parent.info.run_id, "FINISHED")
        return parent.info.run_id

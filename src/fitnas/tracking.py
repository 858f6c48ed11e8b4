"""MLflow tracking: one parent run per pipeline execution, one child run per stage.

DVC runs each stage as its own process and passes no execution id, so the
stages of one execution find each other by a key: the params file, the git
commit and the DVC experiment name. A parent collects at most one run of each
stage; when a stage finds its name already there, it is a new execution
(say `dvc repro -f`, or code changed without a commit) and opens a new parent.

Every stage checks the tracking store before it starts work (`preflight`), so
an unreachable server costs nothing but a clear message; FITNAS_TRACKING=off
runs the stages without tracking.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from fitnas.config import Params, flatten
from fitnas.errors import TrackingError

# When this stage's process started (this module is imported as the stage starts): runs span the
# stage's work, not only the moment it logs, so the parent's duration spans the pipeline.
STARTED_MS = int(time.time() * 1000)
# MLflow's UI opens an experiment in its GenAI view (traces, token usage) unless this tag says otherwise.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# A view of the runs table with the headline metrics as columns, stored where MLflow's UI keeps shared
# views (an experiment tag mlflow.sharedViewState.KEY, opened by ?viewStateShareKey=KEY); without it the
# table shows no metric at all until one picks columns by hand.
VIEW_KEY = "fitnas-headline"
HEADLINE = ("test_acc", "flops_M", "params_M", "latency_ms", "measured_torch_ms", "measured_onnx_ms")
DEFAULT_URI_FILE = "mlflow.db"
OPT_OUT = "FITNAS_TRACKING"  # =off: run the stages without MLflow
PROBE_TIMEOUT_S = 30  # a refused connection fails at once; this bounds a server that accepts but hangs


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_URI_FILE).resolve()}"


def enabled() -> bool:
    return os.environ.get(OPT_OUT, "on").strip().lower() not in ("off", "0", "false", "no")


def _fix(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        what = "start the server or point MLFLOW_TRACKING_URI at a running one"
    else:
        what = "fix MLFLOW_TRACKING_URI (unset, it means the sqlite file mlflow.db in the project)"
    return f"{what}, or run without tracking: {OPT_OUT}=off dvc repro"


@contextlib.contextmanager
def _quick_requests():
    """MLflow's HTTP client retries for minutes by default; a probe should answer in seconds."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict(zip(names, ("0", str(PROBE_TIMEOUT_S)))))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sqlite_path(uri: str) -> Path:
    # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy reads them
    return Path(uri.removeprefix("sqlite:///"))


# The tracking stores MLflow ships (plus a plain path, which means file:). Any other scheme fails
# only when the first run is logged, after the stage's work: refuse it in the preflight.
SCHEMES = ("", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def problem(uri: str | None = None, experiment: str | None = None) -> str | None:
    """Why the tracking store at `uri` (and the experiment named) cannot be used, or None when it can.

    The store is opened the way the stages will use it (a query against the database or the
    server), but nothing is created or changed.
    """
    uri = uri or tracking_uri()
    scheme = urlparse(uri).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, C:\\...: a plain path
        scheme = ""
    if scheme not in SCHEMES:
        return (f"MLflow has no tracking store for the scheme {scheme!r}; set MLFLOW_TRACKING_URI to "
                f"sqlite:///FILE, http(s)://HOST:PORT, a folder or a database URL (unset: the project's mlflow.db)")
    if uri.startswith("sqlite:///"):
        return _sqlite_problem(_sqlite_path(uri), experiment)
    if scheme in ("", "file"):
        folder = Path(urlparse(uri).path if scheme == "file" else uri)
        here = folder if folder.exists() else folder.parent
        if folder.exists() and not folder.is_dir():
            return f"{folder} is not a folder (a file: store is a folder of runs)"
        if not here.is_dir() or not os.access(here, os.W_OK):
            return f"cannot write to {here}: it is missing or not writable"
        return None
    from mlflow import MlflowClient

    try:
        with _quick_requests():
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
            found = client.get_experiment_by_name(experiment) if experiment else None
    except Exception as err:  # refused, timed out, an HTTP error, bad credentials, a database that is not there
        what = "the server does not answer" if scheme in ("http", "https") else "the store does not answer"
        return f"{what} ({_reason(err)})"
    if found is not None and found.lifecycle_stage == "deleted":
        return _deleted(experiment, uri)
    return None


def _deleted(experiment: str, uri: str) -> str:
    return (f"the experiment {experiment!r} is deleted there; restore it (mlflow experiments restore --experiment-id ID, "
            f"with MLFLOW_TRACKING_URI={uri}) or set mlflow.experiment in params.yaml to another name")


def _sqlite_problem(path: Path, experiment: str | None) -> str | None:
    if path.exists() and not path.is_file():
        return f"{path} is not a file"
    if not path.exists():
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            return f"cannot create {path}: its folder {path.parent} is missing or not writable"
        return None
    damaged = f"move it aside (mv {path} {path}.broken) to start a new one"
    with path.open("rb") as f:
        header = f.read(16)
    if header and header != b"SQLite format 3\x00":
        return f"{path} is not an SQLite database; {damaged}"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable"
    if not header:
        return None  # an empty file: SQLite makes it a database
    try:
        # Read-only, and every page read: a truncated or damaged file fails here, not mid-stage.
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S)
        try:
            verdict = connection.execute("PRAGMA quick_check").fetchall()
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            stage = None
            if experiment and "experiments" in tables:
                row = connection.execute("SELECT lifecycle_stage FROM experiments WHERE name = ?", (experiment,)).fetchone()
                stage = row[0] if row else None
        finally:
            connection.close()
    except sqlite3.Error as err:
        return f"{path} is damaged ({err}); {damaged}"
    if verdict != [("ok",)]:
        return f"{path} is damaged (SQLite integrity check: {verdict[0][0]}); {damaged}"
    if stage == "deleted":
        return _deleted(experiment, f"sqlite:///{path}")
    return None


def _reason(err: Exception) -> str:
    """The informative part of an HTTP client's error: its root cause, not the retry bookkeeping."""
    text = " ".join(str(err).split())
    cause = text.rpartition("(Caused by ")[2].rstrip(")") if "(Caused by " in text else text
    return f"{type(err).__name__}: {cause[:240]}"


def preflight(experiment: str | None = None) -> None:
    """Fail before any work when tracking is on and its store (or the experiment) cannot be used."""
    if not enabled():
        return
    uri = tracking_uri()
    reason = problem(uri, experiment)
    if reason is not None:
        # A server's problem is the server's; the other reasons say their own way out.
        way_out = _fix(uri) if uri.startswith(("http://", "https://")) else f"or run without tracking: {OPT_OUT}=off dvc repro"
        raise TrackingError(f"MLflow tracking at {uri} cannot be used: {reason}; {way_out}")


@contextlib.contextmanager
def _guard(uri: str):
    """MLflow failures during a stage become one TrackingError naming the URI and the opt-out."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError, sqlite3.Error, OSError) as err:
        text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise TrackingError(f"MLflow tracking at {uri} failed ({text}); {_fix(uri)}") from None


def headline_view(predictor_kind: str) -> str:
    """The runs-table view (JSON, as MLflow's UI stores a shared view): headline metric columns, newest first."""
    import json

    metrics = [*HEADLINE, f"fit.{predictor_kind}.kendall_tau"]
    columns = [f"metrics.`{name}`" for name in metrics] + ["attributes.`Models`"]
    return json.dumps({"selectedColumns": columns, "orderByKey": "attributes.start_time", "orderByAsc": False})


def ui_path(experiment_id: str) -> str:
    """Where in MLflow's UI the experiment's runs show with the headline view, in the training (not GenAI) view.

    MLflow 3.17's UI takes the view kind from `workflowType` (in the URL, else the browser's last choice),
    not from the experiment's tag, so the link says it too.
    """
    return f"/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def end_stale_runs(client, experiment_id: str) -> list[str]:
    """End as KILLED the stage runs left RUNNING by a process of this machine that is gone (killed mid-stage).

    Only runs that name their host and process (fitnas.host, fitnas.pid) are touched, and only
    from the same host: a run of another machine, or of a live process, may still be running.
    """
    host = socket.gethostname()
    ended = []
    stale = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`fitnas.host` = '{host}'", max_results=1000
    )
    for run in stale:
        pid = run.data.tags.get("fitnas.pid", "")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "fitnas.ended", f"process {pid} had ended without closing the run; closed by the next execution")
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    if ended:
        print(f"[mlflow] ended {len(ended)} run(s) left RUNNING by a killed stage as KILLED: {', '.join(ended)}")
    return ended


class StageRun:
    """A child run for one stage; also writes the headline numbers onto the parent."""

    def __init__(self, client, run_id: str, parent_id: str, uri: str = ""):
        self.client = client
        self.run_id = run_id
        self.parent_id = parent_id
        self.uri = uri

    def log_params(self, params: dict[str, object]) -> None:
        with _guard(self.uri):
            for key, value in params.items():
                self.client.log_param(self.run_id, key, value)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, to_parent: bool = False) -> None:
        now = int(time.time() * 1000)
        with _guard(self.uri):
            for key, value in metrics.items():
                self.client.log_metric(self.run_id, key, float(value), timestamp=now, step=step or 0)
                if to_parent:
                    self.client.log_metric(self.parent_id, key, float(value), timestamp=now, step=step or 0)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        with _guard(self.uri):
            self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: dict[str, str], to_parent: bool = False) -> None:
        with _guard(self.uri):
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
                if to_parent:
                    self.client.set_tag(self.parent_id, key, value)


    def ui_link(self) -> str:
        """The experiment's runs in MLflow's UI, headline metrics as columns (see ui_path)."""
        if self.uri.startswith(("http://", "https://")):
            return self.uri.rstrip("/") + ui_path(self.experiment_id)
        return f"`mlflow ui --backend-store-uri {self.uri}`, then http://127.0.0.1:5000{ui_path(self.experiment_id)}"

    def register_model(self, name: str, code: Path, artifacts: dict[str, str], signature, example, metadata: dict,
                       requirements: list[str], tags: dict[str, str]) -> str:
        """Log a pyfunc MLflow Model (models from code: the file `code`) in the parent run; register it under `name`.

        A new version per call, tagged with `tags`; the version and the runs name each other. Returns
        the new version's number.
        """
        import mlflow

        with _guard(self.uri):
            mlflow.set_tracking_uri(self.uri)
            # In the parent run: the version belongs to the pipeline execution, not to one stage.
            with mlflow.start_run(run_id=self.parent_id):
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=str(code), artifacts=artifacts, signature=signature,
                    input_example=example, metadata=metadata, pip_requirements=requirements,
                    registered_model_name=name,
                )
            version = str(info.registered_model_version)
            for key, value in tags.items():
                self.client.set_model_version_tag(name, version, key, value)
            # What the registry page shows first: how to use the model, and where this version came from.
            self.client.update_registered_model(name, description=(
                "Final networks of fitnas, one version per pipeline execution (tags: arch, costs, test accuracy). "
                f"`mlflow.pyfunc.load_model('models:/{name}/VERSION').predict(pixels)`: {metadata.get('input', '')}; "
                "returns the class name, its probability and every class's (`p_<class>`). Needs mlflow and onnxruntime, not fitnas."))
            execution = self.client.get_run(self.parent_id).info.run_name
            self.client.update_model_version(name, version, description=(
                f"Execution {execution}: test accuracy {tags.get('test_acc', '?')}, {tags.get('flops_M', '?')} MFLOPs, "
                f"{tags.get('params_M', '?')} M params; {tags.get('arch', '')}"))
            for run_id in (self.parent_id, self.run_id):
                self.client.set_tag(run_id, "fitnas.model_version", f"models:/{name}/{version}")
        return version


class NullRun(StageRun):
    """Where a stage logs when tracking is off: nowhere."""

    def __init__(self):
        super().__init__(None, "", "")

    def log_params(self, params: dict[str, object]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, to_parent: bool = False) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str], to_parent: bool = False) -> None:
        pass

    def ui_link(self) -> None:
        return None

    def register_model(self, name: str, code: Path, artifacts: dict[str, str], signature, example, metadata: dict,
                       requirements: list[str], tags: dict[str, str]) -> None:
        return None


class stage_run:
    """Context manager: `with stage_run("fit", params) as run: run.log_metrics(...)`.

    With `enabled=False` (every rank but 0 under torchrun) or FITNAS_TRACKING=off it logs nothing.
    """

    def __init__(self, stage: str, params: Params, params_path: str | Path = "params.yaml", enabled: bool = True):
        self.stage = stage
        self.params = params
        self.params_path = Path(params_path)
        self.enabled = enabled

    def __enter__(self) -> StageRun:
        if not self.enabled:
            self.run = NullRun()
            return self.run
        if not enabled():
            print(f"[mlflow] {self.stage}: not tracked ({OPT_OUT}=off)")
            self.run = NullRun()
            return self.run
        from mlflow import MlflowClient

        uri = tracking_uri()
        with _guard(uri):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = self._experiment(client, uri)
            end_stale_runs(client, experiment_id)
            key = execution_key(self.params_path)
            parent_id = self._parent(client, experiment_id, key)
            child = client.create_run(
                experiment_id,
                start_time=STARTED_MS,
                run_name=self.stage,
                tags={"mlflow.parentRunId": parent_id, "fitnas.stage": self.stage, "fitnas.execution": key,
                      # who runs it: the next execution ends the run as KILLED if this process dies without closing it
                      "fitnas.host": socket.gethostname(), "fitnas.pid": str(os.getpid())},
            )
        self.run = StageRun(client, child.info.run_id, parent_id, uri)
        self.run.experiment_id = experiment_id
        print(f"[mlflow] {self.stage}: run {child.info.run_id} in parent {parent_id} at {uri}")
        return self.run

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(self.run, NullRun) or exc_type is TrackingError:
            return  # nothing to close, or the store failed and closing would fail the same way
        status = "FINISHED"
        if exc_type is not None:
            # Stopped by a signal (the stage resumes when run again) is not a failure.
            stopped = issubclass(exc_type, KeyboardInterrupt) or hasattr(exc, "signum")
            status = "KILLED" if stopped else "FAILED"
        with _guard(self.run.uri):
            self.run.client.set_terminated(self.run.run_id, status)
            # The parent ends when its last stage ends (and says how that stage ended), so its duration
            # is the pipeline's: from the first stage's start to the last one's end.
            self.run.client.set_terminated(self.run.parent_id, status)

    def _experiment(self, client, uri: str) -> str:
        name = self.params.mlflow.experiment
        found = client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow tracking at {uri} cannot be used: {_deleted(name, uri)}")
        view = (f"mlflow.sharedViewState.{VIEW_KEY}", headline_view(self.params.predictor.kind))
        if found is not None:
            for key, value in (EXPERIMENT_KIND, view):  # an experiment made by an older fitnas, or another predictor
                if found.tags.get(key) != value:
                    client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        artifacts = None
        if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
            artifacts = Path("mlruns").resolve().as_uri()
        return client.create_experiment(name, artifact_location=artifacts, tags=dict([EXPERIMENT_KIND, view]))

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
            experiment_id, run_name=run_name, start_time=STARTED_MS, tags={"fitnas.execution": key, "fitnas.role": "parent"}
        )
        for dotted, value in flatten(self.params).items():
            client.log_param(parent.info.run_id, dotted, "null" if value is None else value)
        client.set_terminated(parent.info.run_id, "FINISHED")
        return parent.info.run_id

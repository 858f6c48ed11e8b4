"""The Docker image: built by scripts/docker-build.sh from a base image made on this machine, then
`fitnas --help` and the tiny pipeline (`dvc repro`) run inside it, as the README tells a user to.

This module starts its own Docker daemon (Debian's docker.io) and stops it by its PID, on failure too.
Its sockets and run state live in a temporary folder; it leaves the host's network alone (no bridge,
no iptables): builds use the host's network, the pipeline runs with none. Its images live in
$FITNAS_DOCKER_CACHE/data-root (default ~/.cache/fitnas-docker), outside the checkout, so that a later
run on the same machine, even from a fresh clone, builds from cache (on 2 shared CPU cores the build
takes about 10 minutes cold, seconds warm; the whole module 13.5-15 minutes cold, 3 warm). A run that finds the cache in use by another gets a temporary data root instead,
since two daemons must never share one.

Skipped only where Docker cannot run (not root, not Linux, docker.io not installed); `.ci/run` sets
FITNAS_REQUIRE_DOCKER=1, which turns those skips into failures.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, NoReturn

import pandas as pd
import pytest

from conftest import ROOT, make_project, write_synthetic_fashion_mnist
from fitnas.data import sources
from test_pipeline import STAGES, ran_stages

pytestmark = [pytest.mark.slow, pytest.mark.docker]

CACHE = Path(os.environ.get("FITNAS_DOCKER_CACHE", Path.home() / ".cache" / "fitnas-docker"))
IMAGE = "fitnas:test"
USER = "1000:1000"  # the checkout of a user who is not root, as `docker run -u "$(id -u):$(id -g)"` gives


def cannot_run(reason: str) -> NoReturn:
    if os.environ.get("FITNAS_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason} (FITNAS_REQUIRE_DOCKER=1: Docker must run here)")
    pytest.skip(reason)


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(daemon: subprocess.Popen, exec_root: Path) -> None:
    """Stop dockerd by its PID; the containerd it started as well, should dockerd not have."""
    pidfile = exec_root / "containerd" / "containerd.pid"
    containerd = int(pidfile.read_text()) if pidfile.is_file() else None
    daemon.terminate()
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # Only while that PID is still our containerd (its command line names our exec root), never a reused PID.
        try:
            if containerd is None or str(exec_root) not in Path(f"/proc/{containerd}/cmdline").read_text():
                return
            os.kill(containerd, sig)
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(5)


def unmount_under(folder: Path) -> None:
    """dockerd leaves the host's network namespace mounted in its exec root; nothing may stay mounted."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{folder}/")), key=len, reverse=True):
        subprocess.run(["umount", point], check=False)


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """Environment variables that point the docker CLI at a daemon of our own."""
    if sys.platform != "linux" or os.geteuid() != 0:
        cannot_run("starting a Docker daemon needs root on Linux")
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
    if not (dockerd and shutil.which("docker") and shutil.which("mmdebstrap")):
        cannot_run("Docker is not installed: `bash scripts/docker-setup.sh` installs Debian's docker.io and mmdebstrap")

    CACHE.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="fitnas-dockerd-"))  # short: socket paths are limited to 108 bytes
    lock = open(CACHE / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        data_root = CACHE / "data-root"
    except BlockingIOError:
        data_root = state / "data-root"
    (state / "daemon.json").write_text("{}")  # not /etc/docker/daemon.json, whatever it says
    socket = state / "docker.sock"
    command = [
        dockerd, "--data-root", str(data_root), "--exec-root", str(state / "exec"),
        "--pidfile", str(state / "dockerd.pid"), "--host", f"unix://{socket}",
        "--config-file", str(state / "daemon.json"),
        "--bridge", "none", "--iptables=false", "--ip-masq=false",
    ]
    env = dict(os.environ, DOCKER_HOST=f"unix://{socket}", FITNAS_DOCKER_CACHE=str(CACHE))
    log = state / "dockerd.log"
    with open(log, "w") as out:
        # The daemon inherits the lock, so a daemon outliving this process still keeps others off its data root.
        daemon = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, pass_fds=(lock.fileno(),))
    lock.close()
    try:
        for _ in range(120):
            if daemon.poll() is not None:
                cannot_run(f"dockerd exited with {daemon.returncode}:\n{log_tail(log)}")
            if subprocess.run(["docker", "version"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            cannot_run(f"dockerd did not answer within 60 s:\n{log_tail(log)}")
        yield env
    finally:
        stop(daemon, state / "exec")
        unmount_under(state)
        shutil.rmtree(state, ignore_errors=True)


def docker(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def image(docker_env) -> str:
    result = subprocess.run(
        ["bash", "scripts/docker-build.sh", IMAGE], cwd=ROOT, env=docker_env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, f"the image did not build:\n{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
    return IMAGE


def test_image_runs_fitnas_help_with_the_local_torch(docker_env, image):
    shown = docker(docker_env, "run", "--rm", "--network", "none", image, "fitnas", "--help").stdout
    for command in (*STAGES, "rankcheck", "lookup", "describe"):
        assert f" {command} " in shown, command
    config = json.loads(docker(docker_env, "image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["Cmd"] == ["fitnas", "--help"] and config["WorkingDir"] == "/work"

    # torch from TORCH_SOURCE=docker/wheels; fitnas editable from /work, where a checkout is mounted.
    # Only the package reached the image (.dockerignore), and nothing of the build stage: no CA bundle, no wheels.
    probe = 'python -c "import torch, fitnas; print(torch.__version__, fitnas.__file__)"; ls -A /work; ls -d /build 2>/dev/null || true'
    lines = docker(docker_env, "run", "--rm", "--network", "none", image, "sh", "-c", probe).stdout.split("\n")
    assert lines[0] == "2.13.0+cpu /work/src/fitnas/__init__.py"
    assert set(" ".join(lines[1:]).split()) == {"README.md", "pyproject.toml", "src", "stages"}
    history = docker(docker_env, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "/build" not in history and "ca-certificates.crt" not in history


def test_tiny_pipeline_runs_in_the_container(docker_env, image, tmp_path):
    dataset = Path(sources.DEBIAN_DIR)
    if not dataset.is_dir():
        dataset = write_synthetic_fashion_mnist(tmp_path / "fmnist")
    # data.root null: the stages look in the Debian folder, where the dataset is mounted read-only.
    project = make_project(tmp_path / "project")
    subprocess.run(["chown", "-R", USER, str(project)], check=True)

    mounts = ["-v", f"{project}:/work", "-v", f"{dataset}:{sources.DEBIAN_DIR}:ro"]
    threads = ["-e", f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    result = docker(docker_env, "run", "--rm", "--network", "none", "-u", USER, *threads, *mounts, image, "dvc", "repro",
                    timeout=1500)
    assert ran_stages(result.stdout) == STAGES

    final = json.loads((project / "metrics/final.json").read_text())
    choice = json.loads((project / "results/choice.json").read_text())
    assert 0.0 <= final["test_acc"] <= 1.0 and final["arch"] == choice["arch"]
    from fitnas.spaces import nb201

    lookup = pd.read_csv(project / "results/lookup.csv")
    assert len(lookup) == len(nb201.distinct()) and lookup.cells.sum() == 15625
    for path in ("dvc.lock", "mlflow.db", "models/final.pt", "plots/pareto.png"):
        assert (project / path).stat().st_uid == 1000, path  # the user's files, not root's

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fitnas")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`fitnas.role` = 'parent'")
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.tags["fitnas.stage"] for c in children} == STAGES

    # As root, the default user, in a repository of another user: git refuses one unless told otherwise.
    status = docker(docker_env, "run", "--rm", "--network", "none", *mounts, image, "sh", "-c",
                    "git status --porcelain dvc.lock && dvc status dvc.yaml")
    assert status.stdout.startswith("?? dvc.lock") and "up to date" in status.stdout

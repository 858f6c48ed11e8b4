"""Shared fixtures: a tiny configuration and a throw-away copy of the project as its own git + DVC repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fitnas.data import idx, sources, splits

ROOT = Path(__file__).resolve().parents[1]

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # `make test` runs one worker per core: the cores are shared out
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# Small subsets, one epoch, few samples: the whole pipeline in about two minutes on 2 CPU cores.
TINY = {
    "data": {"val_size": 600, "train_limit": 1500, "test_limit": 500},
    "supernet": {"channels": 4, "epochs": 1, "batch_size": 128},
    "sample": {"n": 30, "bn_batches": 2, "bn_batch_size": 128, "val_limit": 300},
    "predictor": {"epochs": 40, "ensemble": 1, "hidden": 32},
    "final": {"channels": 8},
    "retrain": {"epochs": 1, "batch_size": 128},
    "rankcheck": {"archs": 4, "epochs": 1, "train_limit": 300, "bootstrap": 50},
    "anchors": {"n": 8},  # the fewest the fit fuses: the tiny run goes through the multi-fidelity fit
}


# The chain space at tiny size: 9 layers in 3 stages, segments of 4 (2,401 candidates each), 3 super-cells.
CHAIN_TINY = {
    "space": {"name": "mobilenet", "mobilenet": {"stem": 8, "first": 8, "widths": [8, 16, 16], "depths": [3, 3, 3],
                                                 "strides": [1, 2, 2], "head": 32}},
    "search": {"segment": 4, "super_cells": 3, "contexts": 1, "pareto_points": 2,
               "evolution": {"population": 20, "generations": 5}},
    "latency": {"warmup": 1, "repeats": 3, "check_networks": 2},
}


def merged(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def write_synthetic_fashion_mnist(folder: Path, n_train: int = 3000, n_test: int = 600) -> Path:
    """IDX files of random class-dependent blobs, for machines without the real dataset."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for k in range(10):  # a bright square whose position tells the class
            rows = labels == k
            images[rows, 2 + 2 * k : 8 + 2 * k, 4:10] = 220
        idx.write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        idx.write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def write_image_folder(
    root: Path, classes=("cat", "dog", "owl"), n_train: int = 6, n_test: int = 2, size=(10, 10), mode: str = "RGB"
) -> Path:
    """root/train/<class>/k.png and root/test/<class>/k.png; each class has its own colour."""
    from PIL import Image

    for part, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                colour = (40 + 80 * label, 10 * k, 200 - 60 * label)
                Image.new("RGB", size, colour).convert(mode).save(folder / f"{k}.png")
    return root


def run(cmd: list[str], cwd: Path, check: bool = True, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` in dvc.yaml
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("FITNAS_TRACKING", None)
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.update(env_extra or {})
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def make_project(project: Path, patch: dict = TINY) -> Path:
    """A copy of the project (code, dvc.yaml, params patched) in a fresh git + DVC repository."""
    project.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    for name in ("stages", "src", "rankcheck"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (project / "results").mkdir()
    shutil.copy(ROOT / "results" / "anchors.csv", project / "results")  # committed, as in a clone: no anchors
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), patch)
    if not Path(sources.DEBIAN_DIR).is_dir() and params["data"]["root"] is None:
        params["data"]["root"] = str(write_synthetic_fashion_mnist(project.parent / "fmnist"))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], project)
    run([sys.executable, "-m", "dvc", "init", "-q"], project)
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")  # dvc.yaml's custom plot templates
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny project"], project)
    return project


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """The tiny configuration on the NAS-Bench-201 space."""
    return make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def tiny_chain_project(tmp_path_factory) -> Path:
    """The tiny configuration on the MobileNet-style chain space."""
    return make_project(tmp_path_factory.mktemp("project"), merged(TINY, CHAIN_TINY))


# --------------------------------------------------------------------------
# Stages run on their own, in a folder of tiny prepared data (tests/stages/)

STAGE_TINY = {
    "supernet": {"epochs": 3},
    # 12: the least the fit accepts (config: 10 to fit, 2 held out); two proxies, one that reads images
    "sample": {"n": 12, "val_limit": 200, "proxies": ["synflow", "jacov"]},
    "final": {"channels": 4},
    "retrain": {"epochs": 3, "augment": True},
}


def stage_project(folder: Path, patch: dict | None = None) -> Path:
    """A folder a stage script runs in: tiny params and small synthetic splits, as `prepare` would write them."""
    params = merged(merged(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), merged(STAGE_TINY, patch or {}))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rng = np.random.default_rng(0)
    for name, n in (("train", 640), ("val", 200), ("test", 200)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for k in range(10):
            images[labels == k, 2 + 2 * k : 8 + 2 * k, 4:10] = 220
        splits.save_split(folder / "data" / "prepared" / f"{name}.pt", images, labels, sources.FASHION_MNIST_CLASSES)
    return folder


def stage_command(stage: str, processes: int = 1) -> list[str]:
    script = str(ROOT / "stages" / f"{stage}.py")
    if processes == 1:
        return [sys.executable, script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", script]


def resume_files(project: Path) -> list[Path]:
    return sorted((project / ".fitnas" / "resume").glob("*.pt"))


def run_and_signal(project: Path, stage: str, sig: int, wait_for_change_of: Path | None = None) -> subprocess.CompletedProcess:
    """Start a stage, wait for its first epoch checkpoint (or for a new version of a given one), send `sig`."""
    import signal
    import time

    def ready() -> bool:
        if wait_for_change_of is None:
            return bool(resume_files(project))
        return wait_for_change_of.is_file() and wait_for_change_of.stat().st_mtime_ns != before

    before = wait_for_change_of.stat().st_mtime_ns if wait_for_change_of is not None else None
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("FITNAS_TRACKING", None)
    proc = subprocess.Popen(stage_command(stage), cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not ready():
            if proc.poll() is not None or time.time() > deadline:
                out, err = proc.communicate()
                raise AssertionError(f"{stage} ended ({proc.returncode}) before its checkpoint:\n{out[-3000:]}\n{err[-3000:]}")
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="session")
def supernet_project(tmp_path_factory) -> Path:
    """A stage folder in which the supernet has been trained once, without interruption (the reference)."""
    import torch

    project = stage_project(tmp_path_factory.mktemp("stages") / "supernet")
    run(stage_command("supernet"), project)
    reference = project / "reference"
    reference.mkdir()
    shutil.copy(project / "metrics" / "supernet_history.csv", reference)
    shutil.copy(project / "models" / "supernet.pt", reference)
    assert not resume_files(project), "a finished run leaves no resume checkpoint"
    assert torch.load(reference / "supernet.pt", weights_only=True)["epoch"] == 3
    return project

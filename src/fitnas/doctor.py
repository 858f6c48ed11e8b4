"""`fitnas doctor`: is this machine ready to run the pipeline? Each check says OK or FAIL and what to fix."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_params(path: Path):
    from fitnas import config

    try:
        p = config.load(path)
    except config.ConfigError as err:
        return None, Check("params", False, str(err), f"edit {path}")
    return p, Check("params", True, f"{path} is valid (space {p.space.name}, device {p.device})")


def check_dataset(p) -> Check:
    from fitnas.data import sources
    from fitnas import errors

    if p is None:
        return Check("dataset", False, "not checked until params.yaml is valid")
    try:
        return Check("dataset", True, sources.check_source(p.data.root, p.data.format, Path(p.data.download_dir)))
    except errors.DataError as err:
        return Check("dataset", False, str(err), "set data.root in params.yaml to your data (README: Bring your own data)")


def check_torch(p) -> Check:
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if (cuda and (p is None or p.device != "cpu")) else "cpu"
    where = f"CUDA: {torch.cuda.get_device_name(0)}" if cuda else "no CUDA GPU visible"
    threads = f"threads: {p.threads} (params.yaml; torch's default here {torch.get_num_threads()})" if p is not None \
        else f"{torch.get_num_threads()} threads"
    detail = f"torch {torch.__version__} on {device} ({where}); {threads}, {os.cpu_count()} cores"
    if p is not None and p.device == "cuda" and not cuda:
        return Check("torch", False, detail, "params.yaml has device: cuda but no GPU is visible; set device: auto")
    return Check("torch", True, detail)


# Where the `python` on PATH imports fitnas and its stages from (one line each).
_WHERE = ("import importlib.util, pathlib, fitnas; print(pathlib.Path(fitnas.__file__).parent); "
          "s = importlib.util.find_spec('fitnas.stages'); print(pathlib.Path(s.origin).parent if s and s.origin else '')")


def check_python(project: Path = Path(".")) -> Check:
    """dvc.yaml runs `python stages/...`: the `python` on PATH must import fitnas, and this checkout's code."""
    from fitnas.pipeline import code_mismatch

    python = shutil.which("python")
    if python is None:
        return Check("python", False, "no `python` on PATH (dvc.yaml's commands run `python stages/...`)",
                     "source .venv/bin/activate")
    result = subprocess.run([python, "-c", _WHERE], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return Check("python", False, f"{python} (dvc.yaml's `python`) cannot import fitnas",
                     "source .venv/bin/activate (or pip install -e . into that python)")
    package, _, stages = result.stdout.strip().partition("\n")
    mismatch = code_mismatch(project, Path(package), Path(stages) if stages.strip() else None)
    if mismatch is not None:
        return Check("python", False, f"{python}: {mismatch}", "source this checkout's .venv/bin/activate, or pip install -e . there")
    return Check("python", True, f"{python} imports fitnas from {package}")


def _missing_params(project: Path, params_path: Path) -> list[str]:
    """Keys dvc.yaml's stages read from the params file that it lacks: DVC fails on them after removing outputs."""
    import yaml

    try:
        stages = (yaml.safe_load((project / "dvc.yaml").read_text()) or {}).get("stages", {})
        raw = yaml.safe_load(params_path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return []  # the params check reports an unreadable file; a broken dvc.yaml is DVC's to report
    wanted = {key for stage in stages.values() for key in stage.get("params", []) if isinstance(key, str)}
    missing = [key for key in sorted(wanted) if not _has_path(raw, key)]
    # A missing section says it all: `supernet` lacking, `supernet.cells` is noise.
    return [key for key in missing if not any(key.startswith(other + ".") for other in missing)]


def _has_path(raw, key: str) -> bool:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_dvc(project: Path, params_path: Path = Path("params.yaml")) -> Check:
    try:
        import dvc
        from dvc.version import __version__
    except ImportError:
        return Check("dvc", False, "dvc is not installed", "pip install dvc (scripts/setup.sh does)")
    del dvc
    if not (project / ".dvc").is_dir():
        return Check("dvc", False, f"dvc {__version__}, but {project.resolve()} is not a DVC repository (no .dvc/)",
                     "run from the project folder (the one with dvc.yaml), or `git init && dvc init` in a copy")
    if not (project / "dvc.yaml").is_file():
        return Check("dvc", False, f"no dvc.yaml in {project.resolve()}", "run from the project folder")
    missing = _missing_params(project, params_path) if params_path.is_file() else []
    if missing:
        return Check("dvc", False, f"dvc.yaml's stages read {', '.join(missing)} from {params_path}, which lacks them "
                     "(DVC would fail after removing the stages' outputs)",
                     f"add them to {params_path} (params.yaml in git has every key with its default)")
    return Check("dvc", True, f"dvc {__version__}; repository at {project.resolve()}")


def check_mlflow(p=None) -> Check:
    """The store opened as the stages will open it (a query), with the experiment of params.yaml."""
    from fitnas import tracking

    if not tracking.enabled():
        return Check("mlflow", True, f"tracking off ({tracking.OPT_OUT}=off): stages run without MLflow")
    uri = tracking.tracking_uri()
    reason = tracking.problem(uri, p.mlflow.experiment if p is not None else None)
    if reason is not None:
        # A server's problem is the server's; the other reasons say their own way out.
        server = "start the server or fix MLFLOW_TRACKING_URI, or " if uri.startswith(("http://", "https://")) else ""
        return Check("mlflow", False, f"{uri}: {reason}", f"{server}run without tracking: {tracking.OPT_OUT}=off")
    experiment = f", experiment {p.mlflow.experiment!r}" if p is not None else ""
    return Check("mlflow", True, f"{uri} is usable{experiment}")


def run_checks(params_path: Path, project: Path = Path(".")) -> list[Check]:
    p, params = check_params(params_path)
    checks: list[Callable[[], Check]] = [
        lambda: check_dataset(p), lambda: check_torch(p), lambda: check_python(project),
        lambda: check_dvc(project, params_path), lambda: check_mlflow(p),
    ]
    return [params] + [check() for check in checks]


def report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        detail = c.detail.replace("\n", "\n" + " " * 16)
        lines.append(f"{'OK' if c.ok else 'FAIL':<5} {c.name:<9} {detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':<5} {'':<9} fix: {c.fix}")
    failed = sum(not c.ok for c in checks)
    lines.append("ready to run: dvc repro" if not failed else f"{failed} problem(s) to fix before `dvc repro`")
    return "\n".join(lines)

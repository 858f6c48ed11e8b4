"""`fitnas doctor`: every check says OK or FAIL with the fix; exit status 1 when anything fails."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import write_image_folder, write_synthetic_fashion_mnist
from fitnas.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def lines(output: str) -> dict[str, str]:
    """check name -> its first line ('OK ...' or 'FAIL ...')."""
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("OK", "FAIL"):
            out[parts[1]] = line
    return out


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A DVC project folder whose data.root is a small synthetic Fashion-MNIST."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    (folder / ".dvc").mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(write_synthetic_fashion_mnist(tmp_path / "fm", n_train=20, n_test=10))
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FITNAS_TRACKING", raising=False)
    # dvc.yaml's `python` must be this interpreter, as in an activated venv.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_a_ready_project_passes_every_check(project):
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    found = lines(result.output)
    assert set(found) == {"params", "dataset", "torch", "python", "dvc", "mlflow"}
    assert all(line.startswith("OK") for line in found.values())
    assert "Fashion-MNIST IDX files in" in found["dataset"] and "torch " in found["torch"]
    assert f"sqlite:///{project / 'mlflow.db'}" in found["mlflow"]
    assert result.output.rstrip().endswith("ready to run: dvc repro")
    assert not (project / "mlflow.db").exists()  # the doctor only looks


def test_each_problem_is_named_with_its_fix(project, monkeypatch):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["root"] = str(project / "missing")
    if not __import__("torch").cuda.is_available():
        params["device"] = "cuda"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.rmtree(project / ".dvc")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    found = lines(result.output)
    assert found["dataset"].startswith("FAIL") and "does not exist" in found["dataset"]
    assert found["dvc"].startswith("FAIL") and "not a DVC repository" in found["dvc"]
    assert found["mlflow"].startswith("FAIL") and "the server does not answer" in found["mlflow"]
    assert "FITNAS_TRACKING=off" in result.output and "set data.root" in result.output
    if params.get("device") == "cuda":
        assert found["torch"].startswith("FAIL") and "set device: auto" in result.output
    assert "problem(s) to fix" in result.output


def test_invalid_params_and_opted_out_tracking(project, monkeypatch):
    (project / "params.yaml").write_text("supernet:\n  epochz: 3\n")
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    found = lines(result.output)
    assert found["params"].startswith("FAIL") and "did you mean supernet.epochs?" in result.output
    assert found["dataset"].startswith("FAIL") and "not checked until params.yaml is valid" in found["dataset"]
    assert found["mlflow"].startswith("OK") and "tracking off" in found["mlflow"]


def test_own_data_layouts_are_checked(project, tmp_path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["root"] = str(write_image_folder(tmp_path / "pets"))
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert "image folder" in lines(runner.invoke(app, ["doctor"]).output)["dataset"]
    shutil.rmtree(tmp_path / "pets" / "train" / "dog")
    shutil.rmtree(tmp_path / "pets" / "train" / "owl")
    found = lines(runner.invoke(app, ["doctor"]).output)
    assert found["dataset"].startswith("FAIL") and "1 class folder(s)" in found["dataset"]


def test_python_on_path_that_cannot_import_fitnas(project, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    found = lines(runner.invoke(app, ["doctor"]).output)
    assert found["python"].startswith("FAIL") and "cannot import fitnas" in found["python"]


def test_a_truncated_mlflow_db_fails_the_doctor(project):
    from test_tracking import truncated_store

    truncated_store(project)
    found = lines(runner.invoke(app, ["doctor"]).output)
    assert found["mlflow"].startswith("FAIL") and "is damaged" in found["mlflow"]


def test_a_scheme_without_a_store_fails_the_doctor(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://x")
    found = lines(runner.invoke(app, ["doctor"]).output)
    assert found["mlflow"].startswith("FAIL") and "no tracking store for the scheme 'ftp'" in found["mlflow"]


def test_an_empty_params_file_fails_the_doctor(project):
    (project / "params.yaml").write_text("")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1 and "params.yaml is empty" in lines(result.output)["params"]


def test_params_that_dvc_yaml_reads_but_the_file_lacks(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    del params["supernet"], params["threads"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    found = lines(runner.invoke(app, ["doctor"]).output)
    assert found["params"].startswith("OK")  # the schema fills the defaults in
    assert found["dvc"].startswith("FAIL") and "read supernet, threads from params.yaml, which lacks them" in found["dvc"]


def copy_of_the_code(folder: Path) -> None:
    for name in ("src", "stages"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def test_this_checkouts_code_runs(project):
    copy_of_the_code(project)  # the same code as the installed fitnas: fine
    assert lines(runner.invoke(app, ["doctor"]).output)["python"].startswith("OK")
    with (project / "src/fitnas/search.py").open("a") as f:
        f.write("# changed in this checkout\n")
    found = lines(runner.invoke(app, ["doctor"]).output)
    assert found["python"].startswith("FAIL") and "search.py differs" in found["python"]
    assert "not from this checkout's src/fitnas" in found["python"]


def test_each_stage_refuses_another_checkouts_code(project, capsys, monkeypatch):
    from fitnas.stages import prepare

    copy_of_the_code(project)
    (project / "stages/prepare.py").write_text((project / "stages/prepare.py").read_text() + "# edited\n")
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    with pytest.raises(SystemExit):
        prepare.main("params.yaml")
    err = capsys.readouterr().err
    assert err.startswith("error: fitnas runs from ") and "prepare.py differs" in err and len(err.splitlines()) == 1
    assert not (project / "data/prepared").exists()

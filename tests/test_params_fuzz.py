"""Property: whatever is done to params.yaml, doctor and prepare answer with a validation error or one clean
line (or run), never a traceback (issue 18).

Mutations: a key set to a value of another type or out of range (big and negative numbers, nan, inf, bools,
text, lists, sections), a key deleted or misspelt, a section replaced, the file re-encoded, cut short or
sprinkled with bytes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import ROOT, write_synthetic_fashion_mnist
from fitnas.cli import app
from fitnas.config import ConfigError, flatten, Params

runner = CliRunner()
KEYS = sorted(flatten(Params()))  # every dotted key of the schema
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in KEYS if "." in key})

values = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70), st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.5, 1.0, 1e-300, 1e300]),
    st.text(max_size=12), st.sampled_from(["", " ", "auto", "npz", "mobilenet", "/nonexistent", ".", "cuda"]),
    st.lists(st.integers(-2, 9), max_size=4), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _set(tree: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _delete(tree: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


@st.composite
def mutated(draw, base: dict) -> bytes:
    tree = yaml.safe_load(yaml.safe_dump(base))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "set", "set", "delete", "misspell", "section"]))
        key = draw(st.sampled_from(KEYS))
        if kind == "set":
            _set(tree, key, draw(values))
        elif kind == "delete":
            _delete(tree, draw(st.sampled_from([key, key.split(".")[0]])))
        elif kind == "misspell":
            _delete(tree, key)
            _set(tree, key + draw(st.sampled_from(["z", "_", "s"])), 1)
        else:
            _set(tree, draw(st.sampled_from(SECTIONS)), draw(values))
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1", "cut", "bytes"]))
    if encoding == "cut":
        raw = text.encode()
        return raw[: draw(st.integers(0, len(raw)))]
    if encoding == "bytes":
        raw = bytearray(text.encode())
        for _ in range(draw(st.integers(1, 4))):
            raw.insert(draw(st.integers(0, len(raw))), draw(st.integers(0, 255)))
        return bytes(raw)
    return (text + "data_note: café\n" if encoding == "latin-1" else text).encode(encoding, errors="replace")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    (folder / ".dvc").mkdir()
    return folder


def base_params(folder: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(root=str(write_synthetic_fashion_mnist(folder.parent / "fm", n_train=80, n_test=20)),
                          val_size=20)
    params["sample"].update(bn_batches=1, bn_batch_size=16)
    return params


def test_mutated_params_give_a_validation_error_or_one_clean_line(folder, monkeypatch, capsys):
    from fitnas.stages import prepare

    monkeypatch.chdir(folder)
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    base = base_params(folder)

    @settings(max_examples=int(os.environ.get("FITNAS_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(mutated(base))
    def check(content: bytes) -> None:
        (folder / "params.yaml").write_bytes(content)
        doctor = runner.invoke(app, ["doctor"])
        assert doctor.exception is None or isinstance(doctor.exception, SystemExit), doctor.exception
        assert doctor.exit_code in (0, 1) and "Traceback" not in doctor.output, doctor.output
        capsys.readouterr()
        try:
            prepare.main("params.yaml")
        except SystemExit as stop:
            err = capsys.readouterr().err
            assert stop.code == 1 and err.startswith("error: "), err
            first = err.splitlines()[0]
            if "problem(s):" not in first:  # a schema error lists its problems, one line each; anything else is one line
                assert len(err.strip().splitlines()) == 1, err
        else:
            assert (folder / "data/prepared/train.pt").is_file()
        finally:
            shutil.rmtree(folder / "data", ignore_errors=True)

    check()


def test_the_unmutated_base_runs(folder, monkeypatch):
    """The property's base is a valid configuration: prepare runs on it."""
    from fitnas.stages import prepare

    monkeypatch.chdir(folder)
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    (folder / "params.yaml").write_text(yaml.safe_dump(base_params(folder)))
    prepare.main("params.yaml")
    assert (folder / "data/prepared/val.pt").is_file()

"""dvc.yaml's code dependencies cover every module each stage imports (so DVC never calls a stale result fresh)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fitnas import deps

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ("dvc.yaml", "rankcheck/dvc.yaml")


def _stages():
    for pipeline in PIPELINES:
        spec = yaml.safe_load((ROOT / pipeline).read_text())
        for name, stage in spec["stages"].items():
            yield pytest.param(pipeline, stage, id=f"{pipeline}:{name}")


def _covered(path: Path, declared: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in declared)


@pytest.mark.parametrize("pipeline, stage", list(_stages()))
def test_stage_deps_cover_its_import_closure(pipeline, stage):
    script = stage["cmd"].split()[-1]
    declared = [str(d) for d in stage["deps"]]
    missing = [str(p.relative_to(ROOT)) for p in deps.closure([ROOT / script]) if not _covered(p, declared)]
    assert not missing, f"{pipeline}: stage `{stage['cmd']}` imports {missing} but its deps do not list them; add them"


def test_closure_follows_function_level_and_package_imports(tmp_path):
    closure = {p.relative_to(ROOT).as_posix() for p in deps.closure([ROOT / "stages/search.py"])}
    assert "src/fitnas/strategies.py" in closure  # a direct import
    assert "src/fitnas/predictors/gcn.py" in closure  # through the package's __init__
    assert "src/fitnas/pathscore.py" in closure  # through a module the package imports
    assert "src/fitnas/data/sources.py" not in closure  # the search reads no raw data


def test_a_batching_change_reaches_the_training_stages_only():
    batching = ROOT / "src/fitnas/data/batches.py"
    reached = {s: batching in deps.closure([ROOT / f"stages/{s}.py"]) for s in
               ("prepare", "supernet", "sample", "anchors", "fit", "latency", "search", "retrain")}
    assert reached == {"prepare": False, "supernet": True, "sample": True, "anchors": True, "fit": False, "latency": False,
                       "search": False, "retrain": True}


def test_idx_reader_is_not_in_the_supernet_resume_key():
    # A typo fix in the IDX reader must not discard resume checkpoints: the supernet never reads IDX files.
    assert ROOT / "src/fitnas/data/idx.py" not in deps.closure([ROOT / "stages/supernet.py"])

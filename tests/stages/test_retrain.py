"""The retrain stage: killed or stopped runs resume to the uninterrupted result; a diverging run stops cleanly."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal

import pytest
import torch
import yaml

from conftest import resume_files, run, run_and_signal, stage_command, stage_project

pytestmark = pytest.mark.slow

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A stage folder with a choice to retrain, trained once without interruption (the reference)."""
    folder = stage_project(tmp_path_factory.mktemp("stages") / "retrain")
    (folder / "results").mkdir()
    (folder / "results/choice.json").write_text(json.dumps({"arch": ARCH, "predicted_acc": 0.5}))
    run(stage_command("retrain"), folder)
    reference = folder / "reference"
    reference.mkdir()
    for path in ("metrics/retrain_history.csv", "metrics/final.json", "models/final.pt"):
        shutil.copy(folder / path, reference)
    return folder


def final(path) -> dict:
    """final.json without what is timed rather than computed (training seconds, the whole network's latencies)."""
    out = json.loads(path.read_text())
    return {k: v for k, v in out.items() if k != "train_seconds" and not k.endswith("_ms") or k == "latency_ms"}


def assert_same_as_reference(project) -> None:
    reference = project / "reference"
    assert (project / "metrics/retrain_history.csv").read_text() == (reference / "retrain_history.csv").read_text()
    assert final(project / "metrics/final.json") == final(reference / "final.json")
    got = torch.load(project / "models/final.pt", weights_only=True)["model"]
    want = torch.load(reference / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not resume_files(project)


def test_stopped_then_killed_retraining_resumes_to_the_uninterrupted_result(project):
    for path in ("models", "metrics", "plots"):
        shutil.rmtree(project / path, ignore_errors=True)
    # Ctrl-C as soon as the first epoch is saved (augmentation on: its random draws must resume too).
    stopped = run_and_signal(project, "retrain", signal.SIGINT)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr
    assert "SIGINT received: retrain epoch" in stopped.stderr and "Traceback" not in stopped.stderr
    (checkpoint,) = resume_files(project)
    assert torch.load(checkpoint, weights_only=True)["partial"]["steps"] >= 1

    killed = run_and_signal(project, "retrain", signal.SIGKILL, wait_for_change_of=checkpoint)
    assert killed.returncode == -signal.SIGKILL and "retrain: resuming from" in killed.stdout
    assert not (project / "metrics/final.json").exists()

    resumed = run(stage_command("retrain"), project)
    assert "retrain: resuming from" in resumed.stdout
    assert_same_as_reference(project)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(project):
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    # One step per epoch, and a learning rate that overflows the weights within a few steps.
    params["retrain"].update(lr=1e30, batch_size=2048, epochs=6)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = run(stage_command("retrain"), project, check=False)
    finally:
        (project / "params.yaml").write_text(original)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert re.search(r"error: loss became (nan|-?inf) at step 0 of retrain epoch [2-6]/6; lower the learning rate", result.stderr)
    assert "the last good checkpoint (epoch" in result.stderr
    kept = resume_files(project)
    assert len(kept) == 1 and str(kept[0].relative_to(project)) in result.stderr
    saved = torch.load(kept[0], weights_only=True)
    assert 1 <= saved["epoch"] < 6 and f"(epoch {saved['epoch']})" in result.stderr
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())
    assert not math.isnan(saved["history"][-1]["train_loss"])

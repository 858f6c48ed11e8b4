"""The supernet stage: killed or stopped runs resume to the uninterrupted result; two torchrun processes match one."""

from __future__ import annotations

import shutil
import signal

import pandas as pd
import pytest
import torch

from conftest import resume_files, run, run_and_signal, stage_command, stage_project

pytestmark = pytest.mark.slow


def state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_as_reference(project) -> None:
    reference = project / "reference"
    assert (project / "metrics/supernet_history.csv").read_text() == (reference / "supernet_history.csv").read_text()
    got, want = state(project / "models/supernet.pt"), state(reference / "supernet.pt")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert not resume_files(project), "the finished run removes its resume checkpoint"


def fresh_outputs(project) -> None:
    # As DVC does before it runs a stage: the outputs go, the resume folder stays.
    for path in ("models", "metrics", "plots"):
        shutil.rmtree(project / path, ignore_errors=True)


def test_stopped_then_killed_run_resumes_to_the_uninterrupted_result(supernet_project):
    project = supernet_project
    fresh_outputs(project)
    # SIGTERM as soon as the first epoch is saved: a checkpoint of the step it stopped at, a message, no traceback.
    stopped = run_and_signal(project, "supernet", signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "SIGTERM received: supernet epoch" in stopped.stderr and "run the stage again to resume" in stopped.stderr
    assert "Traceback" not in stopped.stderr and not (project / "models/supernet.pt").exists()
    saved = torch.load(resume_files(project)[0], weights_only=True)
    assert saved["partial"]["steps"] >= 1  # mid-epoch, not at the epoch's start
    first_stop = (saved["epoch"], saved["partial"]["steps"])

    # The resumed run, killed outright once it has saved a later epoch: at most that epoch is lost.
    (checkpoint,) = resume_files(project)
    killed = run_and_signal(project, "supernet", signal.SIGKILL, wait_for_change_of=checkpoint)
    assert killed.returncode == -signal.SIGKILL
    assert "supernet: resuming from .fitnas/resume/" in killed.stdout
    assert f"{first_stop[0]} of 3 epochs done, {first_stop[1]} steps into epoch {first_stop[0] + 1}" in killed.stdout
    saved = torch.load(resume_files(project)[0], weights_only=True)
    assert saved["epoch"] > first_stop[0] and saved["partial"]["steps"] == 0  # an epoch-end checkpoint

    resumed = run(stage_command("supernet"), project)
    assert f"{saved['epoch']} of 3 epochs done" in resumed.stdout
    assert_same_as_reference(project)


def test_two_processes_match_one_on_the_same_global_batch(supernet_project):
    """torchrun with 2 gloo processes, each half of every batch of 128, against one process.

    The gradients are exactly the single-process ones except for BatchNorm: each rank normalises its
    own 64 images (SyncBatchNorm needs a GPU), a small per-step difference that compounds over the
    15 steps. Stated tolerance: each epoch's mean training loss within 1% (relative) and accuracy
    within 3 points; the weights within 10% in relative L2 norm. Without BatchNorm the two agree to
    float rounding (tests/test_distributed.py).
    """
    project = supernet_project
    fresh_outputs(project)
    run(stage_command("supernet", processes=2), project)
    one = pd.read_csv(project / "reference/supernet_history.csv")
    two = pd.read_csv(project / "metrics/supernet_history.csv")
    assert len(two) == len(one) == 3
    assert two.train_loss.to_numpy() == pytest.approx(one.train_loss.to_numpy(), rel=0.01)
    assert two.train_acc.to_numpy() == pytest.approx(one.train_acc.to_numpy(), abs=0.03)
    got, want = state(project / "models/supernet.pt"), state(project / "reference/supernet.pt")
    weights = [k for k in want if "running" not in k and want[k].is_floating_point()]
    diff = sum((got[k] - want[k]).pow(2).sum() for k in weights).sqrt() / sum(want[k].pow(2).sum() for k in weights).sqrt()
    assert 0 < diff < 0.1

    # Rank 0 alone logs: one MLflow run of this execution, recording both processes.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fitnas")
    runs = client.search_runs([experiment.experiment_id], "tags.`fitnas.stage` = 'supernet'", order_by=["attributes.start_time DESC"])
    assert runs[0].data.params["processes"] == "2" and runs[0].info.status == "FINISHED"
    assert sum(r.data.params.get("processes") == "2" for r in runs) == 1


def test_the_threads_param_not_the_environment_decides_the_weights(supernet_project):
    """`threads` in params.yaml sets torch's threads whatever OMP_NUM_THREADS says, so a machine whose default
    is 2 threads reproduces the reference run bit for bit (issue 18)."""
    project = supernet_project
    fresh_outputs(project)
    run(stage_command("supernet"), project, env_extra={"OMP_NUM_THREADS": "2", "FITNAS_TRACKING": "off"})
    assert_same_as_reference(project)
    import json

    assert json.loads((project / "metrics/supernet.json").read_text())["threads"] == 1


def test_strict_fairness_trains_a_supernet_the_sample_stage_scores(tmp_path):
    project = stage_project(tmp_path / "fair", {"supernet": {"epochs": 1, "sampling": "fair"}, "sample": {"proxies": []}})
    result = run(stage_command("supernet"), project)
    assert "supernet epoch 1/1" in result.stdout
    run(stage_command("sample"), project)
    table = pd.read_csv(project / "results/samples.csv")
    assert len(table) == 12 and table.supernet_acc.between(0, 1).all()


def test_an_ensemble_trains_each_member_from_its_seed_and_scores_are_their_mean(tmp_path):
    import torch

    from fitnas.spaces import nb201

    project = stage_project(tmp_path / "ensemble", {"supernet": {"epochs": 1, "ensemble": 2}, "sample": {"proxies": []}})
    result = run(stage_command("supernet"), project)
    assert "supernet 1/2 epoch 1/1" in result.stdout and "supernet 2/2 epoch 1/1" in result.stdout
    saved = torch.load(project / "models/supernet.pt", weights_only=True)
    assert len(saved["members"]) == 1
    first, second = saved["model"], saved["members"][0]
    assert any(not torch.equal(first[k], second[k]) for k in first)  # other seed, other weights
    history = pd.read_csv(project / "metrics/supernet_history.csv")
    assert sorted(history.member) == [0, 1]
    assert not resume_files(project)

    # The ensemble's score is the mean of its members' scores, each calibrated on the same batches.
    both = _scorer(project, saved)
    alone = [_scorer(project, {**saved, "model": weights, "members": []}) for weights in (first, second)]
    arch = nb201.parse(nb201.EXAMPLE)
    loss, acc = both.score(arch, 3)
    members = [scorer.score(arch, 3) for scorer in alone]
    assert acc == pytest.approx(sum(m[1] for m in members) / 2)
    assert loss == pytest.approx(sum(m[0] for m in members) / 2)


def test_few_shot_splits_the_supernet_by_one_slot_and_scores_with_the_matching_shot(tmp_path):
    import torch

    from fitnas.spaces import nb201

    project = stage_project(tmp_path / "fewshot", {"supernet": {"epochs": 1, "few_shot_slot": 2, "few_shot_epochs": 1},
                                                   "sample": {"proxies": []}})
    result = run(stage_command("supernet"), project)
    assert "supernet shot nor_conv_3x3 epoch 1/1" in result.stdout
    saved = torch.load(project / "models/supernet.pt", weights_only=True)
    shots = saved["few_shot"]
    assert shots["slot"] == 2 and shots["ops"] == list(range(len(nb201.OPS))) and len(shots["models"][0]) == 5
    assert not resume_files(project)

    scorer = _scorer(project, saved)
    arch = nb201.parse(nb201.EXAMPLE)  # slot 2 takes avg_pool_3x3
    own = {**saved, "model": shots["models"][0][arch[2]]}
    del own["few_shot"]
    alone = _scorer(project, own)
    assert scorer.score(arch, 1) == alone.score(arch, 1)

    bad = stage_project(tmp_path / "badslot", {"supernet": {"few_shot_slot": 6}})
    failed = run(stage_command("supernet"), bad, check=False)
    assert failed.returncode != 0 and "supernet.few_shot_slot = 6, but space 'nb201' has slots 0-5" in failed.stderr


def _scorer(project, saved: dict):
    """The sample stage's scorer for this checkpoint dict, on the stage folder's data."""
    import torch

    from fitnas import config, scoring, spaces
    from fitnas.data.splits import load_split

    p = config.load(project / "params.yaml")
    train, val = load_split(project / "data/prepared/train.pt"), load_split(project / "data/prepared/val.pt")
    return scoring.SupernetScorer(p, spaces.get(p.space), torch.device("cpu"), train, val, saved, project / "models/supernet.pt")

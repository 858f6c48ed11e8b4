"""Resume checkpoints: keys that change with what a result depends on, random states that round-trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fitnas import checkpoints


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_random_states_round_trip_through_a_checkpoint(tmp_path):
    resume = checkpoints.Resume("stage", "k", tmp_path)
    random.gauss(0, 1)  # leaves a cached gauss value in Python's state
    resume.save({"epoch": 1})
    expected = draws()
    draws()
    saved = resume.load()
    checkpoints.set_rng_state(saved["rng"])
    assert draws() == expected and saved["epoch"] == 1


def test_resume_key_follows_settings_and_file_contents(tmp_path):
    code = tmp_path / "train.py"
    code.write_text("a = 1\n")
    key = checkpoints.resume_key("supernet", {"lr": 0.1}, [code])
    assert key == checkpoints.resume_key("supernet", {"lr": 0.1}, [code])
    assert key != checkpoints.resume_key("supernet", {"lr": 0.2}, [code])
    assert key != checkpoints.resume_key("retrain", {"lr": 0.1}, [code])
    code.write_text("a = 2\n")
    assert key != checkpoints.resume_key("supernet", {"lr": 0.1}, [code])


def test_clear_removes_the_stage_checkpoints_only(tmp_path):
    for stage, key in (("supernet", "a"), ("supernet", "b"), ("retrain", "a")):
        checkpoints.Resume(stage, key, tmp_path).save({})
    checkpoints.Resume("supernet", "a", tmp_path).clear()
    assert [p.name for p in tmp_path.iterdir()] == ["retrain-a.pt"]
    assert checkpoints.Resume("supernet", "a", tmp_path).load() is None


def test_a_damaged_checkpoint_says_how_to_start_over(tmp_path):
    resume = checkpoints.Resume("supernet", "a", tmp_path)
    resume.path.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="delete it to start over"):
        resume.load()

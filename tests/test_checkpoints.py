"""Checkpoints: missing, truncated, foreign or from other settings -> one clear error; never unpickled code.

Resume checkpoints: keys that change with what a result depends on, random states that round-trip.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from fitnas import checkpoints, config

from fitnas.data import splits
from fitnas.checkpoints import CheckpointError
from fitnas.spaces import nb201


def save_supernet(path, channels=4, cells=1, space="nb201"):
    shape = nb201.NetworkShape(channels, cells, 1, 10)
    net = nb201.build_supernet(shape)
    torch.save({"space": space, "shape": vars(shape), "epoch": 1, "model": net.state_dict()}, path)
    return net


def test_round_trip_and_matching_settings(tmp_path):
    path = tmp_path / "supernet.pt"
    net = save_supernet(path)
    saved = checkpoints.load(path, "supernet", space="nb201", shape={"channels": (4, "supernet.channels")})
    fresh = nb201.build_supernet(nb201.NetworkShape(4, 1, 1, 10))
    checkpoints.load_weights(fresh, saved, path, "supernet")
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_missing_file_says_which_stage_to_run(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist; re-run `dvc repro supernet`"):
        checkpoints.load(tmp_path / "nope.pt", "supernet")


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.95])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, keep):
    path = tmp_path / "supernet.pt"
    save_supernet(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match=r"supernet.pt is damaged or not a torch checkpoint .*re-run `dvc repro supernet`"):
        checkpoints.load(path, "supernet")
    assert path.is_file()  # the damaged file is left for the user to inspect, not deleted


def test_a_file_of_something_else_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "supernet.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a fitnas checkpoint"):
        checkpoints.load(path, "supernet")


def test_another_space_names_space_name(tmp_path):
    path = tmp_path / "supernet.pt"
    save_supernet(path, space="darts")
    with pytest.raises(CheckpointError, match=r"trained for search space 'darts', but params.yaml has space.name: 'nb201'"):
        checkpoints.load(path, "supernet", space="nb201")


def test_another_shape_names_the_param(tmp_path):
    path = tmp_path / "supernet.pt"
    save_supernet(path, channels=4)
    with pytest.raises(CheckpointError, match=r"channels = 4, but supernet.channels gives 8.*dvc repro supernet"):
        checkpoints.load(path, "supernet", shape={"channels": (8, "supernet.channels")})


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    path = tmp_path / "supernet.pt"
    save_supernet(path, channels=4)
    saved = checkpoints.load(path, "supernet")
    other = nb201.build_supernet(nb201.NetworkShape(8, 1, 1, 10))
    with pytest.raises(CheckpointError, match="weights do not fit the network"):
        checkpoints.load_weights(other, saved, path, "supernet")


class Planted:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (os.system, ("touch planted-by-pickle",))


def test_pickled_objects_are_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "supernet.pt"
    torch.save({"model": {}, "payload": Planted()}, path)
    with pytest.raises(CheckpointError, match="is damaged or not a torch checkpoint") as err:
        checkpoints.load(path, "supernet")
    assert not (tmp_path / "planted-by-pickle").exists()
    assert "weights_only=False" not in str(err.value)


# Fixed bytes and ids: pytest-xdist's workers must collect the same test names.
@pytest.mark.parametrize("content", [b"garbage, not a checkpoint\n" * 40,
                                     b"\x80\x02}q\x00." + np.random.default_rng(0).bytes(64),
                                     b"PK\x03\x04" + b"\0" * 90], ids=["text", "pickle-header", "zip-header"])
def test_a_garbage_checkpoint_gets_our_message_never_the_unsafe_advice(tmp_path, content):
    """torch's own text is many lines and suggests weights_only=False (issue 18)."""
    from fitnas.data.splits import load_split
    from fitnas.errors import DataError

    path = tmp_path / "supernet.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        checkpoints.load(path, "supernet")
    message = str(err.value)
    assert message.startswith(f"{path} is damaged or not a torch checkpoint") and "\n" not in message
    assert "weights_only=False" not in message and "dvc repro supernet" in message and f"dvc checkout {path}" in message
    resume = checkpoints.Resume("supernet", "k", tmp_path)
    resume.path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        resume.load()
    assert "weights_only" not in str(err.value).replace("read as weights only", "") and "delete it to start over" in str(err.value)
    with pytest.raises(DataError) as err:
        load_split(path)
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)


def test_the_scorer_refuses_a_supernet_trained_with_other_settings(tmp_path, monkeypatch):
    """What `fitnas sample` says when supernet.channels changed but the supernet was not retrained."""
    from fitnas import scoring
    from fitnas.pipeline import SUPERNET, TRAIN, VAL

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for path in (TRAIN, VAL):
        splits.save_split(path, rng.integers(0, 255, (20, 12, 12)), np.arange(20) % 10, [str(k) for k in range(10)])
    SUPERNET.parent.mkdir()
    save_supernet(SUPERNET, channels=4)
    p = config.Params.model_validate({"supernet": {"channels": 8}})
    with pytest.raises(CheckpointError, match="channels = 4, but supernet.channels gives 8"):
        scoring.from_files(p, nb201.SPACE, torch.device("cpu"), SUPERNET, TRAIN, VAL)
    p = config.Params.model_validate({"supernet": {"channels": 4}})
    scorer = scoring.from_files(p, nb201.SPACE, torch.device("cpu"), SUPERNET, TRAIN, VAL)
    loss, acc = scorer.score(nb201.parse(nb201.EXAMPLE))
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0


# --------------------------------------------------------------------------
# Resume checkpoints


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

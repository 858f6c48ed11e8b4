"""Loading what the stages saved, with errors that say which stage to re-run.

Checkpoints are read with `weights_only=True`: torch then rebuilds tensors and
plain containers only and never unpickles arbitrary objects, so a file planted
in models/ cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from fitnas.errors import CheckpointError
from fitnas.util import save_atomic


def damaged(path: Path, err: Exception) -> str:
    """Why torch could not read `path`, in our words.

    torch's own text runs to many lines and advises re-running with weights_only=False, which
    would unpickle whatever the file holds: never repeated to the user.
    """
    return f"{path} is damaged or not a torch checkpoint ({type(err).__name__}; it is read as weights only, never unpickled)"


def load(
    path: Path,
    stage: str,
    space: str | None = None,
    shape: dict[str, tuple[object, str]] | None = None,
    weights: str | None = "model",
) -> dict:
    """The checkpoint at `path`, checked against what the caller is about to build.

    space: the search space the params name; shape: for each saved shape field,
    (the value the params imply, the param or input it comes from). A mismatch
    names the field, both values and the stage to re-run. weights: the key that
    holds the weights (a state dict, or a list of them for an ensemble); None for a
    checkpoint that may hold none (a saved predictor: its kind says what it holds).
    """
    fix = f"re-run `dvc repro {stage}` to recreate it"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; {fix}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or truncated archive
        raise CheckpointError(f"{damaged(path, err)}; {fix} (or `dvc checkout {path}` to restore DVC's copy)") from None
    if not isinstance(saved, dict) or (weights is not None and (not isinstance(saved.get(weights), (dict, list)) or not saved[weights])):
        raise CheckpointError(f"{path} is not a fitnas checkpoint (no model weights in it); {fix}")
    if space is not None and saved.get("space") != space:
        raise CheckpointError(
            f"{path} was trained for search space {saved.get('space')!r}, but params.yaml has "
            f"space.name: {space!r}; {fix}"
        )
    if shape:
        stored = saved.get("shape")
        if not isinstance(stored, dict):
            raise CheckpointError(f"{path} does not record the network's shape; {fix}")
        for field, (want, source) in shape.items():
            if field in stored and stored[field] != want:
                raise CheckpointError(
                    f"{path} holds a network with {field} = {stored[field]}, but {source} gives {want}; "
                    f"it was trained with other settings or data: {fix}"
                )
    return saved


def load_weights(module: torch.nn.Module, saved: dict, path: Path, stage: str) -> None:
    """module.load_state_dict(saved['model']), with a clear error when the weights do not fit."""
    try:
        module.load_state_dict(saved["model"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: its weights do not fit the network ({first}); re-run `dvc repro {stage}` to recreate it"
        ) from None


# --------------------------------------------------------------------------
# Resuming an interrupted stage

# Outside every DVC output (DVC deletes a stage's outputs before running it) and ignored by git and DVC.
RESUME_DIR = Path(".fitnas/resume")


def resume_key(stage: str, settings: dict, files: list[Path]) -> str:
    """A digest of what a stage's result depends on: its settings and the content of its input and code files.

    A run resumes only from a checkpoint with the same key, so a changed param, input or code never
    continues a stale run.
    """
    digest = hashlib.sha256(stage.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(Path(path).name.encode())  # the name only: an installed copy of the code keys the same
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def rng_state() -> dict:
    """Python's, NumPy's and torch's global random states, in types `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    # random.setstate wants tuples where a round trip through a checkpoint may give lists.
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class Resume:
    """The resume checkpoint of one stage: written at every epoch end and when a stop is requested."""

    def __init__(self, stage: str, key: str, folder: Path = RESUME_DIR):
        self.stage = stage
        self.path = Path(folder) / f"{stage}-{key}.pt"

    def load(self) -> dict | None:
        """The saved state, or None when there is nothing to resume."""
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a damaged archive
            raise CheckpointError(f"resume checkpoint {damaged(self.path, err)}; delete it to start over") from None

    def save(self, state: dict) -> None:

        save_atomic(state | {"rng": rng_state()}, self.path)

    def clear(self) -> None:
        """The stage finished: nothing left to resume, nor from runs of it under other settings."""
        for path in self.path.parent.glob(f"{self.stage}-*.pt"):
            path.unlink(missing_ok=True)


def training_state(model, optimizer, scheduler) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def restore_training(saved: dict, model, optimizer, scheduler) -> None:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])

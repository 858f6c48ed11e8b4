"""Loading what the stages saved, with errors that say which stage to re-run.

Checkpoints are read with `weights_only=True`: torch then rebuilds tensors and
plain containers only and never unpickles arbitrary objects, so a file planted
in models/ cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import torch


class CheckpointError(ValueError):
    pass


def load(
    path: Path,
    stage: str,
    space: str | None = None,
    shape: dict[str, tuple[object, str]] | None = None,
) -> dict:
    """The checkpoint at `path`, checked against what the caller is about to build.

    space: the search space the params name; shape: for each saved shape field,
    (the value the params imply, the param or input it comes from). A mismatch
    names the field, both values and the stage to re-run.
    """
    fix = f"re-run `dvc repro {stage}` to recreate it"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; {fix}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or truncated archive
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err}); {fix}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
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

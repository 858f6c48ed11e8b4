"""Loading what the stages saved, with errors that say which stage to re-run."""

from __future__ import annotations

from pathlib import Path

import torch


class CheckpointError(ValueError):
    pass


def load(path: Path, stage: str) -> dict:
    fix = f"re-run `dvc repro {stage}` to recreate it"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged archive
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err}); {fix}") from None

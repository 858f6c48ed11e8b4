"""Small helpers every layer uses: progress bars, atomic saves, JSON metrics files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm import tqdm


def progress(iterable, desc: str, total: int | None = None):
    """A progress bar on a terminal, silent in logs (tqdm's disable=None)."""
    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False, dynamic_ncols=True)


def save_atomic(obj: object, path: Path) -> None:
    """torch.save through a temporary file so an interrupted write never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path

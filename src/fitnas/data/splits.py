"""Splits: the seeded validation split, the prepared splits as the prepare stage stores them, subsets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fitnas.checkpoints import damaged
from fitnas.errors import DataError



# Fixed statistics of the Fashion-MNIST training pixels (scaled to [0, 1]),
# so every split and every run normalises identically.
MEAN = 0.2860
STD = 0.3530


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation of indices in which every prefix is class-balanced.

    Shuffle, then interleave the classes by each sample's rank within its own
    class, so that taking the first k indices gives every class a share
    proportional to its size (up to rounding).
    """
    perm = rng.permutation(len(labels))
    shuffled = labels[perm]
    keys = np.empty(len(labels), dtype=np.float64)
    for cls in np.unique(shuffled):
        where = np.flatnonzero(shuffled == cls)
        keys[where] = (np.arange(len(where)) + 0.5) / len(where)
    return perm[np.argsort(keys, kind="stable")]


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, val_x, val_y): a seeded, class-balanced hold-out of val_size."""
    if len(x) != len(y):
        raise DataError(f"{len(x)} images but {len(y)} labels")
    if not 0 < val_size < len(x):
        raise DataError(
            f"data.val_size must be between 1 and {len(x) - 1} (the training set has "
            f"{len(x)} samples), got {val_size}; lower data.val_size in params.yaml"
        )
    order = _stratified_order(np.asarray(y), np.random.default_rng(seed))
    # Sorted so that both parts keep the original file order.
    val_idx = np.sort(order[:val_size])
    train_idx = np.sort(order[val_size:])
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


# --------------------------------------------------------------------------
# Any dataset: Fashion-MNIST or the user's own


@dataclass
class Split:
    """One prepared split: images uint8 (N, C, H, W), labels int64 (N,).

    mean and std (one per channel, pixels scaled to [0, 1]) normalise the
    images; Fashion-MNIST uses fixed figures, other data its training pixels'.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] = (MEAN,)
    std: tuple[float, ...] = (STD,)

    def __len__(self) -> int:
        return len(self.labels)


def save_split(
    path: str | Path,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    classes: list[str],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> None:
    """Store images (N, H, W) or (N, C, H, W) and labels (N,) for `load_split`.

    mean/std: per-channel normalisation; None keeps Fashion-MNIST's (and writes
    nothing for it, so Fashion-MNIST splits stay byte-identical to older ones).
    """
    path = Path(path)
    images = torch.as_tensor(np.asarray(x), dtype=torch.uint8)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if images.ndim != 4 or len(images) != len(labels) or labels.ndim != 1:
        raise DataError(
            f"cannot save {path}: images {tuple(images.shape)} and labels "
            f"{tuple(labels.shape)} do not describe one split"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so an interrupted stage never leaves a half file that
    # a later stage would take for a finished one.
    tmp = path.with_name(f".{path.name}.part")
    # Standard strides (numpy gives size-1 axes others), so equal data always saves to equal bytes.
    images = torch.empty(images.shape, dtype=torch.uint8).copy_(images)
    payload = {"images": images, "labels": labels, "classes": list(classes)}
    if mean is not None and std is not None:
        if not len(mean) == len(std) == images.shape[1]:
            raise DataError(f"cannot save {path}: {len(mean)} means and {len(std)} stds for {images.shape[1]} channels")
        payload |= {"mean": [float(m) for m in mean], "std": [float(v) for v in std]}
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_split(path: str | Path) -> Split:
    """Read a split written by `save_split`."""
    path = Path(path)
    fix = "re-run `dvc repro prepare` to recreate it"
    if not path.is_file():
        raise DataError(f"{path} does not exist; {fix}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged archive
        raise DataError(f"{damaged(path, exc)}; {fix}") from None

    if not isinstance(data, dict) or not {"images", "labels", "classes"} <= data.keys():
        raise DataError(f"{path} is not a saved split (missing keys); {fix}")
    images, labels, classes = data["images"], data["labels"], data["classes"]
    if (
        not isinstance(images, torch.Tensor)
        or images.dtype != torch.uint8
        or images.ndim != 4
        or not isinstance(labels, torch.Tensor)
        or labels.dtype != torch.int64
        or labels.shape != (len(images),)
        or not isinstance(classes, list)
    ):
        raise DataError(f"{path} holds tensors of the wrong type or shape; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{path} has labels outside 0..{len(classes) - 1}; {fix}")
    mean, std = data.get("mean", [MEAN]), data.get("std", [STD])
    channels = images.shape[1]
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == channels
            and all(isinstance(v, float) for v in mean + std) and all(v > 0 for v in std)):
        raise DataError(f"{path} has normalisation statistics that do not fit its {channels} channel(s); {fix}")
    return Split(images=images, labels=labels, classes=[str(c) for c in classes], mean=tuple(mean), std=tuple(std))


def subset_indices(split: Split, n: int, seed: int) -> np.ndarray:
    """The sorted indices of `subset(split, n, seed)`: a seeded, class-balanced draw of n (every index if n >= the size)."""
    if n <= 0:
        raise DataError(f"subset size must be positive, got {n}")
    if n >= len(split):
        return np.arange(len(split))
    return np.sort(_stratified_order(split.labels.numpy(), np.random.default_rng(seed))[:n])


def subset(split: Split, n: int, seed: int) -> Split:
    """A seeded, class-balanced subset of n samples (the whole split if n >= its size)."""
    idx = subset_indices(split, n, seed)
    if len(idx) == len(split):
        return split
    idx = torch.from_numpy(idx)
    return Split(split.images[idx], split.labels[idx], list(split.classes), split.mean, split.std)


# --------------------------------------------------------------------------
# Batches


def normalise(
    images: torch.Tensor, mean: tuple[float, ...] = (MEAN,), std: tuple[float, ...] = (STD,)
) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) to the float inputs the networks see, per channel."""
    if len(mean) == 1:
        return (images.float() / 255.0 - mean[0]) / std[0]
    shape = (1, len(mean), 1, 1)
    return (images.float() / 255.0 - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)

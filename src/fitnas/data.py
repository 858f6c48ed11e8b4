"""The dataset layer: Fashion-MNIST from IDX files to in-memory batches.

The path of the data, read top to bottom:

1. ``find_dataset`` finds a folder holding the four IDX files (a configured
   root, the Debian package, an earlier download, or a fresh download).
2. ``load_fashion_mnist`` reads them strictly into uint8 arrays.
3. ``split_train_val`` carves a seeded validation set out of the training set.
4. ``save_split`` / ``load_split`` store the splits as the ``prepare`` stage's
   outputs, so later stages never touch the raw files.
5. ``Batches`` (via ``loader``) serves normalised, optionally augmented
   batches from one float tensor held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The data is missing or malformed; the message says how to fix it."""


FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# Where `apt-get install dataset-fashion-mnist` puts the (gzipped) files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# md5 of the official .gz files, as published in the dataset's README. The
# Debian package recompresses its copies, so these only apply to downloads.
OFFICIAL_MD5: dict[str, str] = {
    TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
    TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
    TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
}

DOWNLOAD_TIMEOUT_S = 20.0

# Fixed statistics of the Fashion-MNIST training pixels (scaled to [0, 1]),
# so every split and every run normalises identically.
MEAN = 0.2860
STD = 0.3530

# IDX type code for unsigned bytes, the only type the MNIST family uses.
_IDX_UBYTE = 0x08


# --------------------------------------------------------------------------
# IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or .gz) of unsigned bytes into a uint8 array."""
    path = Path(path)
    fix = f"delete {path} and fetch it again (or reinstall the package it came from)"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        # gzip reports a cut-off or damaged archive as EOFError/BadGzipFile.
        raise DataError(f"{path}: cannot read ({exc}); {fix}") from exc

    if len(data) < 4:
        raise DataError(f"{path}: truncated, only {len(data)} bytes, no IDX header; {fix}")
    zero0, zero1, dtype_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{path}: wrong magic number {data[:4].hex()} (an IDX file starts with "
            f"two zero bytes); not an IDX file, or a compressed file without a .gz "
            f"suffix; {fix}"
        )
    if dtype_code != _IDX_UBYTE:
        raise DataError(
            f"{path}: IDX type code 0x{dtype_code:02x}, expected 0x08 (unsigned byte); {fix}"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; {fix}")

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated inside the header; {fix}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(data) - header_size
    if actual < expected:
        raise DataError(
            f"{path}: truncated, header {dims} needs {expected} bytes of data but "
            f"the file has {actual}; {fix}"
        )
    if actual > expected:
        raise DataError(
            f"{path}: {actual - expected} unexpected bytes after the data declared by "
            f"header {dims}; {fix}"
        )
    # Copy so the array owns writable memory (frombuffer over bytes is read-only,
    # which torch.from_numpy warns about).
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzipped if the name ends in .gz."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


# --------------------------------------------------------------------------
# Finding the files


def _locate(folder: Path, name: str) -> Path | None:
    """The plain or gzipped copy of `name` in `folder`, if either exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(folder: str | Path) -> list[str]:
    """Names of the four IDX files that `folder` lacks (plain or .gz)."""
    folder = Path(folder)
    return [name for name in FILE_NAMES if _locate(folder, name) is None]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_fashion_mnist(
    dest: str | Path,
    base_url: str = OFFICIAL_URL,
    checksums: dict[str, str] = OFFICIAL_MD5,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download the missing .gz files into `dest`, each verified against its md5.

    Each file is written under a temporary name and only renamed once its
    checksum matches, so an interrupted or corrupted download never looks like
    a finished one to the next run.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not base_url.endswith("/"):
        base_url += "/"
    for name in FILE_NAMES:
        if _locate(dest, name) is not None:
            continue
        url = f"{base_url}{name}.gz"
        final = dest / f"{name}.gz"
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.gz.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
            got = _md5(tmp)
            if got != checksums[name]:
                raise DataError(
                    f"checksum mismatch for {url}: md5 {got}, expected {checksums[name]}"
                )
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("downloaded %s", final)
    return dest


def find_dataset(
    root: str | None,
    download_dir: Path,
    *,
    system_dir: Path = DEBIAN_DIR,
    base_url: str = OFFICIAL_URL,
    checksums: dict[str, str] = OFFICIAL_MD5,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """The folder holding the four Fashion-MNIST IDX files.

    Tried in order: `root` (the user's explicit choice, so a wrong one is an
    error rather than silently replaced by another copy), `system_dir` (the
    Debian package), files already in `download_dir`, and finally a download
    into `download_dir`.
    """
    names = ", ".join(FILE_NAMES)
    if root is not None and str(root).strip():
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"data.root is set to {folder}, which is not a folder; point it at a "
                f"folder holding {names} (each plain or .gz), or remove data.root to "
                f"use the Debian package or a download"
            )
        missing = missing_files(folder)
        if missing:
            raise DataError(
                f"data.root is set to {folder}, but it lacks {', '.join(missing)} "
                f"(plain or .gz); add them, or remove data.root to use the Debian "
                f"package or a download"
            )
        return folder

    system_dir = Path(system_dir)
    if not missing_files(system_dir):
        return system_dir

    download_dir = Path(download_dir)
    if download_dir.is_dir() and not missing_files(download_dir):
        return download_dir

    try:
        return download_fashion_mnist(download_dir, base_url, checksums, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # OSError covers URLError, HTTPError, socket timeouts and disk errors;
        # ValueError a malformed URL and DataError (a ValueError) a bad checksum.
        reason = exc
    raise DataError(
        f"Fashion-MNIST not found. Fix one of: "
        f"1) set data.root in params.yaml to a folder with the four IDX files "
        f"({names}, each plain or .gz), "
        f"2) install the Debian package: sudo apt-get install dataset-fashion-mnist "
        f"(puts them in {system_dir}/), "
        f"3) allow downloading from {base_url} into {download_dir} (failed: {reason})"
    ) from reason


# --------------------------------------------------------------------------
# Loading and splitting


def load_fashion_mnist(
    folder: str | Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y): images (N, 28, 28) and labels (N,), uint8."""
    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)} (plain or .gz)")

    arrays = {}
    for name in FILE_NAMES:
        path = _locate(folder, name)
        assert path is not None
        arrays[name] = read_idx(path)

    for images_name, labels_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images, labels = arrays[images_name], arrays[labels_name]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(
                f"{folder / images_name}: images of shape {images.shape}, expected "
                f"(N, 28, 28); is this really Fashion-MNIST?"
            )
        if labels.ndim != 1:
            raise DataError(
                f"{folder / labels_name}: labels of shape {labels.shape}, expected (N,)"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{folder}: {len(images)} images in {images_name} but {len(labels)} "
                f"labels in {labels_name}; the files come from different sets"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(
                f"{folder / labels_name}: label {int(labels.max())} outside 0..9"
            )
    return tuple(arrays[name] for name in FILE_NAMES)  # type: ignore[return-value]


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
            f"val_size must be between 1 and {len(x) - 1} (the training set has "
            f"{len(x)} samples), got {val_size}"
        )
    order = _stratified_order(np.asarray(y), np.random.default_rng(seed))
    # Sorted so that both parts keep the original file order.
    val_idx = np.sort(order[:val_size])
    train_idx = np.sort(order[val_size:])
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


# --------------------------------------------------------------------------
# Stored splits


@dataclass
class Split:
    """One prepared split: images uint8 (N, 1, H, W), labels int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def save_split(
    path: str | Path,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    classes: list[str],
) -> None:
    """Store images (N, H, W) or (N, 1, H, W) and labels (N,) for `load_split`."""
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
    torch.save(
        {"images": images.contiguous(), "labels": labels, "classes": list(classes)}, tmp
    )
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
        raise DataError(f"{path} is unreadable ({exc}); {fix}") from exc

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
    return Split(images=images, labels=labels, classes=[str(c) for c in classes])


def subset(split: Split, n: int, seed: int) -> Split:
    """A seeded, class-balanced subset of n samples (the whole split if n >= its size)."""
    if n <= 0:
        raise DataError(f"subset size must be positive, got {n}")
    if n >= len(split):
        return split
    order = _stratified_order(split.labels.numpy(), np.random.default_rng(seed))
    idx = torch.from_numpy(np.sort(order[:n]))
    return Split(images=split.images[idx], labels=split.labels[idx], classes=list(split.classes))


# --------------------------------------------------------------------------
# Batches


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to the float inputs the networks see."""
    return (images.float() / 255.0 - MEAN) / STD


class Batches:
    """Re-iterable batches of (normalised images, labels) from one in-memory split.

    Every `iter()` is one epoch. The order and the augmentation of epoch e
    depend only on (seed, e), so a run is reproducible and can resume at any
    epoch via `set_epoch`.
    """

    PAD = 2

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        seed: int,
        device: torch.device | str = "cpu",
        augment: bool = False,
        drop_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # Converted once: per-batch conversion would dominate a small CPU run.
        self.x = normalise(split.images)
        self.y = split.labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.augment = augment
        self.drop_last = drop_last
        self.epoch = 0
        # Padding must look like black background after normalisation,
        # as if the raw image had been padded with zero pixels.
        self._fill = (0.0 - MEAN) / STD
        if self.device.type == "cuda":
            # The whole split lives on the GPU (Fashion-MNIST's 54k images: ~170 MB) and batches
            # are gathered there: no host-to-device copy per step.
            self.x, self.y = self.x.to(self.device), self.y.to(self.device)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next `iter()` produce epoch `epoch` (for resuming)."""
        self.epoch = epoch

    def _generator(self, epoch: int) -> torch.Generator:
        # SeedSequence mixes (seed, epoch) so nearby seeds give unrelated streams.
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = self._generator(self.epoch)
        self.epoch += 1
        n = len(self.y)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size].to(self.x.device)
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = self._augment(xb, gen)
            yield (
                xb.to(self.device, non_blocking=True),
                yb.to(self.device, non_blocking=True),
            )

    def _augment(self, xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random horizontal flip and random crop after zero padding, per sample.

        Both are done by one gather: each output pixel reads its source pixel
        from the padded batch, with the flip folded into the column index.
        """
        batch, channels, height, width = xb.shape
        pad = self.PAD
        flip = torch.rand(batch, generator=gen) < 0.5
        dy = torch.randint(0, 2 * pad + 1, (batch, 1), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (batch, 1), generator=gen)

        padded = F.pad(xb, (pad, pad, pad, pad), value=self._fill)
        padded_width = width + 2 * pad
        j = torch.arange(width)
        # Flipping the padded image maps column c to padded_width - 1 - c.
        cols = torch.where(flip[:, None], padded_width - 1 - dx - j, dx + j)  # (B, W)
        rows = dy + torch.arange(height)  # (B, H)
        flat = rows[:, :, None] * padded_width + cols[:, None, :]  # (B, H, W)
        # The draws come from the CPU generator whatever the device, so augmentation is the same on both.
        flat = flat.to(xb.device).reshape(batch, 1, height * width).expand(batch, channels, -1)
        out = padded.reshape(batch, channels, -1).gather(2, flat)
        return out.reshape(batch, channels, height, width)


def loader(
    split: Split,
    batch_size: int,
    shuffle: bool,
    seed: int,
    device: torch.device | str = "cpu",
    augment: bool = False,
) -> Batches:
    """Batches of (float (B, 1, H, W) normalised images, int64 (B,) labels)."""
    return Batches(split, batch_size, shuffle, seed, device=device, augment=augment)

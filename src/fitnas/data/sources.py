"""Where data comes from: Fashion-MNIST (a configured folder, Debian's package, a download with
checksums) and bring-your-own image folders or .npz files, all read into one `Dataset` of uint8 arrays."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fitnas.errors import DataError

from fitnas.data.idx import read_idx

log = logging.getLogger(__name__)


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
                size = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=size, desc=f"downloading {name}.gz", unit="B", unit_scale=True,
                          disable=None, leave=False, dynamic_ncols=True) as bar:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
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


@dataclass
class Dataset:
    """A whole dataset before splitting: uint8 images (N, C, H, W), int64 labels (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str
    mean: tuple[float, ...] | None = None  # None: Fashion-MNIST's fixed statistics
    std: tuple[float, ...] | None = None


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
LAYOUTS = (
    "a folder of the four Fashion-MNIST IDX files, "
    "an image folder (train/<class>/<image> and test/<class>/<image>), "
    "or an .npz file with x_train, y_train, x_test, y_test"
)


def detect_format(root: Path) -> str:
    """'idx', 'imagefolder' or 'npz', from what `root` holds."""
    if root.is_file():
        if root.suffix == ".npz":
            return "npz"
        raise DataError(f"data.root is {root}, a file that is not .npz; point data.root at {LAYOUTS}")
    if not root.is_dir():
        raise DataError(f"data.root is {root}, which does not exist; point it at {LAYOUTS}, "
                        f"or set it to null for Fashion-MNIST")
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "imagefolder"
    if len(missing_files(root)) < len(FILE_NAMES):
        return "idx"  # some IDX files: find_dataset names the missing ones
    raise DataError(f"data.root is {root}, which holds neither IDX files nor train/ and test/ folders; "
                    f"point it at {LAYOUTS}")


def check_source(root: str | None, fmt: str, download_dir: Path, system_dir: Path = DEBIAN_DIR) -> str:
    """Where the data would come from, after cheap checks of its layout (`fitnas doctor`); DataError if unusable.

    Reads no images: a damaged file is only found by `load_dataset`.
    """
    if root is None or not str(root).strip():
        for folder in (Path(system_dir), Path(download_dir)):
            if folder.is_dir() and not missing_files(folder):
                return f"Fashion-MNIST IDX files in {folder}"
        raise DataError(
            f"Fashion-MNIST is not on this machine ({system_dir}, {download_dir}); prepare will try to download it "
            f"from {OFFICIAL_URL}. Without internet: sudo apt-get install dataset-fashion-mnist, or set data.root"
        )
    folder = Path(root).expanduser()
    fmt = detect_format(folder) if fmt == "auto" else fmt
    if fmt == "idx":
        return f"Fashion-MNIST IDX files in {find_dataset(str(folder), Path(download_dir))}"
    if fmt == "npz":
        try:
            with np.load(folder, allow_pickle=False) as archive:
                names = set(archive.files)
        except Exception as err:
            raise DataError(f"{folder}: unreadable .npz ({type(err).__name__}: {err})") from None
        missing = [k for k in NPZ_KEYS if k not in names]
        if missing:
            raise DataError(f"{folder} lacks {', '.join(missing)}")
        return f".npz arrays in {folder}"
    for part in ("train", "test"):
        if not (folder / part).is_dir():
            raise DataError(f"{folder}: no {part}/ folder; expected root/train/<class>/<image> and root/test/<class>/<image>")
    classes = [d for d in (folder / "train").iterdir() if d.is_dir() and not d.name.startswith(".")]
    if len(classes) < 2:
        raise DataError(f"{folder / 'train'} has {len(classes)} class folder(s); a classifier needs at least two")
    return f"image folder {folder} ({len(classes)} classes)"


def load_dataset(root: str | None, fmt: str, image_size: int | None, download_dir: Path) -> Dataset:
    """The dataset that `data.root` / `data.format` / `data.image_size` describe, checked."""
    if root is None or not str(root).strip():
        fmt, folder = "idx", find_dataset(None, download_dir)
    else:
        folder = Path(root).expanduser()
        if fmt == "auto":
            fmt = detect_format(folder)
        if fmt == "idx":
            folder = find_dataset(str(folder), download_dir)
    if fmt == "idx":
        train_x, train_y, test_x, test_y = load_fashion_mnist(folder)
        dataset = Dataset(train_x[:, None], train_y.astype(np.int64), test_x[:, None], test_y.astype(np.int64),
                          list(FASHION_MNIST_CLASSES), f"Fashion-MNIST IDX files in {folder}")
    elif fmt == "imagefolder":
        dataset = load_image_folder(folder, image_size)
    elif fmt == "npz":
        dataset = load_npz(folder)
    else:
        raise DataError(f"data.format {fmt!r} is not one of auto, idx, imagefolder, npz")
    height, width = dataset.train_x.shape[-2:]
    if image_size is not None and (height, width) != (image_size, image_size):
        dataset.train_x, dataset.test_x = resize(dataset.train_x, image_size), resize(dataset.test_x, image_size)
    elif height != width:
        raise DataError(f"{dataset.source}: images are {height}x{width}, not square; "
                        f"set data.image_size to resize them to a square")
    _check_labels(dataset)
    if fmt != "idx":  # Fashion-MNIST keeps its fixed statistics, so its splits stay as they were
        dataset.mean, dataset.std = channel_stats(dataset.train_x)
    return dataset


def resize_method(root: str | None, fmt: str) -> str:
    """How `load_dataset` resizes this data when data.image_size asks for it (what `fitnas predict` repeats).

    Image folders are resized image by image with Pillow (bilinear); IDX and .npz arrays by
    `resize` below (torch, bilinear, antialiased).
    """
    if root is not None and str(root).strip():
        folder = Path(root).expanduser()
        if fmt == "auto":
            try:
                fmt = detect_format(folder)
            except DataError:  # the data moved since prepare: its format no longer shows, keep the arrays' method
                fmt = "npz" if folder.suffix == ".npz" else "idx"
        if fmt == "imagefolder":
            return "pil-bilinear"
    return "torch-bilinear-antialias"


def _check_labels(dataset: Dataset) -> None:
    used = np.unique(dataset.train_y)
    if len(used) < 2:
        names = ", ".join(dataset.classes[int(k)] for k in used) or "none"
        raise DataError(f"{dataset.source}: the training images have only one class ({names}); "
                        f"a classifier needs at least two")
    for name, y in (("training", dataset.train_y), ("test", dataset.test_y)):
        if len(y) and (y.min() < 0 or y.max() >= len(dataset.classes)):
            raise DataError(f"{dataset.source}: {name} labels outside 0..{len(dataset.classes) - 1}")
    if len(dataset.test_y) == 0:
        raise DataError(f"{dataset.source}: no test images")


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), pixels scaled to [0, 1]."""
    pixels = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1).astype(np.float64) / 255.0
    std = np.maximum(pixels.std(axis=1), 1e-3)  # a constant channel must not divide by zero
    return tuple(float(m) for m in pixels.mean(axis=1)), tuple(float(v) for v in std)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images (N, C, H, W) resized to (N, C, size, size), antialiased."""
    out = []
    for start in range(0, len(images), 1024):  # chunks: a float copy of a large set would double memory
        chunk = torch.from_numpy(images[start : start + 1024]).float()
        scaled = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(scaled.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.zeros((0, images.shape[1], size, size), np.uint8)


def load_image_folder(root: Path, image_size: int | None = None) -> Dataset:
    """train/<class>/<image> and test/<class>/<image>; class names from the training folders.

    Grayscale images stay one channel; if any image has colour, every image becomes RGB.
    Without image_size all images must share one square size.
    """
    layout = "expected root/train/<class>/<image> and root/test/<class>/<image>"
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DataError(f"{root}: no {part}/ folder; {layout}")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders; {layout}")
    if len(classes) < 2:
        raise DataError(f"{root / 'train'} has only one class ({classes[0]}); a classifier needs at least two")
    files: dict[str, list[tuple[Path, int]]] = {}
    for part in ("train", "test"):
        loose = [f.name for f in (root / part).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DataError(f"{root / part} holds images outside class folders ({loose[0]}, ...); {layout}")
        found = sorted(d.name for d in (root / part).iterdir() if d.is_dir() and not d.name.startswith("."))
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{root / part} has class folders {unknown} that {root / 'train'} lacks; "
                            f"every test class needs training images")
        files[part] = []
        for label, name in enumerate(classes):
            folder = root / part / name
            images = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
            if not images and part == "train":
                raise DataError(f"{folder} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            files[part].extend((f, label) for f in images)
    if not files["test"]:
        raise DataError(f"{root / 'test'} holds no images; {layout}")

    from PIL import Image  # only this loader needs Pillow

    from fitnas.util import progress

    def unreadable(path: Path, err: Exception) -> DataError:
        return DataError(f"{path}: unreadable image ({type(err).__name__}: {err}); fix or remove it")

    # Pass 1 reads headers only: one colour image makes every image RGB.
    color = False
    for path, _ in progress(files["train"] + files["test"], "checking images"):
        try:
            with Image.open(path) as im:
                color |= im.mode not in GRAY_MODES
        except Exception as err:  # Pillow raises many types for a damaged or unknown file
            raise unreadable(path, err) from None
    mode = "RGB" if color else "L"
    arrays: dict[str, np.ndarray] = {}
    first: tuple[Path, tuple[int, int]] | None = None
    for part in ("train", "test"):
        stack = []
        for path, _ in progress(files[part], f"reading {part} images"):
            try:
                with Image.open(path) as im:
                    picture = _to_mode(im, mode)
            except Exception as err:
                raise unreadable(path, err) from None
            if image_size is not None:
                picture = picture.resize((image_size, image_size), Image.BILINEAR)
            elif first is None:
                first = (path, picture.size)
                if picture.size[0] != picture.size[1]:
                    raise DataError(f"{path} is {picture.size[0]}x{picture.size[1]}, not square; "
                                    f"set data.image_size to resize every image to one square size")
            elif picture.size != first[1]:
                raise DataError(f"{path} is {picture.size[0]}x{picture.size[1]} but {first[0]} is "
                                f"{first[1][0]}x{first[1][1]}; set data.image_size to resize every image to one size")
            array = np.asarray(picture, dtype=np.uint8)
            stack.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
        arrays[part] = np.stack(stack)
    labels = {part: np.array([label for _, label in files[part]], dtype=np.int64) for part in files}
    return Dataset(arrays["train"], labels["train"], arrays["test"], labels["test"], classes, f"image folder {root}")


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _to_mode(im, mode: str):
    """A loaded Pillow image converted to 8-bit 'L' or 'RGB'."""
    im.load()
    if im.mode in ("I", "I;16", "F"):  # deep grayscale: scale to 8 bits
        from PIL import Image

        values = np.asarray(im, dtype=np.float64)
        top = values.max() or 1.0
        im = Image.fromarray((values / top * 255).round().astype(np.uint8))
    return im.convert(mode)


def load_npz(path: Path) -> Dataset:
    """x_train, y_train, x_test, y_test (and optionally classes) from an .npz file.

    Images are uint8, (N, H, W) for grayscale or (N, H, W, C) / (N, C, H, W) with C of 1 or 3;
    labels are integers 0..K-1.
    """
    keys = "x_train, y_train, x_test, y_test (optional: classes)"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as err:  # not a zip, truncated, object arrays (refused: they would need unpickling)
        raise DataError(f"{path}: unreadable .npz ({type(err).__name__}: {err}); it must hold the arrays {keys}") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)} (it has {', '.join(sorted(arrays)) or 'nothing'}); "
                        f"it must hold the arrays {keys}")
    images = {}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8:
            raise DataError(f"{path}: x_{part} is {x.dtype}, expected uint8 pixels 0..255 "
                            f"(for floats in [0, 1]: (x * 255).round().astype(np.uint8))")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
            raise DataError(f"{path}: x_{part} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                            f"(N, C, H, W) with C = 1 or 3")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{path}: y_{part} has shape {y.shape}, expected ({len(x)},): one label per image")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y_{part} is {y.dtype}, expected integer class indices 0..K-1")
        images[part] = (np.ascontiguousarray(x), y.astype(np.int64))
    if images["train"][0].shape[1:] != images["test"][0].shape[1:]:
        raise DataError(f"{path}: training images are {images['train'][0].shape[1:]} (C, H, W) but test images "
                        f"{images['test'][0].shape[1:]}")
    if "classes" in arrays:
        classes = [str(c) for c in np.atleast_1d(arrays["classes"]).tolist()]
    else:
        # Without names, K is the number of distinct training labels, and they must be 0..K-1: labels
        # 1,000,000-1,000,002 are three classes numbered wrongly, not a million classes.
        used = np.unique(images["train"][1])
        k = len(used)
        for part, (_, y) in images.items():
            if len(y) and (y.min() < 0 or y.max() >= k):
                raise DataError(f"{path}: y_{part} labels out of range ({int(y.min())}..{int(y.max())}); without a "
                                f"classes array the {k} training classes must be numbered 0..{k - 1}")
        classes = [str(c) for c in range(k)]
    return Dataset(*images["train"], *images["test"], classes, f"{path}")


# --------------------------------------------------------------------------
# Stored splits

"""Tests of the dataset layer on small synthetic IDX files (no real data needed)."""

from __future__ import annotations

import functools
import shutil
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_image_folder
from fitnas.data import idx, sources, splits
from fitnas.data.batches import Batches, loader
from fitnas import errors

N_TRAIN, N_TEST = 60, 20


def _fake_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        sources.TRAIN_IMAGES: rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        sources.TRAIN_LABELS: np.arange(N_TRAIN, dtype=np.uint8) % 10,
        sources.TEST_IMAGES: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        sources.TEST_LABELS: np.arange(N_TEST, dtype=np.uint8) % 10,
    }


def make_dataset(folder: Path, gz: bool = True, names=sources.FILE_NAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = _fake_arrays()
    for name in names:
        idx.write_idx(folder / (f"{name}.gz" if gz else name), arrays[name])
    return folder


def md5s(folder: Path) -> dict[str, str]:
    return {
        name: hashlib.md5((folder / f"{name}.gz").read_bytes()).hexdigest()
        for name in sources.FILE_NAMES
    }


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    idx.write_idx(path, array)
    back = idx.read_idx(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 7  # the returned array owns writable memory


def test_idx_header_is_standard(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    idx.write_idx(path, np.array([1, 2, 3], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_file(tmp_path: Path, gz: bool) -> None:
    payload = bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(5)  # header says 10, has 5
    path = tmp_path / ("short.gz" if gz else "short")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(errors.DataError, match="truncated") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_cut_gzip_names_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    blob = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(errors.DataError) as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_magic_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x1f\x8b\x08\x01" + bytes(12))
    with pytest.raises(errors.DataError, match="magic") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_dtype_and_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "floats"
    path.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4))
    with pytest.raises(errors.DataError, match="0x0d"):
        idx.read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1]) + bytes(3))
    with pytest.raises(errors.DataError, match="unexpected bytes"):
        idx.read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.DataError, match="not found"):
        idx.read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------
# find_dataset


def test_root_comes_first(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "root", gz=False)
    system = make_dataset(tmp_path / "system")
    found = sources.find_dataset(str(root), tmp_path / "dl", system_dir=system, base_url="file:///nope/")
    assert found == root


def test_system_dir_before_download_dir(tmp_path: Path) -> None:
    system = make_dataset(tmp_path / "system")
    downloads = make_dataset(tmp_path / "dl")
    assert sources.find_dataset(None, downloads, system_dir=system) == system


def test_download_dir_before_download(tmp_path: Path, empty: Path) -> None:
    downloads = make_dataset(tmp_path / "dl")
    found = sources.find_dataset(None, downloads, system_dir=empty, base_url="file:///nope/")
    assert found == downloads


def test_incomplete_system_dir_is_skipped(tmp_path: Path) -> None:
    system = make_dataset(tmp_path / "system", names=sources.FILE_NAMES[:2])
    downloads = make_dataset(tmp_path / "dl")
    assert sources.find_dataset(None, downloads, system_dir=system) == downloads


def test_explicit_root_incomplete_lists_missing(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "root", names=[sources.TRAIN_IMAGES, sources.TEST_LABELS])
    system = make_dataset(tmp_path / "system")
    with pytest.raises(errors.DataError) as info:
        sources.find_dataset(str(root), tmp_path / "dl", system_dir=system)
    message = str(info.value)
    assert str(root) in message
    listed = message.split("lacks ", 1)[1].split(" (", 1)[0]
    assert listed.split(", ") == [sources.TRAIN_LABELS, sources.TEST_IMAGES]


def test_explicit_root_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(errors.DataError, match="not a folder"):
        sources.find_dataset(str(tmp_path / "absent"), tmp_path / "dl", system_dir=tmp_path)


def test_download_from_file_url(tmp_path: Path, empty: Path) -> None:
    source = make_dataset(tmp_path / "mirror")
    downloads = tmp_path / "dl"
    found = sources.find_dataset(
        None, downloads, system_dir=empty,
        base_url=source.as_uri() + "/", checksums=md5s(source),
    )
    assert found == downloads
    assert sorted(p.name for p in downloads.iterdir()) == sorted(
        f"{n}.gz" for n in sources.FILE_NAMES
    )
    train_x, *_ = sources.load_fashion_mnist(found)
    assert train_x.shape == (N_TRAIN, 28, 28)


@pytest.fixture
def http_mirror(tmp_path: Path):
    source = make_dataset(tmp_path / "mirror")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(source)
    )
    handler.log_message = lambda *args: None  # keep pytest output clean
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", md5s(source)
    finally:
        server.shutdown()
        server.server_close()


def test_download_from_http_server(tmp_path: Path, empty: Path, http_mirror) -> None:
    url, checksums = http_mirror
    downloads = tmp_path / "dl"
    found = sources.find_dataset(None, downloads, system_dir=empty, base_url=url, checksums=checksums)
    assert found == downloads
    assert sources.missing_files(downloads) == []


def test_download_only_fetches_missing(tmp_path: Path, empty: Path) -> None:
    source = make_dataset(tmp_path / "mirror")
    downloads = make_dataset(tmp_path / "dl", names=[sources.TRAIN_IMAGES])
    before = (downloads / f"{sources.TRAIN_IMAGES}.gz").stat().st_mtime_ns
    checksums = {**md5s(source), sources.TRAIN_IMAGES: "0" * 32}  # would fail if fetched
    sources.find_dataset(None, downloads, system_dir=empty, base_url=source.as_uri(), checksums=checksums)
    assert (downloads / f"{sources.TRAIN_IMAGES}.gz").stat().st_mtime_ns == before
    assert sources.missing_files(downloads) == []


def test_checksum_mismatch_leaves_no_file(tmp_path: Path, empty: Path) -> None:
    source = make_dataset(tmp_path / "mirror")
    downloads = tmp_path / "dl"
    checksums = {**md5s(source), sources.TRAIN_LABELS: "0" * 32}
    with pytest.raises(errors.DataError, match="checksum mismatch"):
        sources.find_dataset(
            None, downloads, system_dir=empty,
            base_url=source.as_uri() + "/", checksums=checksums,
        )
    names = [p.name for p in downloads.iterdir()]
    assert f"{sources.TRAIN_LABELS}.gz" not in names
    assert not any(name.endswith(".part") for name in names)


def test_checksum_mismatch_direct(tmp_path: Path) -> None:
    source = make_dataset(tmp_path / "mirror")
    with pytest.raises(errors.DataError, match="checksum mismatch"):
        sources.download_fashion_mnist(tmp_path / "dl", source.as_uri(), {n: "x" for n in sources.FILE_NAMES})
    assert list((tmp_path / "dl").iterdir()) == []


def test_all_ways_failing_names_three_fixes(tmp_path: Path, empty: Path) -> None:
    url = (tmp_path / "no-mirror").as_uri() + "/"
    with pytest.raises(errors.DataError) as info:
        sources.find_dataset(None, tmp_path / "dl", system_dir=empty, base_url=url)
    message = str(info.value)
    assert "data.root" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert url in message and "failed:" in message
    for name in sources.FILE_NAMES:
        assert name in message


def test_unreachable_server_fails_fast(tmp_path: Path, empty: Path) -> None:
    # Port 9 on localhost: nothing listens, so the connection is refused at once.
    with pytest.raises(errors.DataError, match="failed:"):
        sources.find_dataset(None, tmp_path / "dl", system_dir=empty,
                       base_url="http://127.0.0.1:9/", timeout=2)


# --------------------------------------------------------------------------
# Loading and splitting


def test_load_fashion_mnist_shapes(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "ds", gz=False)
    train_x, train_y, test_x, test_y = sources.load_fashion_mnist(folder)
    assert train_x.shape == (N_TRAIN, 28, 28) and train_y.shape == (N_TRAIN,)
    assert test_x.shape == (N_TEST, 28, 28) and test_y.shape == (N_TEST,)
    assert all(a.dtype == np.uint8 for a in (train_x, train_y, test_x, test_y))


def test_load_rejects_count_mismatch_and_bad_labels(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "ds")
    idx.write_idx(folder / f"{sources.TEST_LABELS}.gz", np.zeros(N_TEST - 1, dtype=np.uint8))
    with pytest.raises(errors.DataError, match="labels"):
        sources.load_fashion_mnist(folder)
    idx.write_idx(folder / f"{sources.TEST_LABELS}.gz", np.full(N_TEST, 10, dtype=np.uint8))
    with pytest.raises(errors.DataError, match="outside 0..9"):
        sources.load_fashion_mnist(folder)


def test_split_train_val() -> None:
    x = np.arange(100, dtype=np.uint8)[:, None, None].repeat(28, 1).repeat(28, 2)
    y = np.arange(100) % 10
    tx, ty, vx, vy = splits.split_train_val(x, y, 20, seed=3)
    assert len(tx) == len(ty) == 80 and len(vx) == len(vy) == 20
    train_ids, val_ids = set(tx[:, 0, 0]), set(vx[:, 0, 0])
    assert train_ids.isdisjoint(val_ids) and len(train_ids | val_ids) == 100
    np.testing.assert_array_equal(vy, vx[:, 0, 0] % 10)  # images stay with labels
    assert np.bincount(vy, minlength=10).tolist() == [2] * 10  # class-balanced

    again = splits.split_train_val(x, y, 20, seed=3)
    np.testing.assert_array_equal(again[2], vx)
    other = splits.split_train_val(x, y, 20, seed=4)
    assert not np.array_equal(other[2], vx)


@pytest.mark.parametrize("val_size", [0, -1, 100, 101])
def test_split_rejects_bad_val_size(val_size: int) -> None:
    x = np.zeros((100, 28, 28), dtype=np.uint8)
    with pytest.raises(errors.DataError, match="val_size"):
        splits.split_train_val(x, np.zeros(100, dtype=np.uint8), val_size, seed=0)


# --------------------------------------------------------------------------
# Stored splits


def _split(n: int = 50, seed: int = 0) -> splits.Split:
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8))
    labels = torch.arange(n, dtype=torch.int64) % 10
    return splits.Split(images, labels, list(sources.FASHION_MNIST_CLASSES))


def test_save_load_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    y = np.arange(30, dtype=np.uint8) % 10
    path = tmp_path / "prepared" / "train.pt"
    splits.save_split(path, x, y, sources.FASHION_MNIST_CLASSES)
    split = splits.load_split(path)
    assert split.images.dtype == torch.uint8 and split.images.shape == (30, 1, 28, 28)
    assert split.labels.dtype == torch.int64 and split.labels.shape == (30,)
    assert split.classes == sources.FASHION_MNIST_CLASSES
    assert len(split) == 30
    np.testing.assert_array_equal(split.images[:, 0].numpy(), x)
    np.testing.assert_array_equal(split.labels.numpy(), y)
    assert [p.name for p in path.parent.iterdir()] == ["train.pt"]


def test_load_split_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(errors.DataError, match="dvc repro prepare"):
        splits.load_split(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(errors.DataError, match="dvc repro prepare"):
        splits.load_split(corrupt)
    wrong = tmp_path / "wrong.pt"
    torch.save({"images": torch.zeros(3)}, wrong)
    with pytest.raises(errors.DataError, match="dvc repro prepare"):
        splits.load_split(wrong)


def test_subset() -> None:
    split = _split(100)
    small = splits.subset(split, 30, seed=1)
    assert len(small) == 30 and small.images.shape == (30, 1, 28, 28)
    assert torch.bincount(small.labels, minlength=10).tolist() == [3] * 10
    assert torch.equal(splits.subset(split, 30, seed=1).images, small.images)
    assert not torch.equal(splits.subset(split, 30, seed=2).images, small.images)
    assert splits.subset(split, 1000, seed=1) is split
    with pytest.raises(errors.DataError):
        splits.subset(split, 0, seed=1)


# --------------------------------------------------------------------------
# Batches


def test_batches_shapes_dtype_normalisation() -> None:
    split = _split(50)
    batches = loader(split, batch_size=16, shuffle=False, seed=0, device="cpu")
    assert len(batches) == 4
    items = list(batches)
    assert [len(x) for x, _ in items] == [16, 16, 16, 2]
    x, y = items[0]
    assert x.dtype == torch.float32 and x.shape == (16, 1, 28, 28)
    assert y.dtype == torch.int64 and y.shape == (16,)
    expected = (split.images[:16].float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, split.labels[:16])


def test_batches_cover_every_sample_once() -> None:
    split = _split(50)
    ys = torch.cat([y for _, y in loader(split, 16, shuffle=True, seed=0)])
    assert sorted(ys.tolist()) == sorted(split.labels.tolist())


def test_batches_deterministic_and_vary_by_epoch() -> None:
    split = _split(64)

    def epochs(seed: int, augment: bool) -> list[torch.Tensor]:
        batches = loader(split, 16, shuffle=True, seed=seed, augment=augment)
        return [torch.cat([x for x, _ in batches]) for _ in range(2)]

    for augment in (False, True):
        a, b = epochs(0, augment), epochs(0, augment)
        assert all(torch.equal(p, q) for p, q in zip(a, b))
        assert not torch.equal(a[0], a[1])  # a new order each epoch
        assert not torch.equal(a[0], epochs(1, augment)[0])


def test_set_epoch_replays() -> None:
    batches = loader(_split(64), 16, shuffle=True, seed=0, augment=True)
    first = [x for x, _ in batches]
    second = [x for x, _ in batches]
    batches.set_epoch(1)
    assert all(torch.equal(p, q) for p, q in zip(second, [x for x, _ in batches]))
    assert not all(torch.equal(p, q) for p, q in zip(first, second))


def test_augment_keeps_shape_and_is_flip_or_crop() -> None:
    split = _split(64)
    batches = loader(split, 64, shuffle=False, seed=0, augment=True)
    (x, y), = list(batches)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, split.labels)
    clean = splits.normalise(split.images)
    fill = (0 - 0.2860) / 0.3530
    padded = torch.nn.functional.pad(clean, (2, 2, 2, 2), value=fill)
    # Every augmented image is one of the 2 x 25 flipped/shifted windows.
    for i in range(64):
        candidates = [
            img[:, dy : dy + 28, dx : dx + 28]
            for img in (padded[i], padded[i].flip(2))
            for dy in range(5)
            for dx in range(5)
        ]
        assert any(torch.equal(x[i], c) for c in candidates)
    assert not torch.equal(x, clean)


def test_drop_last() -> None:
    batches = Batches(_split(50), 16, shuffle=True, seed=0, drop_last=True)
    assert len(batches) == 3 and [len(y) for _, y in batches] == [16, 16, 16]


# --------------------------------------------------------------------------
# The real files, where the Debian package is installed


@pytest.mark.skipif(not sources.DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    folder = sources.find_dataset(None, Path("/nonexistent-download-dir"))
    assert folder == sources.DEBIAN_DIR
    train_x, train_y, test_x, test_y = sources.load_fashion_mnist(folder)
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    assert np.bincount(train_y).tolist() == [6000] * 10


# --------------------------------------------------------------------------
# Bring your own data: image folders and .npz files


def test_image_folder_rgb(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets")
    ds = sources.load_dataset(str(root), "auto", None, tmp_path / "dl")
    assert ds.classes == ["cat", "dog", "owl"]
    assert ds.train_x.shape == (18, 3, 10, 10) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (6, 3, 10, 10)
    assert ds.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    # The pixels are the PNGs' own: class 1, image 3 is (120, 30, 140) everywhere.
    assert ds.train_x[6 + 3, :, 0, 0].tolist() == [120, 30, 140]
    assert len(ds.mean) == len(ds.std) == 3
    assert ds.mean[0] == pytest.approx(ds.train_x[:, 0].mean() / 255)


def test_image_folder_grayscale_stays_one_channel_and_colour_wins(tmp_path: Path) -> None:
    gray = write_image_folder(tmp_path / "gray", mode="L")
    assert sources.load_dataset(str(gray), "imagefolder", None, tmp_path).train_x.shape == (18, 1, 10, 10)
    from PIL import Image

    Image.new("RGB", (10, 10), (255, 0, 0)).save(gray / "test" / "owl" / "red.png")
    ds = sources.load_dataset(str(gray), "imagefolder", None, tmp_path)
    assert ds.train_x.shape == (18, 3, 10, 10) and ds.test_x.shape == (7, 3, 10, 10)


def test_image_folder_sizes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets")
    from PIL import Image

    odd = root / "train" / "dog" / "big.png"
    Image.new("RGB", (16, 12), (0, 0, 0)).save(odd)
    with pytest.raises(errors.DataError, match=r"big.png is 16x12 but .* is 10x10; set data.image_size"):
        sources.load_dataset(str(root), "auto", None, tmp_path)
    ds = sources.load_dataset(str(root), "auto", 8, tmp_path)
    assert ds.train_x.shape == (19, 3, 8, 8) and ds.test_x.shape == (6, 3, 8, 8)
    flat = write_image_folder(tmp_path / "flat", size=(12, 6))
    with pytest.raises(errors.DataError, match="is 12x6, not square; set data.image_size"):
        sources.load_dataset(str(flat), "auto", None, tmp_path)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda root: (root / "train" / "dog" / "2.png").write_bytes(b"\x89PNG not really"),
         r"train/dog/2.png: unreadable image"),
        (lambda root: (root / "test" / "cat" / "1.png").write_bytes((root / "test" / "cat" / "1.png").read_bytes()[:40]),
         r"test/cat/1.png: unreadable image"),
        (lambda root: [shutil.rmtree(root / "train" / n) for n in ("dog", "owl")],
         r"only one class \(cat\); a classifier needs at least two"),
        (lambda root: shutil.rmtree(root / "test"), r"no test/ folder; expected root/train/<class>/<image>"),
        (lambda root: (root / "train" / "cat" / "0.png").rename(root / "train" / "loose.png"),
         r"holds images outside class folders \(loose.png"),
        (lambda root: (root / "test" / "fox").mkdir(), r"class folders \['fox'\] that .* lacks"),
        (lambda root: [p.unlink() for p in (root / "train" / "owl").iterdir()], r"train/owl holds no images"),
    ],
    ids=["not-an-image", "truncated", "one-class", "no-test", "loose-image", "unknown-test-class", "empty-class"],
)
def test_malformed_image_folder(tmp_path: Path, damage, expected) -> None:
    root = write_image_folder(tmp_path / "pets")
    damage(root)
    before = sorted(p for p in root.rglob("*"))
    with pytest.raises(errors.DataError, match=expected):
        sources.load_dataset(str(root), "auto", None, tmp_path)
    assert sorted(p for p in root.rglob("*")) == before  # nothing of the user's touched


def test_unrecognised_root(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()  # class folders without train/ and test/
    with pytest.raises(errors.DataError, match=r"neither IDX files nor train/ and test/ folders"):
        sources.load_dataset(str(tmp_path), "auto", None, tmp_path / "dl")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(errors.DataError, match=r"a file that is not .npz"):
        sources.load_dataset(str(tmp_path / "notes.txt"), "auto", None, tmp_path / "dl")
    with pytest.raises(errors.DataError, match="does not exist"):
        sources.load_dataset(str(tmp_path / "nowhere"), "auto", None, tmp_path / "dl")


def test_idx_root_is_detected_and_keeps_fashion_mnist_statistics(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "fm")
    ds = sources.load_dataset(str(root), "auto", None, tmp_path / "dl")
    assert ds.train_x.shape == (N_TRAIN, 1, 28, 28) and ds.classes == sources.FASHION_MNIST_CLASSES
    assert ds.mean is None and ds.std is None
    assert sources.load_dataset(str(root), "idx", 14, tmp_path / "dl").train_x.shape == (N_TRAIN, 1, 14, 14)


def _arrays(rng, n, shape=(8, 8), classes=3):
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % classes


@pytest.mark.parametrize(
    "shape, channels", [((8, 8), 1), ((8, 8, 1), 1), ((8, 8, 3), 3), ((3, 8, 8), 3)], ids=["NHW", "NHW1", "NHW3", "N3HW"]
)
def test_npz_layouts(tmp_path: Path, shape, channels) -> None:
    rng = np.random.default_rng(0)
    x_train, y_train = _arrays(rng, 30, shape)
    x_test, y_test = _arrays(rng, 9, shape)
    path = tmp_path / "own.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=np.array(["a", "b", "c"]))
    ds = sources.load_dataset(str(path), "auto", None, tmp_path)
    assert ds.train_x.shape == (30, channels, 8, 8) and ds.test_x.shape == (9, channels, 8, 8)
    assert ds.classes == ["a", "b", "c"] and ds.train_y.dtype == np.int64
    if shape == (8, 8, 3):  # channels last moved first, pixel for pixel
        assert np.array_equal(ds.train_x[5, 2], x_train[5, :, :, 2])


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda a: a.pop("y_test"), r"lacks y_test \(it has classes, x_test, x_train, y_train\)"),
        (lambda a: a.update(x_train=a["x_train"].astype(np.float32) / 255), r"x_train is float32, expected uint8"),
        (lambda a: a.update(y_train=np.zeros(30, np.int64)), r"only one class \(a\)"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), r"y_train has shape \(29,\), expected \(30,\)"),
        (lambda a: a.update(y_train=a["y_train"] * 1.0), r"y_train is float64, expected integer"),
        (lambda a: a.update(x_test=np.zeros((9, 8, 9), np.uint8)), r"training images are \(1, 8, 8\) .* test images \(1, 8, 9\)"),
        (lambda a: a.update(x_train=np.zeros((30, 5, 8, 8), np.uint8)), r"x_train has shape \(30, 5, 8, 8\)"),
        (lambda a: a.update(y_test=a["y_test"] + 5), r"test labels outside 0..2"),
        (lambda a: a.update(classes=np.array([{"a": 1}], dtype=object)), r"unreadable .npz .*pickle"),
    ],
    ids=["missing-key", "float-pixels", "one-class", "label-count", "float-labels", "test-shape", "channels", "label-range", "object-array"],
)
def test_malformed_npz(tmp_path: Path, change, expected) -> None:
    rng = np.random.default_rng(0)
    x_train, y_train = _arrays(rng, 30)
    x_test, y_test = _arrays(rng, 9)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=np.array(["a", "b", "c"]))
    change(arrays)
    path = tmp_path / "own.npz"
    np.savez(path, **arrays)
    with pytest.raises(errors.DataError, match=expected):
        sources.load_dataset(str(path), "npz", None, tmp_path)


def test_npz_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "own.npz"
    path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(errors.DataError, match="unreadable .npz"):
        sources.load_dataset(str(path), "auto", None, tmp_path)


def test_split_keeps_channel_statistics_and_batches_normalise_per_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 60, (40, 6, 6)), rng.integers(100, 256, (40, 6, 6)), np.full((40, 6, 6), 7)], 1)
    x = x.astype(np.uint8)
    mean, std = sources.channel_stats(x)
    splits.save_split(tmp_path / "s.pt", x, np.arange(40) % 2, ["a", "b"], mean, std)
    split = splits.load_split(tmp_path / "s.pt")
    assert split.images.shape == (40, 3, 6, 6) and split.mean == mean and split.std == std
    (xb, _), = list(Batches(split, 40, shuffle=False, seed=0))
    assert xb[:, :2].mean(dim=(0, 2, 3)).abs().max() < 1e-4  # each channel centred on its own mean
    assert xb[:, :2].std(dim=(0, 2, 3), unbiased=False).sub(1).abs().max() < 1e-3
    assert torch.isfinite(xb).all()  # a constant channel does not divide by zero
    augmented = next(iter(Batches(split, 40, shuffle=False, seed=0, augment=True)))[0]
    assert augmented.shape == (40, 3, 6, 6)
    # Padding is black in every channel: the fill is each channel's normalised zero.
    fill = [(0 - m) / s for m, s in zip(mean, std)]
    for c in range(3):
        values = set(augmented[:, c].flatten().tolist()) - set(xb[:, c].flatten().tolist())
        assert all(v == pytest.approx(fill[c], rel=1e-5) for v in values)


def test_fashion_mnist_splits_store_no_statistics(tmp_path: Path) -> None:
    splits.save_split(tmp_path / "s.pt", np.zeros((4, 28, 28), np.uint8), np.arange(4), ["a", "b", "c", "d"])
    assert set(torch.load(tmp_path / "s.pt", weights_only=True)) == {"images", "labels", "classes"}
    assert splits.load_split(tmp_path / "s.pt").mean == (splits.MEAN,)


@pytest.mark.parametrize(
    "offset, test_offset, expected",
    [
        (1_000_000, 1_000_000, r"y_train labels out of range \(1000000..1000002\); without a classes array the 3 training classes must be numbered 0..2"),
        (0, 5, r"y_test labels out of range \(5..7\)"),
        (-1, -1, r"y_train labels out of range \(-1..1\)"),
    ],
)
def test_npz_labels_without_names_must_be_0_to_k_minus_1(tmp_path: Path, offset, test_offset, expected) -> None:
    """Labels 1,000,000-1,000,002 are not a million classes (issue 18)."""
    rng = np.random.default_rng(0)
    x_train, y_train = _arrays(rng, 30)
    x_test, y_test = _arrays(rng, 9)
    path = tmp_path / "own.npz"
    np.savez(path, x_train=x_train, y_train=y_train + offset, x_test=x_test, y_test=y_test + test_offset)
    with pytest.raises(errors.DataError, match=expected):
        sources.load_dataset(str(path), "npz", None, tmp_path)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    assert sources.load_dataset(str(path), "npz", None, tmp_path).classes == ["0", "1", "2"]

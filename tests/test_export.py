"""models/final.onnx: the exported network agrees with PyTorch on real test images; `fitnas predict` feeds it as training did."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import write_synthetic_fashion_mnist
from fitnas import config, export, serving, spaces
from fitnas.cli import app
from fitnas.data import sources, splits
from fitnas.data.batches import Batches
from fitnas.errors import PredictError
from fitnas.predict import prepare
from fitnas.train import sgd_one_cycle, train_epoch

runner = CliRunner()


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """Fashion-MNIST's real test images when the machine has the dataset (Debian's package), else synthetic ones."""
    root = None if sources.DEBIAN_DIR.is_dir() else str(write_synthetic_fashion_mnist(tmp_path_factory.mktemp("fmnist")))
    data = sources.load_dataset(root, "auto", None, tmp_path_factory.mktemp("downloads"))
    train = splits.Split(torch.from_numpy(data.train_x[:2000]), torch.from_numpy(data.train_y[:2000]), data.classes)
    test = splits.Split(torch.from_numpy(data.test_x[:500]), torch.from_numpy(data.test_y[:500]), data.classes)
    return train, test


def trained(space_name: str, train: splits.Split) -> tuple[torch.nn.Module, object]:
    """A small network of the space trained a few steps, so its classes are not a coin's."""
    torch.manual_seed(0)
    p = config.Params(space={"name": space_name, "mobilenet": {"widths": [8, 16], "depths": [2, 2], "strides": [1, 2], "head": 32}},
                      final={"channels": 8})
    space = spaces.get(p.space)
    arch = space.sample(1, random.Random(1))[0]
    net = space.build(arch, space.network_shape(p.final, 1, len(train.classes)))
    batches = Batches(train, 128, shuffle=True, seed=0)
    optimizer, scheduler = sgd_one_cycle(net, 0.1, 0.9, 5e-4, len(batches))
    train_epoch(net, batches, optimizer, scheduler, desc="test")
    return net.eval(), space.to_str(arch)


def meta_of(test: splits.Split, arch: str) -> dict:
    return serving.metadata(test.classes, test.mean, test.std, 1, 28, "torch-bilinear-antialias", arch=arch)


@pytest.mark.parametrize("space_name", ["nb201", "mobilenet"])
def test_onnx_matches_pytorch_on_real_test_images(space_name, fmnist, tmp_path):
    train, test = fmnist
    net, arch = trained(space_name, train)
    path = export.export_onnx(net, (1, 28, 28), tmp_path / "final.onnx", meta_of(test, arch))
    x = splits.normalise(test.images, test.mean, test.std)  # what training fed the network
    with torch.no_grad():
        expected = net(x).numpy()
    classifier = serving.Classifier(path)
    for batch in (1, 37, len(test)):  # the batch axis is dynamic
        got = classifier.session.run(None, {export.INPUT: x[:batch].numpy()})[0]
        assert got.shape == (batch, len(test.classes))
        assert np.abs(got - expected[:batch]).max() <= 1e-4
        assert (got.argmax(1) == expected[:batch].argmax(1)).all()
    # Through the classifier: uint8 pixels in, normalised as training normalised them.
    logits = classifier.logits(test.images.numpy())
    assert np.abs(logits - expected).max() <= 1e-4
    table = classifier.predict(test.images.numpy())
    assert (table["label"].to_numpy() == expected.argmax(1)).all()
    assert list(table["class"][:3]) == [test.classes[k] for k in expected.argmax(1)[:3]]
    assert np.allclose(table[[f"p_{c}" for c in test.classes]].sum(axis=1), 1.0)
    assert classifier.meta["arch"] == arch and classifier.meta["classes"] == test.classes


def test_onnx_latency_is_measured_beside_pytorch(fmnist, tmp_path):
    train, test = fmnist
    net, arch = trained("nb201", train)
    path = export.export_onnx(net, (1, 28, 28), tmp_path / "final.onnx", meta_of(test, arch))
    settings = config.Latency(warmup=1, repeats=3)
    measured = export.measured_latency(net, path, (1, 28, 28), torch.device("cpu"), settings)
    assert measured["measured_torch_ms"] > 0 and measured["measured_onnx_ms"] > 0
    assert measured["measured_batch_size"] == 1 and measured["measured_threads"] == 1


def test_an_onnx_file_without_fitnas_metadata_is_not_a_classifier(tmp_path):
    import onnx

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    torch.onnx.export(net, (torch.zeros(2, 1, 2, 2),), tmp_path / "other.onnx", dynamo=True, verbose=False)
    assert onnx.load(tmp_path / "other.onnx").graph.input
    with pytest.raises(serving.NotAClassifier, match="not a fitnas classifier"):
        serving.Classifier(tmp_path / "other.onnx")


def test_prepare_resizes_as_training_resized(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    arrays = dict(channels=1, size=28, mean=[0.5], std=[0.5], classes=["a", "b"])
    # IDX / .npz data: sources.resize, as load_dataset resizes with data.image_size.
    got = prepare(tmp_path / "grey.png", arrays | {"resize": "torch-bilinear-antialias"})
    assert np.array_equal(got, sources.resize(grey[None, None], 28)[0])
    # Image folders: Pillow's bilinear, as load_image_folder resizes.
    got = prepare(tmp_path / "grey.png", arrays | {"resize": "pil-bilinear"})
    assert np.array_equal(got[0], np.asarray(Image.fromarray(grey).resize((28, 28), Image.BILINEAR)))
    # The model's own size: untouched.
    assert np.array_equal(prepare(tmp_path / "grey.png", arrays | {"size": 40, "resize": "pil-bilinear"})[0], grey)
    # A grey picture stored as RGB is grey; a colour one is refused by a grayscale model, taken by an RGB one.
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey_rgb.png")
    assert np.array_equal(prepare(tmp_path / "grey_rgb.png", arrays | {"size": 40, "resize": "pil-bilinear"})[0], grey)
    Image.new("RGB", (28, 28), (200, 10, 10)).save(tmp_path / "red.png")
    with pytest.raises(PredictError, match="colour image, but the model takes grayscale"):
        prepare(tmp_path / "red.png", arrays | {"resize": "pil-bilinear"})
    rgb = prepare(tmp_path / "red.png", arrays | {"channels": 3, "resize": "pil-bilinear"})
    assert rgb.shape == (3, 28, 28) and tuple(rgb[:, 0, 0]) == (200, 10, 10)
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(PredictError, match="text.png: not an image"):
        prepare(tmp_path / "text.png", arrays | {"resize": "pil-bilinear"})


@pytest.fixture(scope="module")
def project(fmnist, tmp_path_factory):
    """A folder holding what `fitnas predict` reads: models/final.onnx and data/prepared/test.pt."""
    train, test = fmnist
    root = tmp_path_factory.mktemp("predict")
    net, arch = trained("nb201", train)
    export.export_onnx(net, (1, 28, 28), root / "models/final.onnx", meta_of(test, arch))
    splits.save_split(root / "data/prepared/test.pt", test.images, test.labels, test.classes)
    images = root / "images"
    images.mkdir()
    for k in range(5):
        Image.fromarray(test.images[k, 0].numpy()).save(images / f"{k}.png")
    with torch.no_grad():
        expected = net(splits.normalise(test.images[:5], test.mean, test.std)).argmax(1).tolist()
    return root, [test.classes[k] for k in expected]


def test_predict_prints_classes_and_probabilities(project, monkeypatch):
    root, expected = project
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["predict", "images", "--top", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 5
    for k, line in enumerate(lines):
        assert line.startswith(f"images/{k}.png: {expected[k]} 0.")
        assert len(line.split(":", 1)[1].split("  ")) == 2  # two classes shown
    as_json = runner.invoke(app, ["predict", "images/0.png", "images/1.png", "--json"])
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert [r["class"] for r in rows] == expected[:2]
    assert abs(sum(rows[0]["probabilities"].values()) - 1.0) < 1e-6 and rows[0]["size"] == "28x28"


@pytest.mark.parametrize("args, message", [
    (["images/nothing.png"], "images/nothing.png does not exist"),
    (["models"], "models holds no images"),
    (["models/final.onnx"], "models/final.onnx: not an image"),
    (["images", "--model", "images/0.png"], "images/0.png is not an ONNX model"),
])
def test_predict_says_what_is_wrong_in_one_line(project, monkeypatch, args, message):
    root, _ = project
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["predict", *args])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1, result.output


def test_predict_refuses_a_model_of_another_dataset(project, monkeypatch, tmp_path):
    root, _ = project
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    (other / "models/final.onnx").write_bytes((root / "models/final.onnx").read_bytes())
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    splits.save_split(other / "data/prepared/test.pt", images, torch.tensor([0, 1, 2, 0]), ["cat", "dog", "owl"],
                      mean=(0.4,), std=(0.2,))
    monkeypatch.chdir(other)
    result = runner.invoke(app, ["predict", str(root / "images")])
    assert result.exit_code == 1
    assert "models/final.onnx was trained on another dataset than data/prepared" in result.output

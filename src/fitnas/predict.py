"""`fitnas predict`: image files classified by the final model, prepared exactly as training saw its data.

The model says how it must be fed (serving.metadata: channels, size, normalisation, how training
resized): an image is read with Pillow, converted to grayscale or RGB as the image-folder loader
converts (`sources._to_mode`), resized the way `prepare` resized this data when it had to (Pillow's
bilinear for image folders, `sources.resize` for IDX and .npz arrays), and normalised by the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fitnas.data import sources
from fitnas.errors import DataError, PredictError

CHUNK = 256  # images per call of the model: bounded memory for a large folder


@dataclass
class Model:
    """A model that takes uint8 pixels (N, C, H, W) and returns serving.Classifier.predict's table."""

    predict: object  # callable: np.ndarray -> pd.DataFrame
    meta: dict
    where: str


def load(model: str | None, default: Path) -> Model:
    """The project's models/final.onnx (None), another .onnx file, or an MLflow model URI (models:/NAME/VERSION)."""
    if model is not None and ":/" in model:
        return _load_mlflow(model)
    path = Path(model) if model is not None else default
    if not path.is_file():
        fix = "run `dvc repro` (retraining writes it)" if model is None else "give an .onnx file that retraining wrote"
        raise PredictError(f"{path} {'is a folder' if path.is_dir() else 'does not exist'}; {fix}, "
                           "or name a registered model: --model models:/NAME/VERSION")
    from fitnas import serving

    try:
        classifier = serving.Classifier(path)
    except serving.NotAClassifier as err:
        raise PredictError(f"{err}; use models/final.onnx or a model registered by fitnas") from None
    except Exception as err:  # onnxruntime raises its own types for a file that is not ONNX
        raise PredictError(f"{path} is not an ONNX model onnxruntime can load ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200]})") from None
    return Model(classifier.predict, classifier.meta, str(path))


def _load_mlflow(uri: str) -> Model:
    import mlflow.pyfunc

    from fitnas import tracking
    from fitnas.serving import FORMAT

    store = tracking.tracking_uri()
    try:
        with tracking._quick_requests():
            mlflow.set_tracking_uri(store)
            loaded = mlflow.pyfunc.load_model(uri)
    except Exception as err:  # not registered, no such version, server down: MLflow raises several types
        text = " ".join(str(err).split())[:240]
        raise PredictError(f"cannot load {uri} from the MLflow tracking store {store} ({type(err).__name__}: {text}); "
                           "see the registered versions in the MLflow UI (Model registry), or set MLFLOW_TRACKING_URI to the store that has them") from None
    meta = dict(loaded.metadata.metadata or {})
    if meta.get("format") != FORMAT:
        raise PredictError(f"{uri} is not a fitnas classifier (its MLmodel metadata has no class names and normalisation)")
    return Model(loaded.predict, meta, uri)


def check_dataset(meta: dict, where: str, prepared) -> None:
    """The project's own model must match the project's prepared data, or it belongs to another dataset."""
    same = (list(prepared.classes) == meta["classes"] and prepared.images.shape[1] == meta["channels"]
            and prepared.images.shape[-1] == meta["size"]
            and np.allclose(prepared.mean, meta["mean"]) and np.allclose(prepared.std, meta["std"]))
    if not same:
        raise PredictError(f"{where} was trained on another dataset than data/prepared ({len(meta['classes'])} classes, "
                           f"{meta['channels']} channel(s), {meta['size']}x{meta['size']} vs {len(prepared.classes)}, "
                           f"{prepared.images.shape[1]}, {prepared.images.shape[-1]}x{prepared.images.shape[-1]}); "
                           "re-run `dvc repro` to retrain on this data, or name the model with --model")


def image_files(paths: list[Path]) -> list[Path]:
    """The image files named, and those in the folders named (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in sources.IMAGE_SUFFIXES)
            if not found:
                raise PredictError(f"{path} holds no images (looked for {', '.join(sorted(sources.IMAGE_SUFFIXES))})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise PredictError(f"{path} does not exist")
    return files


def prepare(path: Path, meta: dict) -> np.ndarray:
    """One image file as the uint8 pixels (C, S, S) the model takes, converted and resized as training did."""
    from PIL import Image

    channels, size = meta["channels"], meta["size"]
    try:
        with Image.open(path) as im:
            colour = im.mode not in sources.GRAY_MODES
            rgb = np.asarray(im.convert("RGB")) if colour and channels == 1 else None
            picture = sources._to_mode(im, "L" if channels == 1 else "RGB")
    except Exception as err:  # Pillow raises many types for a file that is not an image
        raise PredictError(f"{path}: not an image ({type(err).__name__}: {str(err)[:160]})") from None
    if rgb is not None and not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
        # A grey picture stored as RGB is fine; a colour one would lose what the model never learnt to read.
        raise PredictError(f"{path}: a colour image, but the model takes grayscale images (1 channel, "
                           f"{size}x{size}); give a grayscale image")
    if picture.size != (size, size):
        if meta["resize"] == "pil-bilinear":
            picture = picture.resize((size, size), Image.BILINEAR)  # as sources.load_image_folder resizes
        else:
            array = np.array(picture, dtype=np.uint8)  # a copy: torch warns about Pillow's read-only buffer
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            return sources.resize(np.ascontiguousarray(array[None]), size)[0]  # as load_dataset resizes IDX and .npz arrays
    array = np.asarray(picture, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def classify(model: Model, files: list[Path]) -> pd.DataFrame:
    """One row per file: path, original size, the model's table (class, label, probability, p_<class>...)."""
    from PIL import Image

    frames = []
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        pixels = np.stack([prepare(path, model.meta) for path in chunk])
        frame = model.predict(pixels)
        sizes = []
        for path in chunk:
            with Image.open(path) as im:
                sizes.append(f"{im.size[0]}x{im.size[1]}")
        frames.append(pd.concat([pd.DataFrame({"path": [str(p) for p in chunk], "size": sizes}),
                                 pd.DataFrame(frame).reset_index(drop=True)], axis=1))
    return pd.concat(frames, ignore_index=True)


def prepared_split(path: Path):
    """data/prepared's test split when there is one (to check the model belongs to it), else None."""
    from fitnas.data import splits

    if not path.is_file():
        return None
    try:
        return splits.load_split(path)
    except DataError:
        return None

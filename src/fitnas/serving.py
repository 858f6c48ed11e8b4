"""The final model as it is shipped: uint8 pixels in, class names and probabilities out, over ONNX.

`models/final.onnx` carries what a user needs to feed it (class names, the normalisation, the input
size and channels, how training resized images) in its metadata under the key "fitnas"; `Classifier`
reads it from there, normalises the pixels exactly as training did and runs the network in
onnxruntime.

This file is also the code of the MLflow model that retraining registers ("models from code"):
MLflow copies it into the logged model and runs it when `mlflow.pyfunc.load_model` loads the model.
So it imports nothing of fitnas, and the registered model loads where fitnas is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import numpy as np
import onnxruntime
import pandas as pd

METADATA_KEY = "fitnas"
FORMAT = "fitnas-classifier/1"


class NotAClassifier(ValueError):
    """An ONNX file without fitnas's metadata: another model, or a network exported by other means."""


class Classifier:
    """The exported network behind the normalisation it was trained with."""

    def __init__(self, onnx_path: str | Path, threads: int | None = None):
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        found = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in found:
            raise NotAClassifier(f"{onnx_path} is not a fitnas classifier (its ONNX metadata has no {METADATA_KEY!r} entry)")
        self.meta: dict = json.loads(found[METADATA_KEY])
        self.classes: list[str] = list(self.meta["classes"])
        self.channels: int = int(self.meta["channels"])
        self.size: int = int(self.meta["size"])
        shape = (1, self.channels, 1, 1)
        # float32 throughout, as training normalised (torch, float32 tensors).
        self.mean = np.asarray(self.meta["mean"], dtype=np.float32).reshape(shape)
        self.std = np.asarray(self.meta["std"], dtype=np.float32).reshape(shape)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of uint8 pixels (N, C, H, W) at the model's size."""
        pixels = np.asarray(pixels)
        expected = (self.channels, self.size, self.size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(f"expected uint8 pixels of shape (N, {self.channels}, {self.size}, {self.size}), "
                             f"got {tuple(pixels.shape)}")
        if pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels 0-255, got {pixels.dtype}")
        x = (pixels.astype(np.float32) / np.float32(255.0) - self.mean) / self.std
        return self.session.run(None, {self.input_name: x.astype(np.float32)})[0]

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        logits = self.logits(pixels).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)  # softmax without overflow
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, pixels: np.ndarray) -> pd.DataFrame:
        """One row per image: the predicted class (name and index), its probability, then every class's."""
        probs = self.probabilities(pixels)
        best = probs.argmax(axis=1)
        frame = pd.DataFrame({
            "class": [self.classes[k] for k in best],
            "label": best.astype(np.int64),
            "probability": probs[np.arange(len(best)), best],
        })
        for k, name in enumerate(self.classes):
            frame[f"p_{name}"] = probs[:, k]
        return frame


class FitnasModel(mlflow.pyfunc.PythonModel):
    """The pyfunc MLflow serves: uint8 pixels (N, C, H, W) -> Classifier.predict's table."""

    def load_context(self, context) -> None:
        self.classifier = Classifier(context.artifacts["onnx"])

    # np.ndarray: a type hint MLflow infers no schema from, so the logged signature (a uint8 tensor) governs.
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        return self.classifier.predict(np.asarray(model_input))


def metadata(classes: list[str], mean: tuple[float, ...], std: tuple[float, ...], channels: int, size: int,
             resize: str, **extra: object) -> dict:
    """What the exported model needs to be fed correctly (stored in the ONNX file and the MLflow model)."""
    return {"format": FORMAT, "classes": list(classes), "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "channels": int(channels), "size": int(size), "resize": resize,
            "input": f"uint8 pixels 0-255, shape (N, {channels}, {size}, {size}), channels {'RGB' if channels == 3 else 'grayscale'}",
            **extra}


mlflow.models.set_model(FitnasModel())

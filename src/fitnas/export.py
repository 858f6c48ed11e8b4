"""The final network exported to ONNX, and its latency in onnxruntime beside PyTorch's.

The export uses the exporter torch 2.13 recommends (`torch.onnx.export(..., dynamo=True)`, which
traces with torch.export) with a dynamic batch axis. The file carries `serving.metadata` under the
key "fitnas", so it is self-describing: `fitnas predict` and the registered MLflow model need nothing
else to feed it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fitnas.distributed import torch_threads
from fitnas.latency import time_module
from fitnas.serving import METADATA_KEY

INPUT, OUTPUT = "images", "logits"


def export_onnx(net: nn.Module, input_shape: tuple[int, int, int], path: Path, metadata: dict) -> Path:
    """Write `net` (inputs normalised (N, C, H, W) -> logits) to `path` as ONNX, any batch size, with `metadata`."""
    import onnx

    # The exporter logs a warning per torchvision op it cannot register; fitnas has no torchvision ops.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model = copy.deepcopy(net).cpu().eval()
    example = torch.zeros(2, *input_shape)  # batch 2: a batch of 1 would be specialised away by torch.export
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecation notice (LeafSpec), not ours
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                    input_names=[INPUT], output_names=[OUTPUT], verbose=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    program.save(str(tmp))
    proto = onnx.load(str(tmp))
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)  # never a half-written file where a finished one is expected
    return path


def onnx_latency_ms(path: Path, input_shape: tuple[int, int, int], batch_size: int = 1, threads: int | None = 1,
                    warmup: int = 5, repeats: int = 30) -> float:
    """Median milliseconds of one onnxruntime run of a batch, on CPU with `threads` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape)).astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def measured_latency(net: nn.Module, onnx_path: Path, input_shape: tuple[int, int, int], device: torch.device,
                     settings) -> dict[str, float | int | str]:
    """The whole final network timed in PyTorch (on `device`) and in onnxruntime (CPU), as the latency stage times.

    Same batch size, threads, warm-up and repeats as the latency table (`settings` is params' `latency`).
    """
    with torch_threads(settings.threads):
        torch_ms = time_module(copy.deepcopy(net), input_shape, device, settings.batch_size, settings.warmup, settings.repeats)
    onnx_ms = onnx_latency_ms(onnx_path, input_shape, settings.batch_size, settings.threads, settings.warmup, settings.repeats)
    return {
        "measured_torch_ms": torch_ms,
        "measured_onnx_ms": onnx_ms,
        "measured_device": str(device),
        "measured_onnx_device": "cpu",  # the onnxruntime wheel fitnas installs runs on CPU only
        "measured_batch_size": settings.batch_size,
        "measured_threads": settings.threads or 0,
    }

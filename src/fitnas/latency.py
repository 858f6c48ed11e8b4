"""A per-block latency table, timed on the device that runs the final network, and its check.

A network's latency is taken as the sum of its parts' latencies: the fixed
parts (stem, head, the NAS-Bench-201 skeleton) plus one block per layer or
edge. Each distinct block is timed once (median of `repeats` runs after
`warmup`), so the table answers a latency budget for any of the space's
networks without running them. `calibrate` scales the table by one factor
fitted on a few whole networks; `check` times a few others and reports how
far the sums are from them.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fitnas.costs import AdditiveCost
from fitnas.distributed import torch_threads
from fitnas.errors import LatencyTableError
from fitnas.util import progress

FIXED = -1  # the slot of the fixed parts' row in the table


@torch.inference_mode()
def time_module(module: nn.Module, input_shape: tuple, device: torch.device, batch_size: int = 1,
                warmup: int = 5, repeats: int = 30) -> float:
    """Median milliseconds of one forward pass of a batch of `batch_size` inputs of shape (C, H, W)."""
    module = module.to(device).eval()
    x = torch.randn(batch_size, *input_shape, device=device)
    if _channels_last(module):
        x = x.to(memory_format=torch.channels_last)  # as the block's input is inside a channels-last network
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        module(x)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(x)
        sync()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _channels_last(module: nn.Module) -> bool:
    """Whether the module's convolutions keep their weights channels-last (the chain space builds them so)."""
    for p in module.parameters():
        if p.ndim == 4 and p.shape[1] * p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def build_table(space, shape, input_size: int, device: torch.device, settings, desc: str = "latency table") -> pd.DataFrame:
    """One row per (slot, choice) the space allows, plus the fixed parts' row (slot -1): latency_ms and what was timed."""

    fixed, slots = space.latency_parts(shape, input_size)
    timed: dict[str, float] = {}
    jobs = [(key, module, s) for key, module, s in fixed]
    jobs += [part for parts in slots.values() for part in parts]
    with torch_threads(settings.threads):
        for key, module, in_shape in progress(jobs, desc):
            if key not in timed:
                timed[key] = time_module(module, in_shape, device, settings.batch_size, settings.warmup, settings.repeats)
    rows = [{"slot": FIXED, "choice": FIXED, "op": "fixed", "latency_ms": sum(timed[k] for k, _, _ in fixed),
             "parts": " + ".join(k for k, _, _ in fixed)}]
    for (slot, choice), parts in sorted(slots.items()):
        rows.append({"slot": slot, "choice": choice, "op": space.OPS[choice],
                     "latency_ms": sum(timed[k] for k, _, _ in parts), "parts": " + ".join(k for k, _, _ in parts)})
    return pd.DataFrame(rows)


def to_cost(frame: pd.DataFrame, space) -> AdditiveCost:
    """The table as an additive cost over the space's architectures (NaN for choices it does not list)."""
    fixed = frame[frame.slot == FIXED]
    body = frame[frame.slot != FIXED]
    shape = (space.num_slots, len(space.OPS))
    if len(fixed) != 1 or body.slot.max() + 1 != shape[0] or body.choice.max() >= shape[1] or list(body.op) != [space.OPS[c] for c in body.choice]:
        raise LatencyTableError(f"the latency table does not fit this search space ({shape[0]} slots x {shape[1]} ops); "
                                "rebuild it: `dvc repro latency` (or `fitnas latency-table`)")
    table = np.full(shape, np.nan)
    table[body.slot.to_numpy(), body.choice.to_numpy()] = body.latency_ms.to_numpy()
    return AdditiveCost(float(fixed.latency_ms.iloc[0]), table)


def read_table(path: Path, space) -> AdditiveCost:
    if not Path(path).is_file():
        raise LatencyTableError(f"latency table {path} does not exist; build it: `dvc repro latency` (or `fitnas latency-table`)")
    frame = pd.read_csv(path)
    needed = {"slot", "choice", "op", "latency_ms"}
    if not needed <= set(frame.columns):
        raise LatencyTableError(f"{path} lacks columns {sorted(needed - set(frame.columns))}; rebuild it: `dvc repro latency`")
    return to_cost(frame, space)


def calibrate(frame: pd.DataFrame, space, shape, input_size: int, device: torch.device, settings, seed: int) -> tuple[pd.DataFrame, float]:
    """The table scaled so its sums match whole networks on average: (table, scale).

    Blocks timed one at a time run faster than the same blocks inside a network
    (warm caches, no hand-over between layers; on 2 shared CPU cores the sums
    came out 20-30% low). One factor, the ratio of measured to summed latency
    over `calibration_networks` random networks, corrects the bias; `check`
    then measures the error on other networks. The raw timings stay in
    column block_ms.
    """
    frame = frame.assign(block_ms=frame.latency_ms)
    if not settings.calibration_networks:
        return frame, 1.0
    measured = check(space, shape, input_size, to_cost(frame, space), device, settings, seed, settings.calibration_networks,
                     "latency calibration")
    scale = float(measured.measured_ms.sum() / measured.table_ms.sum())
    return frame.assign(latency_ms=frame.block_ms * scale), scale


def check(space, shape, input_size: int, cost: AdditiveCost, device: torch.device, settings, seed: int,
          networks: int | None = None, desc: str = "latency check") -> pd.DataFrame:
    """Whole networks timed against the table's sums: arch, table_ms, measured_ms, error_pct."""

    count = settings.check_networks if networks is None else networks
    archs = space.sample(count, random.Random(seed)) if count else []
    rows = []
    with torch_threads(settings.threads):
        for arch in progress(archs, desc):
            net = space.build(arch, shape)
            measured = time_module(net, (shape.in_channels, input_size, input_size), device,
                                   settings.batch_size, settings.warmup, settings.repeats)
            predicted = cost(arch)
            rows.append({"arch": space.to_str(arch), "table_ms": predicted, "measured_ms": measured,
                         "error_pct": 100.0 * (predicted - measured) / measured})
    return pd.DataFrame(rows, columns=["arch", "table_ms", "measured_ms", "error_pct"])


def add_latency(table: pd.DataFrame, space, cost: AdditiveCost) -> pd.DataFrame:
    """A lookup table with each architecture's latency from the latency table (column latency_ms)."""
    table = table.copy()
    table["latency_ms"] = [round(cost(space.parse(text)), 6) for text in table.arch]
    return table

import random

import numpy as np
import pandas as pd
import pytest
import torch

from fitnas.config import Latency
from fitnas.latency import LatencyTableError, add_latency, build_table, check, read_table, time_module, to_cost
from fitnas.spaces import nb201
from fitnas.spaces.mobilenet import ChainSpace, layout

SMALL = layout(stem=8, first=8, widths=(8, 16), depths=(2, 2), strides=(1, 2), head=16, in_channels=1, num_classes=10)
FAST = Latency(warmup=1, repeats=3, check_networks=3)
CPU = torch.device("cpu")


def test_time_module_measures_milliseconds():
    slow = torch.nn.Sequential(*[torch.nn.Conv2d(8, 8, 3, padding=1) for _ in range(6)])
    fast = torch.nn.Identity()
    t_slow = time_module(slow, (8, 32, 32), CPU, repeats=5)
    t_fast = time_module(fast, (8, 32, 32), CPU, repeats=5)
    assert 0 < t_fast < t_slow < 10_000


def test_chain_table_has_one_row_per_allowed_choice_and_sums_per_network(tmp_path):
    space = ChainSpace(SMALL)
    frame = build_table(space, SMALL, 28, CPU, FAST)
    allowed = sum(len(c) for c in space.choices)
    assert len(frame) == 1 + allowed
    assert (frame.latency_ms >= 0).all() and (frame[frame.op == "skip"].latency_ms == 0).all()
    assert frame.iloc[0].op == "fixed" and frame.iloc[0].latency_ms > 0
    frame.to_csv(tmp_path / "latency.csv", index=False)
    cost = read_table(tmp_path / "latency.csv", space)
    arch = space.random_cell(random.Random(0))
    by_row = frame.set_index(["slot", "choice"]).latency_ms
    assert cost(arch) == pytest.approx(frame.iloc[0].latency_ms + sum(by_row[i, op] for i, op in enumerate(arch)))
    assert np.isnan(cost.table[2, space.SKIP])  # layer 2 changes the width: no skip


def test_check_times_whole_networks_against_the_sums():
    space = ChainSpace(SMALL)
    cost = to_cost(build_table(space, SMALL, 28, CPU, FAST), space)
    checked = check(space, SMALL, 28, cost, CPU, FAST, seed=0)
    assert len(checked) == 3 and checked.arch.is_unique
    assert (checked.measured_ms > 0).all()
    assert np.allclose(checked.error_pct, 100 * (checked.table_ms - checked.measured_ms) / checked.measured_ms)


def test_nb201_table_covers_every_edge_and_op():
    shape = nb201.NetworkShape(channels=4, cells=1, in_channels=1, num_classes=10)
    frame = build_table(nb201.SPACE, shape, 28, CPU, FAST)
    assert len(frame) == 1 + 6 * 5
    cost = to_cost(frame, nb201.SPACE)
    assert (cost.table[:, 0] == 0).all()  # none costs nothing
    # The same op on different edges is one timed block.
    assert np.allclose(cost.table[:, 3], cost.table[0, 3])
    lookup = pd.DataFrame({"arch": [nb201.to_str(a) for a in nb201.distinct()[:5]]})
    assert add_latency(lookup, nb201.SPACE, cost).latency_ms.notna().all()


def test_table_of_another_space_is_refused(tmp_path):
    frame = build_table(ChainSpace(SMALL), SMALL, 28, CPU, Latency(warmup=0, repeats=1, check_networks=0))
    frame.to_csv(tmp_path / "latency.csv", index=False)
    with pytest.raises(LatencyTableError, match="dvc repro latency"):
        read_table(tmp_path / "latency.csv", ChainSpace())
    with pytest.raises(LatencyTableError, match="does not exist"):
        read_table(tmp_path / "missing.csv", ChainSpace())


def test_calibration_scales_the_table_to_whole_networks():
    from fitnas.latency import calibrate

    space = ChainSpace(SMALL)
    frame = build_table(space, SMALL, 28, CPU, FAST)
    settings = Latency(warmup=1, repeats=3, calibration_networks=2)
    calibrated, scale = calibrate(frame, space, SMALL, 28, CPU, settings, seed=1)
    assert scale > 0
    assert np.allclose(calibrated.latency_ms, frame.latency_ms * scale) and np.allclose(calibrated.block_ms, frame.latency_ms)
    off, one = calibrate(frame, space, SMALL, 28, CPU, Latency(calibration_networks=0), seed=1)
    assert one == 1.0 and np.allclose(off.latency_ms, frame.latency_ms)

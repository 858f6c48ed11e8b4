"""Two gloo processes under torchrun train exactly as one process on the same global batches.

The network has no BatchNorm, whose per-rank statistics are the one intended difference (see
tests/stages/test_supernet.py), so the two runs must agree to float rounding. Run as a script
under torchrun, this file is the worker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fitnas import distributed
from fitnas.train import train_epoch, sgd_one_cycle


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(10 * 37, 1, 8, 8, generator=gen)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    # 37 rows: shares of 19 and 18, so the weighting by the global batch matters.
    return [(x[i * 37 : (i + 1) * 37], y[i * 37 : (i + 1) * 37]) for i in range(10)]


def train(world: distributed.World) -> dict:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    optimizer, scheduler = sgd_one_cycle(net, 0.2, 0.9, 5e-4, 30)
    history = [train_epoch(net, batches(), optimizer, scheduler, world=world) for _ in range(3)]
    return {"history": history, "model": net.state_dict()}


def test_world_parts_and_shards_without_a_process_group():
    batch = torch.arange(5)
    assert [distributed.World(rank=r, size=2).part(batch).tolist() for r in (0, 1)] == [[0, 1, 2], [3, 4]]
    assert distributed.World().part(batch) is batch
    assert [distributed.World(rank=r, size=3).shard(list("abcdefg")) for r in range(3)] == [["a", "d", "g"], ["b", "e"], ["c", "f"]]


def test_two_processes_train_as_one(tmp_path):
    out = tmp_path / "two.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    one = train(distributed.World())
    for (loss1, acc1), (loss2, acc2) in zip(one["history"], two["history"]):
        assert abs(loss1 - loss2) < 1e-5 and acc1 == acc2
    for key, value in one["model"].items():
        assert torch.allclose(two["model"][key], value, rtol=1e-4, atol=1e-6), key


def test_distributed_off_refuses_a_torchrun_launch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.DistributedError, match="distributed: off .* 2 processes"):
        with distributed.session("off"):
            pass


if __name__ == "__main__":
    with distributed.session() as world:
        result = train(world)
        if world.is_main:
            torch.save(result, Path(sys.argv[1]))

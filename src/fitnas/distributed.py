"""Several processes under torchrun: who this process is, one gradient all-reduce per step, gathered rows.

Nothing here starts workers. `torchrun` (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT) does, and `session` joins the process group it describes: gloo on CPU,
NCCL on CUDA. Without those variables, or with `distributed: off`, a stage runs as one process and
every function here is a no-op.

Supernet training changes the path every step, so most parameters get no gradient in a given step.
PyTorch's DistributedDataParallel would need `find_unused_parameters` (a walk over the autograd graph
every step) to cope; here every rank samples the same path from a shared seed, so the set of
gradients is the same everywhere and one all-reduce of those gradients, flattened, is all a step needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fitnas.errors import DeviceError, DistributedError


@dataclass(frozen=True)
class World:
    """This process's place among the processes torchrun started (rank 0 of 1 when run alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to MLflow and writes outputs."""
        return self.rank == 0

    def part(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (shares differ by at most one row)."""
        if not self.enabled:
            return batch
        return batch.tensor_split(self.size)[self.rank]

    def shard(self, items: Sequence) -> list:
        """Every size-th item starting at this rank, for work split by item (the sample stage's networks)."""
        return list(items[self.rank :: self.size])

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def sum_gradients(self, params: Sequence[torch.nn.Parameter], extras: Sequence[float]) -> list[float]:
        """Sum the gradients of `params` (those that have one) and the numbers `extras` over all ranks.

        One collective for both: the extras carry each step's loss and the stop vote, so every rank
        sees the same numbers and takes the same decision at the same step.
        """
        if not self.enabled:
            return list(extras)
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor(extras, dtype=grads[0].dtype, device=grads[0].device)])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[offset:].tolist()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (the ranks start from one state, whatever happened before)."""
        if self.enabled:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def share(self, obj: object) -> object:
        """Rank 0's `obj` on every rank (a checkpoint that only rank 0's disk holds, on a multi-node run)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: object) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def launched_world_size() -> int:
    """How many processes the launcher started (1 when the stage runs as a plain `python` script)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun") from None


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA when asked for or (auto) when a GPU is visible, else CPU; one GPU per process on a node."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device: cuda was asked for in params.yaml but no CUDA GPU is visible; set device: auto")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(
            f"process {local_rank} on this node has no GPU of its own ({torch.cuda.device_count()} visible); "
            "start at most one process per GPU (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def session(mode: str = "auto", device: str = "auto") -> Iterator[World]:
    """Join torchrun's process group when launched by it (and `mode` is auto); leave it on the way out."""
    size = launched_world_size()
    if size > 1 and mode == "off":
        raise DistributedError(
            f"distributed: off in params.yaml, but the launcher started {size} processes; "
            "set distributed: auto, or run the stage as one process (python stages/...)"
        )
    if size == 1:
        yield World(device=pick_device(device))
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", device_id=chosen if chosen.type == "cuda" else None)
    world = World(rank=rank, size=size, local_rank=local_rank, device=chosen)
    try:
        yield world
        world.barrier()  # nobody leaves while another rank still writes
    finally:
        dist.destroy_process_group()

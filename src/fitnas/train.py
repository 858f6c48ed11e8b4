"""Plain training and evaluation loops, shared by supernet training, sampling and retraining."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class DeviceError(RuntimeError):
    """The device params.yaml asks for is not there; stages report it without a traceback."""


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device: cuda was asked for in params.yaml but no CUDA GPU is visible; set device: auto")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress(iterable, desc: str, total: int | None = None):
    """A progress bar on a terminal, silent in logs (tqdm's disable=None)."""
    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False, dynamic_ncols=True)


class NonFiniteLoss(RuntimeError):
    pass


def train_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    before_step: Callable[[], None] | None = None,
    label_smoothing: float = 0.0,
    desc: str = "train",
) -> tuple[float, float]:
    """One pass over the batches; returns mean loss and accuracy on the training data."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for step, (x, y) in enumerate(progress(batches, desc, total=len(batches) if hasattr(batches, "__len__") else None)):
        if before_step is not None:
            before_step()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if not math.isfinite(loss.item()):
            raise NonFiniteLoss(f"loss became {loss.item()} at step {step} of {desc}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss_sum / seen, correct / seen


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss_sum / seen, correct / seen


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Batches, n_batches: int) -> None:
    """Re-estimate BatchNorm statistics for the current path of a supernet.

    Shared weights were trained under many paths, so the running statistics
    belong to none of them; a cumulative average over a few training batches
    gives the statistics of this sub-network.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for i, (x, _) in enumerate(batches):
        if i >= n_batches:
            break
        model(x)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()


def save_atomic(obj: object, path: Path) -> None:
    """torch.save through a temporary file so an interrupted write never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def sgd_one_cycle(
    model: nn.Module, lr: float, momentum: float, weight_decay: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.15, anneal_strategy="cos"
    )
    return optimizer, scheduler

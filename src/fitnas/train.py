"""Plain training and evaluation loops, shared by supernet training, sampling and retraining."""

from __future__ import annotations

import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fitnas import checkpoints
from fitnas.distributed import World
from fitnas.errors import Interrupted, NonFiniteLoss
from fitnas.util import progress, save_atomic  # noqa: F401  (re-exported: stages and tests import them from here)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def single_path(space, seed: int, epoch: int, step: int) -> tuple[int, ...]:
    """The supernet's path at a training step: a uniformly random cell, a function of (seed, epoch, step) alone,
    so every rank draws the same one and a resumed run draws exactly the paths it would have."""
    return space.random_cell(random.Random(f"{seed}/{epoch}/{step}"))


def fair_paths(space, seed: int, epoch: int, step: int) -> list[tuple[int, ...]]:
    """FairNAS's strict fairness (Chu et al., ICCV 2021): the paths of one training step, in which every slot
    takes each of its choices exactly once; the step's update sums their gradients.

    Per slot, an independent random order of its choices; path k takes the k-th of each. A slot with
    fewer choices than the longest (the chain space's skip-less layers) takes its own again from the
    start of its order. A function of (seed, epoch, step) alone, as `single_path`.
    """
    rng = random.Random(f"fair/{seed}/{epoch}/{step}")
    orders = [rng.sample(list(options), len(options)) for options in space.choices]
    m = max(len(order) for order in orders)
    return [tuple(order[k % len(order)] for order in orders) for k in range(m)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device):
    """bf16 mixed precision on CUDA (bf16 keeps float32's range, so no loss scaling); plain float32 on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


class StopRequest:
    """While active, SIGTERM and SIGINT ask training to stop at the next step instead of killing it.

    The loop notices the request between steps, so the stage can save a checkpoint of a consistent
    state and exit. A second signal only repeats the message: SIGKILL stops at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        again = self.signum is not None
        self.signum = self.signum or signum
        print(
            f"\n{signal.Signals(signum).name}: " + ("already stopping; SIGKILL stops at once" if again else "stopping after this step, saving a checkpoint"),
            file=sys.stderr,
            flush=True,
        )


@dataclass
class EpochState:
    """How far an epoch got: steps applied and the sums behind its mean loss and accuracy.

    Saved in a checkpoint when training stops mid-epoch, so the resumed epoch reports what an
    uninterrupted one would.
    """

    steps: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0


class ResumableTraining:
    """The resume scaffold the supernet and retrain stages share.

    On creation it restores what an interrupted run saved (weights, optimiser, schedule, random
    state; the finished epochs' history, how far the next got); `save` writes the current state,
    with any `extra` a stage keeps of its own. Rank 0 reads and writes; every rank gets the state.
    """

    def __init__(self, resume: checkpoints.Resume, world: World, model: nn.Module, optimizer, scheduler):
        self.resume, self.world = resume, world
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.history: list[dict] = []
        self.done, self.partial, self.seconds_before = 0, EpochState(), 0.0
        self.saved = world.share(resume.load() if world.is_main else None)
        if self.saved is not None:
            checkpoints.restore_training(self.saved, model, optimizer, scheduler)
            self.history, self.done = self.saved["history"], self.saved["epoch"]
            self.partial, self.seconds_before = EpochState(**self.saved["partial"]), self.saved["seconds"]
        self.start = time.time()

    def seconds(self) -> float:
        """Training time, the interrupted runs' included."""
        return self.seconds_before + time.time() - self.start

    def resumed(self, stage: str, epochs: int) -> str | None:
        """The line that says what a resumed run continues from (None when nothing was resumed)."""
        if self.saved is None:
            return None
        where = f", {self.partial.steps} steps into epoch {self.done + 1}" if self.partial.steps else ""
        return f"{stage}: resuming from {self.resume.path}: {self.done} of {epochs} epochs done{where}"

    def save(self, epochs_done: int, state: EpochState, **extra) -> None:
        if self.world.is_main:
            self.resume.save(
                checkpoints.training_state(self.model, self.optimizer, self.scheduler)
                | {"epoch": epochs_done, "partial": vars(state), "history": self.history, "seconds": self.seconds()}
                | extra
            )


def resumable_epoch(
    run_epoch: Callable[[], tuple[float, float]],
    *,
    epoch: int,
    save_before: Callable[[], None],
    checkpoint: Path,
    lr_setting: str,
    world: World,
) -> tuple[float, float]:
    """`run_epoch()` inside a resumable stage: a stop request saves a checkpoint, a NaN keeps the last good one.

    `save_before` saves the epochs before `epoch` and the steps of this one already applied; `lr_setting`
    (e.g. "supernet.lr is 0.1") names the first thing to change when the loss diverges.
    """
    try:
        return run_epoch()
    except Interrupted as err:
        save_before()
        world.barrier()
        err.args = (f"{err}; checkpoint saved to {checkpoint}: run the stage again to resume",)
        raise
    except NonFiniteLoss as err:
        kept = (
            f"the last good checkpoint (epoch {epoch - 1}) stays in {checkpoint}"
            if checkpoint.is_file() else "no epoch had finished, so there is no checkpoint to keep"
        )
        raise NonFiniteLoss(f"{err} ({lr_setting}); {kept}") from None


def train_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    before_step: Callable[[int], None] | None = None,
    label_smoothing: float = 0.0,
    paths: Callable[[int], Sequence[tuple[int, ...]]] | None = None,
    desc: str = "train",
    world: World | None = None,
    stop: StopRequest | None = None,
    state: EpochState | None = None,
) -> tuple[float, float]:
    """One pass over the batches; returns mean loss and accuracy on the training data.

    `before_step(step)` runs before each step (the supernet picks its path there). `paths(step)`
    instead gives several paths of a supernet (`model.set_arch`) trained on the same batch in one
    step: their gradients are averaged into one update (strict fairness, `fair_paths`). Under torchrun
    (`world`) each rank computes its share of every global batch and the summed gradients equal
    the single-process gradient of the whole batch, BatchNorm statistics aside (they are per rank).
    `state` resumes an epoch stopped mid-way: its first `state.steps` batches are passed over (the
    data order still advances) and the sums carry on. A stop request raises `Interrupted` at the end
    of the step under way, when `state` describes the model exactly.
    """
    world = world or World()
    state = state if state is not None else EpochState()
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    model.train()
    total = len(batches) if hasattr(batches, "__len__") else None
    shown = progress(batches, desc, total=total) if world.is_main else batches  # one bar, rank 0's
    for step, (x, y) in enumerate(shown):
        if step < state.steps:
            continue
        n = len(y)
        if n < world.size:
            continue  # a remainder smaller than the number of ranks: no rank may get an empty share
        if before_step is not None:
            before_step(step)
        x, y = world.part(x), world.part(y)
        if paths is None:
            with autocast(device):
                logits = model(x)
            loss_sum = nn.functional.cross_entropy(logits.float(), y, label_smoothing=label_smoothing, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            # Divided by the global batch, so the gradients summed over ranks are those of the global mean.
            (loss_sum / n).backward()
            loss_value, correct_value = loss_sum.item(), (logits.argmax(1) == y).sum().item()
        else:
            step_paths = paths(step)
            optimizer.zero_grad(set_to_none=True)
            loss_value = correct_value = 0.0
            for arch in step_paths:
                model.set_arch(arch)
                with autocast(device):
                    logits = model(x)
                loss_sum = nn.functional.cross_entropy(logits.float(), y, label_smoothing=label_smoothing, reduction="sum")
                (loss_sum / (n * len(step_paths))).backward()  # accumulated: the mean over the step's paths
                loss_value += loss_sum.item() / len(step_paths)
                correct_value += (logits.argmax(1) == y).sum().item() / len(step_paths)
        stopping = stop is not None and stop.signum is not None
        local = [loss_value, correct_value, float(stopping)]
        total_loss, correct, votes = world.sum_gradients(params, local)
        if not math.isfinite(total_loss):
            raise NonFiniteLoss(f"loss became {total_loss / n} at step {step} of {desc}; lower the learning rate")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state.steps = step + 1
        state.loss_sum += total_loss
        state.correct += correct
        state.seen += n
        # Stop only after the step is applied whole: its forward pass already moved BatchNorm's
        # running statistics, so dropping the update would leave a state no run ever passes through.
        if votes:
            raise Interrupted(stop.signum if stop is not None and stop.signum else signal.SIGTERM, state.steps, desc)
    return state.loss_sum / state.seen, state.correct / state.seen


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        with autocast(device):
            logits = model(x).float()
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
    device = next(model.parameters()).device
    for i, (x, _) in enumerate(batches):
        if i >= n_batches:
            break
        with autocast(device):
            model(x)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()


def sgd_one_cycle(
    model: nn.Module, lr: float, momentum: float, weight_decay: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.15, anneal_strategy="cos"
    )
    return optimizer, scheduler

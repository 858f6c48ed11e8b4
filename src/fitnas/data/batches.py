"""Batches: normalised, optionally augmented batches served from one float tensor in memory."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch


from fitnas.data.splits import Split, normalise

class Batches:
    """Re-iterable batches of (normalised images, labels) from one in-memory split.

    Every `iter()` is one epoch. The order and the augmentation of epoch e
    depend only on (seed, e), so a run is reproducible and can resume at any
    epoch via `set_epoch`.
    """

    PAD = 2

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        seed: int,
        device: torch.device | str = "cpu",
        augment: bool = False,
        drop_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # Converted once: per-batch conversion would dominate a small CPU run.
        self.x = normalise(split.images, split.mean, split.std)
        self.y = split.labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.augment = augment
        self.drop_last = drop_last
        self.epoch = 0
        # Padding must look like black background after normalisation,
        # as if the raw image had been padded with zero pixels.
        fill = torch.tensor([(0.0 - m) / s for m, s in zip(split.mean, split.std)]).view(1, -1, 1, 1)
        self._fill = fill.to(self.device)
        if self.device.type == "cuda":
            # The whole split lives on the GPU (Fashion-MNIST's 54k images: ~170 MB) and batches
            # are gathered there: no host-to-device copy per step.
            self.x, self.y = self.x.to(self.device), self.y.to(self.device)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next `iter()` produce epoch `epoch` (for resuming)."""
        self.epoch = epoch

    def _generator(self, epoch: int) -> torch.Generator:
        # SeedSequence mixes (seed, epoch) so nearby seeds give unrelated streams.
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = self._generator(self.epoch)
        self.epoch += 1
        n = len(self.y)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size].to(self.x.device)
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = self._augment(xb, gen)
            yield (
                xb.to(self.device, non_blocking=True),
                yb.to(self.device, non_blocking=True),
            )

    def _augment(self, xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random horizontal flip and random crop after zero padding, per sample.

        Both are done by one gather: each output pixel reads its source pixel
        from the padded batch, with the flip folded into the column index.
        """
        batch, channels, height, width = xb.shape
        pad = self.PAD
        flip = torch.rand(batch, generator=gen) < 0.5
        dy = torch.randint(0, 2 * pad + 1, (batch, 1), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (batch, 1), generator=gen)

        padded = self._fill.expand(batch, channels, height + 2 * pad, width + 2 * pad).clone()
        padded[:, :, pad : pad + height, pad : pad + width] = xb
        padded_width = width + 2 * pad
        j = torch.arange(width)
        # Flipping the padded image maps column c to padded_width - 1 - c.
        cols = torch.where(flip[:, None], padded_width - 1 - dx - j, dx + j)  # (B, W)
        rows = dy + torch.arange(height)  # (B, H)
        flat = rows[:, :, None] * padded_width + cols[:, None, :]  # (B, H, W)
        # The draws come from the CPU generator whatever the device, so augmentation is the same on both.
        flat = flat.to(xb.device).reshape(batch, 1, height * width).expand(batch, channels, -1)
        out = padded.reshape(batch, channels, -1).gather(2, flat)
        return out.reshape(batch, channels, height, width)


def loader(
    split: Split,
    batch_size: int,
    shuffle: bool,
    seed: int,
    device: torch.device | str = "cpu",
    augment: bool = False,
) -> Batches:
    """Batches of (float (B, 1, H, W) normalised images, int64 (B,) labels)."""
    return Batches(split, batch_size, shuffle, seed, device=device, augment=augment)

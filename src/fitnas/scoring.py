"""Scoring sub-networks with weights inherited from the trained supernet.

The sample stage scores its networks here, and the rank check scores its own
the same way, so the two sets of supernet scores are comparable.
"""

from __future__ import annotations

from types import ModuleType

import torch

from fitnas import checkpoints, data
from fitnas.config import Params
from fitnas.pipeline import SUPERNET, TRAIN, VAL
from fitnas.train import evaluate, recalibrate_batchnorm


class SupernetScorer:
    """The trained supernet with the data it is scored on; `score(arch)` gives (loss, accuracy).

    Settings come from `sample.*`: BatchNorm recalibrated on `bn_batches` training
    batches per network, then scored on at most `val_limit` validation images.
    Each call calibrates on the next shuffle of the training data, so the k-th
    network scored gets the k-th shuffle whatever the arch.
    """

    def __init__(self, p: Params, space: ModuleType, device: torch.device, saved: dict | None = None):
        """`saved`: a supernet checkpoint's dict (shape, model); None reads the supernet stage's."""
        cfg = p.sample
        train, val = data.load_split(TRAIN), data.load_split(VAL)
        if saved is None:
            # The supernet must be the one params.yaml and the prepared data describe, not one left from other settings.
            saved = self._checked_supernet(p, space, train)
        try:
            self.shape = space.NetworkShape(**saved["shape"])
        except TypeError as err:
            raise checkpoints.CheckpointError(f"{SUPERNET} records a shape this space does not know ({err}); "
                                              f"re-run `dvc repro supernet` to recreate it") from None
        self.net = space.build_supernet(self.shape)
        checkpoints.load_weights(self.net, saved, SUPERNET, "supernet")
        self.net.to(device)

        if cfg.val_limit is not None:
            val = data.subset(val, cfg.val_limit, p.seed)
        self.calibration = data.Batches(train, cfg.bn_batch_size, shuffle=True, seed=p.seed + 1, device=device)
        self.val_batches = data.Batches(val, cfg.batch_size, shuffle=False, seed=p.seed, device=device)
        self.bn_batches = cfg.bn_batches

    def score(self, arch: tuple[int, ...], index: int | None = None) -> tuple[float, float]:
        """Validation loss and accuracy of one sub-network with inherited weights.

        `index` picks the shuffle that calibrates it (the index-th), so a network scored on any rank
        of a sharded run gets what it would get as the index-th network of a single process.
        """
        if index is not None:
            self.calibration.set_epoch(index)
        self.net.set_arch(arch)
        recalibrate_batchnorm(self.net, self.calibration, self.bn_batches)
        return evaluate(self.net, self.val_batches)

    @staticmethod
    def _checked_supernet(p: Params, space: ModuleType, train: data.Split) -> dict:
        """The supernet stage's checkpoint, refused when params.yaml or the prepared data describe another."""
        expected = {
            "channels": (p.supernet.channels, "supernet.channels"),
            "cells": (p.supernet.cells, "supernet.cells"),
            "in_channels": (train.images.shape[1], f"the prepared data ({TRAIN}: image channels)"),
            "num_classes": (len(train.classes), f"the prepared data ({TRAIN}: classes)"),
        }
        return checkpoints.load(SUPERNET, "supernet", space=space.NAME, shape=expected)

"""Scoring sub-networks with weights inherited from the trained supernet.

The sample stage scores its networks here, and the rank check scores its own
the same way, so the two sets of supernet scores are comparable.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fitnas import checkpoints

from fitnas.data import splits

from fitnas.data.batches import Batches
from fitnas.config import Params
from fitnas.errors import CheckpointError
from fitnas.spaces.base import SearchSpace
from fitnas.train import evaluate, recalibrate_batchnorm


class SupernetScorer:
    """The trained supernet with the data it is scored on; `score(arch)` gives (loss, accuracy).

    An ensemble's checkpoint (`supernet.ensemble`) gives each network the mean of its members' scores;
    a few-shot one (`supernet.few_shot_slot`) scores it with the sub-supernet of its op on that slot.
    Settings come from `sample.*`: BatchNorm recalibrated on `bn_batches` training
    batches per network, then scored on at most `val_limit` validation images.
    Each call calibrates on the next shuffle of the training data, so the k-th
    network scored gets the k-th shuffle whatever the arch.
    """

    def __init__(self, p: Params, space: SearchSpace, device: torch.device, train: splits.Split, val: splits.Split,
                 saved: dict, source: Path):
        """`saved`: a supernet checkpoint's dict (shape, model), read from `source` (named in errors)."""
        cfg = p.sample
        try:
            self.shape = space.NetworkShape(**saved["shape"])
        except TypeError as err:
            raise CheckpointError(f"{source} records a shape this space does not know ({err}); "
                                  f"re-run `dvc repro supernet` to recreate it") from None
        # An ensemble's checkpoint holds its other members' weights beside the first's ("members");
        # a few-shot one, per member, one sub-supernet per op of one slot, which scores the networks
        # that take that op there.
        def built(weights: dict) -> torch.nn.Module:
            net = space.build_supernet(self.shape)
            checkpoints.load_weights(net, weights, source, "supernet")
            return net.to(device)

        shots = saved.get("few_shot")
        if shots is None:
            members = [saved, *({"model": weights} for weights in saved.get("members", []))]
            self.members = [{None: built(member)} for member in members]
            self.slot = None
        else:
            self.slot = int(shots["slot"])
            self.members = [{int(op): built({"model": weights}) for op, weights in zip(shots["ops"], member)}
                            for member in shots["models"]]

        if cfg.val_limit is not None:
            val = splits.subset(val, cfg.val_limit, p.seed)
        self.calibration = Batches(train, cfg.bn_batch_size, shuffle=True, seed=p.seed + 1, device=device)
        self.val_batches = Batches(val, cfg.batch_size, shuffle=False, seed=p.seed, device=device)
        self.bn_batches = cfg.bn_batches

    def score(self, arch: tuple[int, ...], index: int | None = None) -> tuple[float, float]:
        """Validation loss and accuracy of one sub-network with inherited weights.

        `index` picks the shuffle that calibrates it (the index-th), so a network scored on any rank
        of a sharded run gets what it would get as the index-th network of a single process.
        """
        shuffle = self.calibration.epoch if index is None else index
        scores = []
        for member in self.members:  # an ensemble's members calibrate on the same batches
            net = member[None if self.slot is None else arch[self.slot]]
            self.calibration.set_epoch(shuffle)
            net.set_arch(arch)
            recalibrate_batchnorm(net, self.calibration, self.bn_batches)
            scores.append(evaluate(net, self.val_batches))
        if len(scores) == 1:
            return scores[0]
        return sum(s[0] for s in scores) / len(scores), sum(s[1] for s in scores) / len(scores)


def checked_supernet(p: Params, space: SearchSpace, train: splits.Split, path: Path, train_path: Path) -> dict:
    """The supernet checkpoint at `path`, refused when params.yaml or the prepared data describe another."""
    expected = {
        "channels": (p.supernet.channels, "supernet.channels"),
        "cells": (p.supernet.cells, "supernet.cells"),
        "in_channels": (train.images.shape[1], f"the prepared data ({train_path}: image channels)"),
        "num_classes": (len(train.classes), f"the prepared data ({train_path}: classes)"),
    }
    return checkpoints.load(path, "supernet", space=space.NAME, shape=expected)


def from_files(p: Params, space: SearchSpace, device: torch.device, supernet: Path, train: Path, val: Path) -> SupernetScorer:
    """The scorer for the supernet checkpoint and prepared splits at these paths (the stages': fitnas.pipeline)."""
    train_split, val_split = splits.load_split(train), splits.load_split(val)
    saved = checked_supernet(p, space, train_split, supernet, train)  # the one params.yaml and the data describe
    return SupernetScorer(p, space, device, train_split, val_split, saved, supernet)

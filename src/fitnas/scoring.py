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

    def __init__(self, p: Params, space: ModuleType, device: torch.device):
        cfg = p.sample
        saved = checkpoints.load(SUPERNET, "supernet")
        self.shape = space.NetworkShape(**saved["shape"])
        self.net = space.build_supernet(self.shape)
        self.net.load_state_dict(saved["model"])
        self.net.to(device)

        train, val = data.load_split(TRAIN), data.load_split(VAL)
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

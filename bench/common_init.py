"""Common random numbers for the truth: every network of one seed starts from the same weights where it can.

The rank check ranks networks by their stand-alone accuracy after a short training, and the two
training seeds of one network differ by about as much as the networks do (bench/README.md, the
truth's recipe). Within one seed every network already sees the same batches in the same order
and starts from the same random state, but the state is consumed module by module, so after the
first cell whose ops differ every later module (reduction blocks, classifier, later cells) draws
other initial weights. `CommonInit` re-initialises each module from a generator keyed by the seed,
the module's name and its parameters' shapes: the stem, the reduction blocks, the classifier and
the same op on the same edge start identical in every network of a seed, so what differs between
two networks of one seed is their cells and little else (the variance-reduction technique of
common random numbers). Whether that steadies the ranking is what `truth_recipe.py --common-init`
measures.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn


def init_by_name(net: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every module that owns parameters from a generator keyed by (seed, name, shapes)."""
    for name, module in net.named_modules():
        own = list(module.parameters(recurse=False))
        if not own or not hasattr(module, "reset_parameters"):
            continue
        shapes = [tuple(p.shape) for p in own]
        digest = hashlib.sha256(repr((seed, name, shapes)).encode()).digest()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(digest[:8], "little") % 2**63)
            module.reset_parameters()
    return net


class CommonInit:
    """A search space whose `build` returns networks initialised by `init_by_name` (everything else delegated).

    The seed is the one `train_from_scratch` has just set (`torch.initial_seed()`).
    """

    def __init__(self, space: Any):
        self.space = space

    def __getattr__(self, name: str) -> Any:
        return getattr(self.space, name)

    def build(self, arch: tuple[int, ...], shape: Any) -> nn.Module:
        return init_by_name(self.space.build(arch, shape), torch.initial_seed())

"""FLOPs and parameters, counted from a built network by forward hooks.

FLOPs are multiply-accumulates, the NAS convention: a convolution costs
k*k*c_in/groups per output element, a linear layer in*out per sample, a
pooling window k*k per output element. Normalisation, activations and
additions are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def count_flops(model: nn.Module, input_shape: tuple[int, ...], elementwise: bool = False) -> int:
    """MACs of one forward pass of a single sample of shape (C, H, W).

    `elementwise=True` adds what NAS-Bench-201's published figures also count:
    one op per ReLU element, two per affine BatchNorm element (one without
    affine) and one per element entering the global pool.
    """
    total = 0

    def per_element(factor_of):
        def hook(module: nn.Module, inputs, _output) -> None:
            nonlocal total
            total += factor_of(module) * inputs[0][0].numel()

        return hook

    def conv(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += kh * kw * module.in_channels // module.groups * output[0].numel()

    def linear(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += module.in_features * module.out_features

    def pool(module: nn.AvgPool2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        total += kh * kw * output[0].numel()

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear))
        elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
            hooks.append(module.register_forward_hook(pool))
        elif elementwise and isinstance(module, nn.ReLU):
            hooks.append(module.register_forward_hook(per_element(lambda m: 1)))
        elif elementwise and isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(per_element(lambda m: 2 if m.affine else 1)))
        elif elementwise and isinstance(module, nn.AdaptiveAvgPool2d):
            hooks.append(module.register_forward_hook(per_element(lambda m: 1)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class AdditiveCost:
    """A cost that is a fixed part plus one term per (slot, choice): `base + sum(table[slot, arch[slot]])`.

    A chain space's FLOPs, params and latency are such sums (each layer's cost
    depends only on its own choice), so they score whole batches of
    architectures at once. `table` holds NaN where a choice is not allowed.
    """

    def __init__(self, base: float, table: np.ndarray):
        self.base = float(base)
        self.table = np.asarray(table, dtype=float)

    def __call__(self, arch) -> float:
        return float(self.base + sum(self.table[slot, op] for slot, op in enumerate(arch)))

    def batch(self, archs: np.ndarray) -> np.ndarray:
        """Costs of archs given as an integer array [n, slots]."""
        archs = np.asarray(archs)
        return self.base + self.table[np.arange(self.table.shape[0]), archs].sum(axis=-1)

    def lowest(self) -> np.ndarray:
        """The cheapest allowed choice's cost in every slot."""
        return np.nanmin(self.table, axis=1)

    def highest(self) -> np.ndarray:
        return np.nanmax(self.table, axis=1)

    def min(self) -> float:
        """The smallest value any architecture reaches."""
        return float(self.base + self.lowest().sum())

    def max(self) -> float:
        return float(self.base + self.highest().sum())


@dataclass(frozen=True)
class CostModel:
    """FLOPs (MACs) and params in millions of every architecture of a space, as additive tables.

    Every space's networks cost a fixed part plus one term per (slot, choice): an op on a cell's
    edge is its own module, and a chain layer's input shape does not depend on the other layers.
    Tests check the sums against counting whole networks. `tables` holds "flops" and "params";
    the search adds "latency_ms" from the latency table.
    """

    tables: dict[str, AdditiveCost]

    def flops(self, arch) -> float:
        return self.tables["flops"](arch)

    def params(self, arch) -> float:
        return self.tables["params"](arch)

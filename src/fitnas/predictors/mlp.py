"""Baseline: a plain MLP on the one-hot op encoding, trained with the graph network's recipe."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from fitnas.predictors.base import Arch, NeuralPredictor, ProgressFn, TrainingRecipe, register
from fitnas.spaces.base import SearchSpace


class MLPModel(nn.Module):
    """Fully connected layers with ReLU, ending in one score per row."""

    def __init__(self, num_features: int, hidden: Sequence[int] = (128, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


@register
class MLPPredictor(NeuralPredictor):
    """A plain MLP on the one-hot op encoding, trained exactly like the graph network."""

    name = "mlp"

    STATE_KEYS = ("hidden",)

    def __init__(
        self,
        space: SearchSpace,
        recipe: TrainingRecipe | None = None,
        hidden: Sequence[int] = (128, 128),
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: ProgressFn | None = None,
        **overrides: Any,
    ):
        super().__init__(space, recipe, seed, device, progress, **overrides)
        self.hidden = tuple(hidden)
        self.num_features = len(space.onehot(space.parse(space.EXAMPLE)))

    def _encode(self, arch: Arch) -> torch.Tensor:
        return torch.tensor(self.space.onehot(arch), dtype=torch.float32)

    def _collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)

    def _build_model(self) -> nn.Module:
        return MLPModel(self.num_features, self.hidden)

"""Baseline: rank by parameter count."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fitnas.predictors.base import Arch, ParamsFn, ProgressFn, register
from fitnas.spaces.base import SearchSpace


@register
class ParamsPredictor:
    """Ranks by parameter count: the "bigger is better" baseline every predictor should beat.

    Counts the canonical cell, whose dead edges are gone, so that isomorphic
    cells get one count.
    """

    name = "params"

    def __init__(self, space: SearchSpace, param_count: ParamsFn):
        self.space = space
        self.param_count = param_count

    @classmethod
    def from_settings(cls, settings: Any, space: SearchSpace, params_fn: ParamsFn, seed: int,
                      progress: ProgressFn | None = None) -> "ParamsPredictor":
        return cls(space, params_fn)

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "ParamsPredictor":
        return self  # nothing to learn

    def query(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([float(self.param_count(self.space.canonical(tuple(a)))) for a in archs], dtype=float)

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "space": self.space.NAME}  # the counts come from the space's cost model

    @classmethod
    def from_state(cls, state: dict[str, Any], space: SearchSpace, params_fn: ParamsFn) -> "ParamsPredictor":
        return cls(space, params_fn)

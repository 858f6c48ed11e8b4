"""Baseline: a random forest on the one-hot op encoding."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from sklearn.ensemble import RandomForestRegressor

from fitnas.predictors.base import Arch, ParamsFn, ProgressFn, register
from fitnas.spaces.base import SearchSpace


@register
class RandomForestPredictor:
    """sklearn random forest on the one-hot op encoding (raw scores: trees do not care about scale).

    Saved as the data it was fitted on, not as trees (which only pickle, and pickles are not
    loaded): loading refits, which with its fixed random_state gives the same forest.
    """

    name = "rf"

    def __init__(self, space: SearchSpace, n_estimators: int = 300, seed: int = 0):
        self.space = space
        self.n_estimators, self.seed = n_estimators, seed
        self.model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=-1)
        self._fitted: tuple[list[Arch], np.ndarray] | None = None

    @classmethod
    def from_settings(cls, settings: Any, space: SearchSpace, params_fn: ParamsFn, seed: int,
                      progress: ProgressFn | None = None) -> "RandomForestPredictor":
        return cls(space, seed=seed)

    def _features(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.space.onehot(tuple(a)) for a in archs], dtype=float)

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "RandomForestPredictor":
        if len(archs) != len(y):
            raise ValueError(f"{len(archs)} archs but {len(y)} scores")
        y = np.asarray(y, dtype=float)
        self.model.fit(self._features(archs), y)
        self._fitted = ([tuple(a) for a in archs], y)
        return self

    def query(self, archs: Sequence[Arch]) -> np.ndarray:
        if len(archs) == 0:
            return np.zeros(0)
        return self.model.predict(self._features(archs))

    def state(self) -> dict[str, Any]:
        if self._fitted is None:
            raise ValueError("RandomForestPredictor.state needs a fitted predictor")
        archs, y = self._fitted
        return {"kind": self.name, "space": self.space.NAME, "n_estimators": self.n_estimators, "seed": self.seed,
                "archs": torch.tensor(archs, dtype=torch.int64), "y": torch.tensor(y, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, Any], space: SearchSpace, params_fn: ParamsFn) -> "RandomForestPredictor":
        archs = [tuple(int(op) for op in row) for row in state["archs"].tolist()]
        return cls(space, state["n_estimators"], state["seed"]).fit(archs, state["y"].numpy())

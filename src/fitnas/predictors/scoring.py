"""What drives the search of a space too large to tabulate: any predictor, behind one small interface."""

from __future__ import annotations

import itertools
from typing import Protocol, Sequence

import numpy as np

from fitnas.spaces.base import SearchSpace


class Scorer(Protocol):
    """Scores for the search strategies (`fitnas.chainsearch`): higher is better; `to_accuracy` maps them back."""

    evaluations: int  # architectures scored so far

    def score(self, archs: np.ndarray) -> np.ndarray:
        """Scores of whole architectures, an integer array [n, slots]."""

    def score_segment(self, context: Sequence[int], start: int, stop: int) -> np.ndarray:
        """Scores of every choice of slots [start, stop) with the others as in `context`: one axis per slot,
        indexed by position in `space.choices[slot]` (row-major, the last slot fastest)."""

    def to_accuracy(self, scores: np.ndarray) -> np.ndarray: ...


class PredictorScorer:
    """Any fitted predictor as a `Scorer`: builds the architectures and queries them, in chunks.

    Scores are the predictor's own predictions (already on the accuracy scale). A predictor with a
    faster way (the graph network on chain spaces: `fitnas.pathscore.PathGCN`) offers it through a
    `scorer(space)` method of its own; this adapter is what every other predictor gets.
    """

    def __init__(self, predictor, space: SearchSpace, chunk: int = 8192):
        self.predictor, self.space, self.chunk = predictor, space, chunk
        self.evaluations = 0

    def to_accuracy(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float)

    def score(self, archs: np.ndarray) -> np.ndarray:
        archs = np.asarray(archs)
        if archs.ndim != 2 or archs.shape[1] != self.space.num_slots:
            raise ValueError(f"expected archs of shape [n, {self.space.num_slots}], got {tuple(archs.shape)}")
        out = np.empty(len(archs))
        for start in range(0, len(archs), self.chunk):
            rows = [tuple(int(op) for op in row) for row in archs[start : start + self.chunk]]
            out[start : start + len(rows)] = self.predictor.query(rows)
        self.evaluations += len(archs)
        return out

    def score_segment(self, context: Sequence[int], start: int, stop: int) -> np.ndarray:
        choices = [self.space.choices[slot] for slot in range(start, stop)]
        combos = np.array(list(itertools.product(*choices)), dtype=np.int64).reshape(-1, stop - start)
        archs = np.repeat(np.asarray(context, dtype=np.int64)[None, :], len(combos), axis=0)
        archs[:, start:stop] = combos
        return self.score(archs).reshape([len(c) for c in choices])


def scorer_for(predictor, space: SearchSpace) -> Scorer:
    """The fastest scorer a predictor offers for a space (its own `scorer`, else the generic adapter)."""
    own = getattr(predictor, "scorer", None)
    return own(space) if own is not None else PredictorScorer(predictor, space)

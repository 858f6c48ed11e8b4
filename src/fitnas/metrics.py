"""How well a predicted ranking of architectures matches the true one.

Higher values mean better architectures, for predictions and truth alike.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def _as_pair(pred: Sequence[float], true: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    pred_arr = np.asarray(pred, dtype=float).ravel()
    true_arr = np.asarray(true, dtype=float).ravel()
    if len(pred_arr) != len(true_arr):
        raise ValueError(f"pred has {len(pred_arr)} values but true has {len(true_arr)}; they must pair up")
    if len(pred_arr) == 0:
        raise ValueError("cannot rank an empty list of architectures")
    return pred_arr, true_arr


def _undefined(pred: np.ndarray, true: np.ndarray) -> bool:
    # A rank correlation is undefined (scipy says nan, with a warning) when
    # either side is constant or there is a single item: there is no ordering
    # to compare. A constant predictor carries no ranking information, so we
    # score it as chance level (0.0) rather than let a nan poison averages
    # and plots.
    return len(pred) < 2 or bool(np.all(pred == pred[0])) or bool(np.all(true == true[0]))


def _finite_or_zero(value: float) -> float:
    # Same reasoning for any nan scipy still returns (e.g. nan inputs).
    return 0.0 if math.isnan(value) else float(value)


def kendall_tau(pred: Sequence[float], true: Sequence[float]) -> float:
    """Kendall's tau-b between predictions and truth; 0.0 when either side is constant."""
    pred_arr, true_arr = _as_pair(pred, true)
    if _undefined(pred_arr, true_arr):
        return 0.0
    return _finite_or_zero(stats.kendalltau(pred_arr, true_arr).statistic)


def spearman_rho(pred: Sequence[float], true: Sequence[float]) -> float:
    """Spearman's rank correlation; 0.0 when either side is constant."""
    pred_arr, true_arr = _as_pair(pred, true)
    if _undefined(pred_arr, true_arr):
        return 0.0
    return _finite_or_zero(stats.spearmanr(pred_arr, true_arr).statistic)


def precision_at_top(pred: Sequence[float], true: Sequence[float], fraction: float) -> float:
    """Share of the true top-k found in the predicted top-k, with k = max(1, round(fraction * n)).

    Ties are broken by position (a stable sort), so the result is deterministic
    even for a constant predictor.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pred_arr, true_arr = _as_pair(pred, true)
    k = max(1, round(fraction * len(pred_arr)))
    top_pred = np.argsort(-pred_arr, kind="stable")[:k]
    top_true = np.argsort(-true_arr, kind="stable")[:k]
    return len(set(top_pred.tolist()) & set(top_true.tolist())) / k


def ranking_report(pred: Sequence[float], true: Sequence[float]) -> dict:
    """All ranking metrics at once, as plain floats (plus the item count n)."""
    pred_arr, true_arr = _as_pair(pred, true)
    return {
        "kendall_tau": kendall_tau(pred_arr, true_arr),
        "spearman_rho": spearman_rho(pred_arr, true_arr),
        "precision_top10": precision_at_top(pred_arr, true_arr, 0.10),
        "precision_top5": precision_at_top(pred_arr, true_arr, 0.05),
        "precision_top1": precision_at_top(pred_arr, true_arr, 0.01),
        "n": int(len(pred_arr)),
    }


def bootstrap_kendall_tau(pred: Sequence[float], true: Sequence[float], n: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of Kendall's tau over n resamples of the items, drawn with replacement.

    Each resample keeps the pairs together, so the interval shows how much tau
    depends on which architectures happened to be measured. The same seed draws
    the same resamples for any pred of the same length, so intervals of several
    predictors against one truth are computed on identical resamples.
    """
    if n < 1:
        raise ValueError(f"need at least one resample, got n={n}")
    pred_arr, true_arr = _as_pair(pred, true)
    rng = np.random.default_rng(seed)
    taus = np.empty(n)
    for i in range(n):
        idx = rng.integers(0, len(pred_arr), len(pred_arr))
        taus[i] = kendall_tau(pred_arr[idx], true_arr[idx])
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(low), float(high)

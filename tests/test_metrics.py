"""Ranking metrics on hand-made cases with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from fitnas.metrics import bootstrap_kendall_tau, kendall_tau, precision_at_top, ranking_report, spearman_rho


def test_identical_ranking_is_perfect():
    true = [0.1, 0.5, 0.3, 0.9, 0.7]
    pred = [1, 5, 3, 9, 7]  # any monotone map of the truth
    assert kendall_tau(pred, true) == pytest.approx(1.0)
    assert spearman_rho(pred, true) == pytest.approx(1.0)


def test_reversed_ranking_is_minus_one():
    true = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(true[::-1], true) == pytest.approx(-1.0)
    assert spearman_rho(true[::-1], true) == pytest.approx(-1.0)


def test_one_swapped_pair():
    # Of the 6 pairs, only (2nd, 3rd) is discordant: tau = (5 - 1) / 6.
    # Rank differences d = (0, 1, -1, 0): rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    pred = [1, 2, 3, 4]
    true = [1, 3, 2, 4]
    assert kendall_tau(pred, true) == pytest.approx(2 / 3)
    assert spearman_rho(pred, true) == pytest.approx(0.8)


def test_precision_at_top_counts_the_overlap():
    # n = 10, fraction 0.2 -> k = 2. True top-2: items 9 and 8.
    # Predicted top-2: items 9 and 0 -> overlap 1 of 2.
    true = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    pred = [8.5, 1, 2, 3, 4, 5, 6, 7, 0, 9]
    assert precision_at_top(pred, true, 0.2) == 0.5
    assert precision_at_top(true, true, 0.2) == 1.0


def test_precision_at_top_keeps_at_least_one_item():
    # round(0.01 * 10) = 0, so k falls back to 1: only the single best counts.
    true = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert precision_at_top(true, true, 0.01) == 1.0
    assert precision_at_top([9, 1, 2, 3, 4, 5, 6, 7, 8, 0], true, 0.01) == 0.0


def test_precision_at_top_rejects_bad_fractions():
    with pytest.raises(ValueError):
        precision_at_top([1, 2], [1, 2], 0.0)
    with pytest.raises(ValueError):
        precision_at_top([1, 2], [1, 2], 1.5)


def test_constant_prediction_scores_zero():
    true = [0.1, 0.2, 0.3, 0.4]
    assert kendall_tau([0.5] * 4, true) == 0.0
    assert spearman_rho([0.5] * 4, true) == 0.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="pair up"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        spearman_rho([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        precision_at_top([1, 2, 3], [1, 2], 0.5)
    with pytest.raises(ValueError):
        ranking_report([1, 2, 3], [1, 2])


def test_empty_input_raises():
    with pytest.raises(ValueError):
        kendall_tau([], [])


def test_ranking_report():
    rng = np.random.default_rng(0)
    true = rng.normal(size=200)
    report = ranking_report(true * 2.0 + 1.0, true)
    assert set(report) == {"kendall_tau", "spearman_rho", "precision_top10", "precision_top5", "precision_top1", "n"}
    assert report["n"] == 200
    assert all(report[key] == pytest.approx(1.0) for key in report if key != "n")
    assert all(isinstance(report[key], float) for key in report if key != "n")


def _noisy_ranking(m: int) -> tuple[np.ndarray, np.ndarray]:
    # A predictor that knows the truth up to noise: tau well inside (0, 1).
    rng = np.random.default_rng(0)
    true = rng.normal(size=m)
    return true + rng.normal(size=m), true


def test_bootstrap_interval_contains_the_point_estimate():
    pred, true = _noisy_ranking(40)
    low, high = bootstrap_kendall_tau(pred, true, n=500, seed=0)
    assert -1.0 <= low < kendall_tau(pred, true) < high <= 1.0


def test_bootstrap_interval_narrows_with_more_architectures():
    few = bootstrap_kendall_tau(*_noisy_ranking(20), n=500, seed=0)
    many = bootstrap_kendall_tau(*_noisy_ranking(500), n=500, seed=0)
    assert many[1] - many[0] < (few[1] - few[0]) / 2  # width shrinks like 1/sqrt(m): 5x here


def test_bootstrap_interval_is_deterministic_by_seed():
    pred, true = _noisy_ranking(30)
    assert bootstrap_kendall_tau(pred, true, n=200, seed=3) == bootstrap_kendall_tau(pred, true, n=200, seed=3)
    assert bootstrap_kendall_tau(pred, true, n=200, seed=3) != bootstrap_kendall_tau(pred, true, n=200, seed=4)


def test_bootstrap_of_a_perfect_ranking_is_a_point():
    # Every resample of a monotone pairing is itself monotone (ties tie on both sides);
    # only a resample of one item repeated would score 0, and with 10 items that never comes up.
    true = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]
    assert bootstrap_kendall_tau([10 * t for t in true], true, n=100, seed=0) == pytest.approx((1.0, 1.0))


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="pair up"):
        bootstrap_kendall_tau([1, 2, 3], [1, 2], n=10, seed=0)
    with pytest.raises(ValueError, match="resample"):
        bootstrap_kendall_tau([1, 2, 3], [1, 2, 3], n=0, seed=0)

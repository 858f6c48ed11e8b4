"""Ranking metrics on hand-made cases with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from fitnas.metrics import kendall_tau, precision_at_top, ranking_report, spearman_rho


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

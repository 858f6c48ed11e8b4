"""The multi-fidelity predictor on synthetic problems whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitnas.metrics import kendall_tau
from fitnas.predictors.multifidelity import MultiFidelityPredictor, simplex_weights
from fitnas.predictors import GCNPredictor
from fitnas.spaces import nb201

# Small but real: a graph network that trains in seconds.
QUICK = dict(epochs=40, ensemble=1, validation=0.0, folds=4,
             tune_epochs={"head": (20, 60), "all": (10, 30)}, truth_epochs=(40, 80))


def op_counts(arch) -> np.ndarray:
    return np.array([sum(op == k for op in nb201.canonical(arch)) for k in range(1, 5)], dtype=float)


def truth_of(cells) -> np.ndarray:
    """A made-up accuracy: per-edge op effects plus an interaction (convolutions help more with a skip)."""
    effect = np.random.default_rng(0).normal(0.0, 1.0, (len(nb201.EDGES), len(nb201.OPS)))
    values = []
    for cell in cells:
        c = nb201.canonical(cell)
        counts = op_counts(c)
        values.append(sum(effect[e, op] for e, op in enumerate(c)) + 0.8 * counts[2] * (counts[0] > 0))
    return np.array(values)


# The low fidelity's bias: a known offset per op, as a short schedule under-rates 3x3 convolutions
# and over-rates pooling. Large enough that the low fidelity alone ranks badly.
OFFSET = np.array([0.0, 0.0, -2.5, 1.5])  # skip, conv1x1, conv3x3, pool


@pytest.fixture(scope="module")
def problem():
    cells = list(nb201.distinct())
    truth = truth_of(cells)
    low = truth + np.array([op_counts(c) @ OFFSET for c in cells])
    rng = np.random.default_rng(1)
    order = rng.permutation(len(cells))
    low_idx, truth_idx = order[:300], order[300:320]
    return cells, truth, low, low_idx, truth_idx


def fit_truth_only(cells, truth, truth_idx) -> np.ndarray:
    gcn = GCNPredictor(nb201, epochs=80, ensemble=1, validation=0.0, seed=0)
    return gcn.fit([cells[i] for i in truth_idx], truth[truth_idx]).query(cells)


def test_fusion_corrects_a_per_op_bias_better_than_either_fit_alone(problem):
    cells, truth, low, low_idx, truth_idx = problem
    assert kendall_tau(low, truth) < 0.6  # the bias is real
    low_fit = GCNPredictor(nb201, epochs=40, ensemble=1, validation=0.0, seed=0)
    low_only = kendall_tau(low_fit.fit([cells[i] for i in low_idx], low[low_idx]).query(cells), truth)
    truth_only = kendall_tau(fit_truth_only(cells, truth, truth_idx), truth)

    mf = MultiFidelityPredictor(nb201, seed=0, **QUICK)
    mf.fit([cells[i] for i in truth_idx], truth[truth_idx], low={"short": ([cells[i] for i in low_idx], low[low_idx])})
    fused = kendall_tau(mf.query(cells), truth)
    assert fused > max(low_only, truth_only) + 0.03, (fused, low_only, truth_only, mf.report)
    # The choice was made on the 20 truths: the fine-tuned expert carries weight.
    assert mf.report["truths"] == 20 and mf.report["low"] == {"short": 300}
    weights = dict(zip(mf.report["components"], mf.report["weights"]))
    assert weights["short:head"] + weights["short:all"] > 0


def test_a_shuffled_low_fidelity_leaves_the_truth_only_result(problem):
    cells, truth, low, low_idx, truth_idx = problem
    shuffled = np.random.default_rng(5).permutation(low[low_idx])
    truth_only = kendall_tau(fit_truth_only(cells, truth, truth_idx), truth)
    mf = MultiFidelityPredictor(nb201, seed=0, **QUICK)
    mf.fit([cells[i] for i in truth_idx], truth[truth_idx], low={"noise": ([cells[i] for i in low_idx], shuffled)})
    fused = kendall_tau(mf.query(cells), truth)
    # Within noise of the truth-only fit (seed-to-seed spread of a 20-truth fit is several hundredths).
    assert fused >= truth_only - 0.05, (fused, truth_only, mf.report)


def test_without_low_fidelity_it_is_a_truth_fit_that_can_weigh_free_signals(problem):
    cells, truth, _, _, truth_idx = problem
    informative = {"counts": lambda a: float(op_counts(a) @ np.array([0.0, 0.3, 1.0, -0.5]))}
    mf = MultiFidelityPredictor(nb201, seed=0, **QUICK).fit([cells[i] for i in truth_idx], truth[truth_idx],
                                                          free=informative)
    assert mf.report["components"] == ["truth", "counts"]
    assert sum(mf.report["weights"]) == pytest.approx(1.0)
    pred = mf.query(cells)
    assert np.isfinite(pred).all() and len(pred) == len(cells)
    # Isomorphic cells get one prediction.
    cell = nb201.parse(nb201.EXAMPLE)
    assert mf.query([cell])[0] == pytest.approx(mf.query([nb201.canonical(cell)])[0])


def test_state_and_load_give_the_same_predictions(problem, tmp_path):
    cells, truth, low, low_idx, truth_idx = problem
    free = {"params": lambda a: float(op_counts(a)[1:3].sum())}
    mf = MultiFidelityPredictor(nb201, seed=0, **QUICK)
    mf.fit([cells[i] for i in truth_idx], truth[truth_idx], low={"short": ([cells[i] for i in low_idx], low[low_idx])},
           free=free)
    path = tmp_path / "mf.pt"
    torch.save(mf.state(), path)
    state = torch.load(path, weights_only=True)
    again = MultiFidelityPredictor.load(state, nb201, free=free)
    assert again.query(cells[:300]) == pytest.approx(mf.query(cells[:300]))
    if "params" in mf.references:
        with pytest.raises(ValueError, match="free"):
            MultiFidelityPredictor.load(state, nb201)


def test_pretraining_is_reused_for_the_same_low_data(problem):
    cells, truth, low, low_idx, truth_idx = problem
    data = {"short": ([cells[i] for i in low_idx[:100]], low[low_idx[:100]])}
    mf = MultiFidelityPredictor(nb201, seed=0, fusion="finetune", **{**QUICK, "epochs": 5})
    mf.pretrain(data)
    expert = mf.experts["short"]
    mf.fit([cells[i] for i in truth_idx], truth[truth_idx], low=data)
    assert mf.experts["short"] is expert and mf.report["components"] == ["short:head", "short:all"]
    mf.pretrain({"short": (data["short"][0], data["short"][1] + 1.0)})
    assert mf.experts["short"] is not expert


def test_simplex_weights_find_the_informative_column():
    rng = np.random.default_rng(0)
    y = rng.normal(size=60)
    columns = np.column_stack([rng.normal(size=60), y + 0.1 * rng.normal(size=60), rng.normal(size=60)])
    w, tau = simplex_weights(columns, y)
    assert w.sum() == pytest.approx(1.0) and w[1] >= 0.8 and tau > 0.8


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fusion"):
        MultiFidelityPredictor(nb201, fusion="average")
    with pytest.raises(ValueError, match="tune"):
        MultiFidelityPredictor(nb201, tune="middle")
    with pytest.raises(ValueError, match="scores"):
        MultiFidelityPredictor(nb201).fit([nb201.parse(nb201.EXAMPLE)], [1.0, 2.0])
    with pytest.raises(RuntimeError, match="before fit"):
        MultiFidelityPredictor(nb201).query([nb201.parse(nb201.EXAMPLE)])

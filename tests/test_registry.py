"""The predictor registry: every kind builds from settings, saves and loads itself, and drives a large-space search."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fitnas import chainsearch, config, predictors
from fitnas.predictors import PredictorScorer, scorer_for
from fitnas.spaces import nb201
from fitnas.spaces.mobilenet import ChainSpace, layout

SMALL = ChainSpace(layout(widths=(8, 16), depths=(2, 3), strides=(1, 2), head=16, in_channels=1, num_classes=10))
SETTINGS = config.Predictor(hidden=8, layers=2, epochs=3, validation=0.0, ensemble=1)


def _params(arch) -> float:
    return float(sum(arch))


def _fitted(kind: str, space, n: int = 40):
    archs = space.sample(n, random.Random(0))
    y = [float(sum(a)) + 0.1 * i % 3 for i, a in enumerate(archs)]
    return predictors.from_settings(kind, SETTINGS, space, _params, seed=0).fit(archs, y), archs


@pytest.mark.parametrize("kind", predictors.KINDS)
def test_every_kind_saves_and_loads_to_the_same_predictions(kind, tmp_path):
    predictor, archs = _fitted(kind, nb201.SPACE)
    torch.save(predictors.state(predictor), tmp_path / "p.pt")
    loaded = predictors.load(torch.load(tmp_path / "p.pt", weights_only=True), nb201.SPACE, _params)
    assert type(loaded) is type(predictor)
    np.testing.assert_allclose(loaded.query(archs), predictor.query(archs), rtol=0, atol=1e-9)


def test_load_refuses_another_space_and_unknown_kinds():
    predictor, _ = _fitted("mlp", nb201.SPACE)
    with pytest.raises(ValueError, match="fitted on space 'nb201'"):
        predictors.load(predictor.state(), SMALL, _params)
    with pytest.raises(ValueError, match="not a saved predictor"):
        predictors.load({"kind": "xgboost", "space": "nb201"}, nb201.SPACE, _params)


def test_register_refuses_a_kind_twice():
    class Again:
        name = "gcn"

    with pytest.raises(ValueError, match="registered twice"):
        predictors.register(Again)


def test_generic_scorer_agrees_with_query_on_whole_archs_and_segments():
    predictor, _ = _fitted("rf", SMALL)
    scorer = PredictorScorer(predictor, SMALL)
    archs = np.array(SMALL.sample(20, random.Random(1)))
    np.testing.assert_allclose(scorer.score(archs), predictor.query([tuple(a) for a in archs]))
    context = list(archs[0])
    segment = scorer.score_segment(context, 1, 3)
    assert segment.shape == tuple(len(SMALL.choices[s]) for s in (1, 2))
    i, j = 2, 1
    probe = list(context)
    probe[1], probe[2] = SMALL.choices[1][i], SMALL.choices[2][j]
    assert segment[i, j] == pytest.approx(predictor.query([tuple(probe)])[0])


@pytest.mark.parametrize("kind", ["mlp", "rf", "params"])
def test_any_predictor_drives_the_progressive_search(kind):
    predictor, _ = _fitted(kind, SMALL)
    scorer = scorer_for(predictor, SMALL)
    assert isinstance(scorer, PredictorScorer)
    costs = SMALL.cost_model(SMALL.layout, 28)
    settings = config.Search(segment=3, super_cells=2, contexts=1)
    result = chainsearch.run("progressive", SMALL, scorer, chainsearch.cost_tables(costs), config.Budget(), settings, 0)
    best = SMALL.parse(result.candidates.sort_values("predicted_acc").arch.iloc[-1])
    assert result.candidates.predicted_acc.max() == pytest.approx(predictor.query([best])[0])


def test_the_graph_network_keeps_its_fast_path_on_chains_only():
    from fitnas.pathscore import PathGCN

    gcn, _ = _fitted("gcn", SMALL)
    assert isinstance(scorer_for(gcn, SMALL), PathGCN)
    cell_gcn, _ = _fitted("gcn", nb201.SPACE)
    assert isinstance(scorer_for(cell_gcn, nb201.SPACE), PredictorScorer)


def test_the_multifidelity_kind_fuses_on_the_chain_space_and_reloads(tmp_path):
    archs = SMALL.sample(60, random.Random(0))
    truth = [float(sum(a)) for a in archs]
    low = [t + 3.0 * (a[0] == SMALL.choices[0][0]) for t, a in zip(truth, archs)]  # biased toward one op
    fused = predictors.from_settings("multifidelity", SETTINGS, SMALL, _params, seed=0)
    fused.fit(archs[:12], truth[:12], low={"supernet": (archs[12:], low[12:])}, free={"params": _params})
    assert sum(fused.report["weights"]) == pytest.approx(1.0) and fused.report["truths"] == 12
    torch.save(predictors.state(fused), tmp_path / "p.pt")
    loaded = predictors.load(torch.load(tmp_path / "p.pt", weights_only=True), SMALL, _params)
    np.testing.assert_allclose(loaded.query(archs), fused.query(archs), rtol=0, atol=1e-9)
    assert isinstance(scorer_for(loaded, SMALL), PredictorScorer)

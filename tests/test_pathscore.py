import random

import numpy as np
import pytest
import torch

from fitnas.pathscore import PathGCN, segment_size
from fitnas.predictors import GCNPredictor, gcn_state, load_gcn
from fitnas.spaces.mobilenet import ChainSpace, layout

SMALL = layout(stem=8, first=8, widths=(8, 16, 16), depths=(3, 3, 3), strides=(1, 2, 2), head=32,
                     in_channels=1, num_classes=10)


@pytest.fixture(scope="module")
def fitted():
    space = ChainSpace(SMALL)
    rng = random.Random(0)
    archs = space.sample(60, rng)
    # A target with interactions between neighbouring layers, so the fitted network is not trivial.
    y = [sum(a) / 10 + (a[2] == a[3]) * 0.5 + rng.random() * 0.1 for a in archs]
    predictor = GCNPredictor(space, hidden=16, layers=3, epochs=5, ensemble=2, validation=0).fit(archs, y)
    return space, predictor


def test_saved_predictor_loads_with_weights_only_and_predicts_the_same(fitted, tmp_path):
    space, predictor = fitted
    torch.save(gcn_state(predictor), tmp_path / "p.pt")
    loaded = load_gcn(torch.load(tmp_path / "p.pt", weights_only=True), space)
    archs = space.sample(20, random.Random(5))
    assert np.allclose(loaded.query(archs), predictor.query(archs), atol=1e-6)
    other = ChainSpace(layout(widths=(8, 16), depths=(2, 2), strides=(1, 2)))
    with pytest.raises(ValueError, match="re-run the fit"):
        load_gcn(gcn_state(predictor), other)


def test_whole_architectures_score_as_the_graph_network_does(fitted):
    space, predictor = fitted
    scorer = PathGCN(predictor, space)
    archs = space.sample(40, random.Random(1))
    expected = predictor.query(archs)
    scores = scorer.score(np.array(archs), batch=16)
    assert np.allclose(scorer.to_accuracy(scores), expected, atol=1e-5)
    assert scorer.evaluations == 40


@pytest.mark.parametrize("start, stop", [(0, 3), (3, 7), (6, 9), (2, 3)])
def test_a_segment_scores_every_combination_exactly(fitted, start, stop):
    space, predictor = fitted
    scorer = PathGCN(predictor, space)
    context = space.random_cell(random.Random(2))
    table = scorer.score_segment(context, start, stop, chunk=50)  # small chunks: the looped path is tested too
    assert table.shape == tuple(len(space.choices[i]) for i in range(start, stop))
    assert table.size == segment_size(space, start, stop)
    archs = []
    for digits in np.ndindex(*table.shape):
        arch = list(context)
        for j, d in enumerate(digits):
            arch[start + j] = space.choices[start + j][d]
        archs.append(arch)
    direct = scorer.score(np.array(archs))
    assert np.allclose(table.ravel(), direct, atol=1e-5)
    assert np.allclose(scorer.score_segment(context, start, stop), table, atol=1e-5)  # one pass, no looping

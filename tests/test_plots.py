"""The pictures: files written, the chosen network marked, layouts that fit a page."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from fitnas import plots


def test_predicted_vs_measured_wraps_after_two_panels(tmp_path):
    rng = np.random.default_rng(0)
    measured = rng.random(20)
    holdout = pd.DataFrame({"arch": list("abcdefghijklmnopqrst"), "measured_acc": measured})
    for name in ("gcn", "mlp", "rf", "params"):
        holdout[f"pred_{name}"] = measured + rng.normal(0, 0.1, 20)
    holdout["predicted"] = holdout["pred_gcn"]  # not a predictor of its own: no panel
    path = plots.predicted_vs_measured(holdout, {"gcn": {"kendall_tau": 0.5}}, tmp_path / "scatter.png")
    width, height = Image.open(path).size
    assert width < 1000 and height > width * 0.9  # 2 x 2 panels, not a strip of 4 (or 5)


def test_pareto_marks_the_chosen_network_and_the_budget(tmp_path):
    table = pd.DataFrame({"flops_M": [1.0, 2.0, 3.0, 4.0], "predicted_acc": [0.5, 0.7, 0.6, 0.8], "arch": list("abcd")})
    front = table.iloc[[0, 1, 3]]
    path = plots.pareto(table, front, table.iloc[1], tmp_path / "pareto.png", budget_flops=2.5)
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # The red star of the chosen network (tab:red) is drawn.
    red = (abs(image[..., 0] - 214) < 20) & (abs(image[..., 1] - 39) < 20) & (abs(image[..., 2] - 40) < 20)
    assert red.sum() > 50

"""The fit stage with and without anchors: networks trained alone switch the lookup table to the fusion."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from conftest import run, stage_command, stage_project
from fitnas import predictors
from fitnas.spaces import nb201

pytestmark = pytest.mark.slow

CONVS = {nb201.OPS.index("nor_conv_3x3"), nb201.OPS.index("nor_conv_1x1")}


def _truth(arch) -> float:
    """A known accuracy: convolutions help, the supernet below prefers skips (a systematic error)."""
    return 0.80 + 0.02 * sum(op in CONVS for op in arch)


@pytest.fixture(scope="module")
def fit_project(tmp_path_factory):
    small = {"predictor": {"epochs": 20, "ensemble": 1, "hidden": 16, "layers": 2, "baselines": ["params"]}}
    project = stage_project(tmp_path_factory.mktemp("stages") / "fit", small)
    rng = random.Random(0)
    cells = [nb201.canonical(c) for c in nb201.distinct()]
    rng.shuffle(cells)
    samples, anchors = cells[:40], cells[40:52]
    skip = nb201.OPS.index("skip_connect")
    noise = np.random.default_rng(0).normal(0, 0.005, len(samples))
    (project / "results").mkdir()
    pd.DataFrame({
        "arch": [nb201.to_str(a) for a in samples],
        "supernet_acc": [0.5 + 0.03 * sum(op == skip for op in a) + e for a, e in zip(samples, noise)],
        "flops_M": [float(sum(op in CONVS for op in a)) for a in samples],
        "params_M": [float(sum(op in CONVS for op in a)) for a in samples],
        "synflow": [_truth(a) for a in samples],  # a proxy that ranks well
        "jacov": [-np.inf if i % 7 == 0 else rng.random() for i in range(len(samples))],  # one that says nothing
    }).to_csv(project / "results/samples.csv", index=False)
    pd.DataFrame({"arch": [nb201.to_str(a) for a in anchors], "accuracy": [_truth(a) for a in anchors]}).to_csv(
        project / "results/anchors.csv", index=False)
    return project


def test_anchors_switch_the_lookup_table_to_the_multifidelity_fusion(fit_project):
    result = run(stage_command("fit"), fit_project)
    assert "multifidelity on 12 anchors" in result.stdout
    fit = json.loads((fit_project / "metrics/fit.json").read_text())
    assert fit["anchors"] == 12 and fit["lookup_predictor"] == "multifidelity" and fit["predictor"] == "gcn"
    assert -1 <= fit["multifidelity.cv_kendall_tau"] <= 1
    weights = {k.removeprefix("multifidelity.weight."): v for k, v in fit.items() if k.startswith("multifidelity.weight.")}
    assert sum(weights.values()) == pytest.approx(1.0) and "params" in weights
    # Each proxy is also a ranking of its own, beside FLOPs.
    assert {"synflow.kendall_tau", "jacov.kendall_tau", "flops_M.kendall_tau"} <= fit.keys()

    lookup = pd.read_csv(fit_project / "results/lookup.csv")
    assert len(lookup) == len(nb201.distinct())
    # The lookup table is on the anchors' scale (stand-alone accuracy), and ranks by the truth.
    truth = np.array([_truth(nb201.parse(a)) for a in lookup.arch])
    assert lookup.predicted_acc.between(0.7, 0.95).all()
    assert pd.Series(lookup.predicted_acc).corr(pd.Series(truth), method="kendall") > 0.3

    loaded = predictors.load_file(fit_project / "models/predictor.pt", nb201.SPACE, lambda arch: 1.0)
    assert loaded.name == "multifidelity"


def test_no_anchors_keeps_the_supernet_only_fit(fit_project):
    anchors = fit_project / "results/anchors.csv"
    kept = anchors.read_text()
    anchors.write_text("arch,accuracy\n")
    try:
        run(stage_command("fit"), fit_project)
    finally:
        anchors.write_text(kept)
    fit = json.loads((fit_project / "metrics/fit.json").read_text())
    assert fit["anchors"] == 0 and fit["lookup_predictor"] == "gcn"
    assert not any(k.startswith("multifidelity.") for k in fit)


@pytest.mark.parametrize("content, message", [
    ("arch,accuracy\n|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|,0.9\n",
     "has 1 networks; the fit needs at least 8"),
    ("arch,accuracy\n|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|,91\n",
     "accuracy 91 is not a fraction in [0, 1]"),
    ("arch,acc\n", "lacks columns ['accuracy']"),
    ("arch,accuracy\nresnet,0.9\n", "line 2"),
])
def test_bad_anchors_are_one_clear_line_before_any_fitting(fit_project, content, message):
    anchors = fit_project / "results/anchors.csv"
    kept = anchors.read_text()
    anchors.write_text(content)
    try:
        result = run(stage_command("fit"), fit_project, check=False)
    finally:
        anchors.write_text(kept)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr

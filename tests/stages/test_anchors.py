"""The anchors stage: the first connected samples trained alone into the truth table, one table for the fit."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from conftest import run, stage_command, stage_project
from fitnas import rankcheck
from fitnas.spaces import nb201

pytestmark = pytest.mark.slow


def _samples(n: int = 12) -> list[str]:
    """Sampled cells as the sample stage writes them, a cut-off one and a repeat (in another spelling) among the first."""
    rng = random.Random(1)
    cells = [nb201.canonical(c) for c in nb201.distinct() if nb201.SPACE.connected(c)]
    rng.shuffle(cells)
    cut_off = next(c for c in nb201.distinct() if not nb201.SPACE.connected(c))
    return [nb201.to_str(cells[0]), nb201.to_str(cut_off), nb201.to_str(cells[0])] + [nb201.to_str(c) for c in cells[1:n - 2]]


@pytest.fixture(scope="module")
def anchors_project(tmp_path_factory):
    project = stage_project(tmp_path_factory.mktemp("stages") / "anchors")
    (project / "results").mkdir()
    sampled = _samples()
    pd.DataFrame({"arch": sampled, "supernet_acc": 0.5, "flops_M": 1.0, "params_M": 0.1}).to_csv(
        project / "results/samples.csv", index=False)
    return project


def test_pick_anchors_skips_cut_off_and_repeated_networks():
    sampled = _samples()
    picked = rankcheck.pick_anchors(nb201.SPACE, sampled, 8)
    assert picked == [sampled[0]] + sampled[3:10]
    with pytest.raises(rankcheck.ConfigError, match="anchors.n is 11, but only 10 of the 12 samples"):
        rankcheck.pick_anchors(nb201.SPACE, sampled, 11)


def test_anchors_are_trained_once_into_the_truth_table(anchors_project):
    result = run(stage_command("anchors"), anchors_project)
    assert "anchors: 8 of 8 trainings to do (8 networks x 1 seeds; 0 in results/truth.csv)" in result.stdout
    anchors = pd.read_csv(anchors_project / "results/anchors.csv")
    assert list(anchors.columns) == ["arch", "accuracy"]
    assert anchors.arch.tolist() == rankcheck.pick_anchors(nb201.SPACE, _samples(), 8)
    truth = pd.read_csv(anchors_project / "results/truth.csv")
    assert sorted(truth.arch) == sorted(anchors.arch) and set(truth.seed) == {0}
    by_arch = truth.set_index("arch").standalone_acc
    assert anchors.accuracy.tolist() == pytest.approx([by_arch[a] for a in anchors.arch])
    metrics = json.loads((anchors_project / "metrics/anchors.json").read_text())
    assert metrics["anchors"] == 8 and metrics["trainings"] == 8 and metrics["from_table"] == 0

    # Again (a fresh clone with the committed table): nothing is trained, the same table is written.
    again = run(stage_command("anchors"), anchors_project)
    assert "0 of 8 trainings to do" in again.stdout
    pd.testing.assert_frame_equal(pd.read_csv(anchors_project / "results/anchors.csv"), anchors)
    assert json.loads((anchors_project / "metrics/anchors.json").read_text())["from_table"] == 8


def test_no_anchors_writes_an_empty_table_and_trains_nothing(tmp_path):
    project = stage_project(tmp_path / "none", {"anchors": {"n": 0}})
    (project / "results").mkdir()
    pd.DataFrame({"arch": _samples(), "supernet_acc": 0.5, "flops_M": 1.0, "params_M": 0.1}).to_csv(
        project / "results/samples.csv", index=False)
    result = run(stage_command("anchors"), project)
    assert "anchors.n is 0, none trained" in result.stdout
    assert (project / "results/anchors.csv").read_text().strip() == "arch,accuracy"
    assert not (project / "results/truth.csv").exists()


def test_too_few_connected_samples_is_one_clear_line(tmp_path):
    project = stage_project(tmp_path / "few", {"anchors": {"n": 11}})
    (project / "results").mkdir()
    pd.DataFrame({"arch": _samples(), "supernet_acc": 0.5, "flops_M": 1.0, "params_M": 0.1}).to_csv(
        project / "results/samples.csv", index=False)
    result = run(stage_command("anchors"), project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "only 10 of the 12 samples are distinct connected networks; lower anchors.n to at most 10" in result.stderr

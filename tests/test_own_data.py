"""Bring-your-own data end to end: a small 3-channel image folder through every stage."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from conftest import write_image_folder
from fitnas.spaces import nb201
from fitnas.stages import fit, prepare, retrain, sample, search, supernet

OWN = {
    "data": {"root": None, "val_size": 12},
    "supernet": {"channels": 4, "epochs": 1, "batch_size": 16},
    "sample": {"n": 12, "bn_batches": 1, "bn_batch_size": 16, "val_limit": None, "batch_size": 64},
    "predictor": {"kind": "gcn", "baselines": ["params"], "epochs": 5, "ensemble": 1, "hidden": 8, "layers": 2, "validation": 0.0},
    "final": {"channels": 4},
    "retrain": {"epochs": 1, "batch_size": 16},
}


def test_rgb_image_folder_runs_every_stage(tmp_path, monkeypatch):
    images = write_image_folder(tmp_path / "pets", n_train=20, n_test=4, size=(12, 12))
    project = tmp_path / "project"
    project.mkdir()
    params = json.loads(json.dumps(OWN))
    params["data"]["root"] = str(images)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    monkeypatch.setenv("FITNAS_TRACKING", "off")

    for stage in (prepare, supernet, sample, fit, search, retrain):
        stage.main("params.yaml")

    train = torch.load(project / "data/prepared/train.pt", weights_only=True)
    assert train["images"].shape == (48, 3, 12, 12) and len(train["mean"]) == 3
    assert train["classes"] == ["cat", "dog", "owl"]
    saved = torch.load(project / "models/supernet.pt", weights_only=True)
    assert saved["shape"]["in_channels"] == 3 and saved["shape"]["num_classes"] == 3
    assert len(pd.read_csv(project / "results/samples.csv")) == 12
    lookup = pd.read_csv(project / "results/lookup.csv")
    assert len(lookup) == nb201.SPACE.size
    # Costs are those of 3-channel, 3-class networks at 12x12: the stem and classifier differ from Fashion-MNIST's.
    rgb = nb201.cost_model(nb201.NetworkShape(4, 1, 3, 3), 12)
    arch = nb201.parse(lookup.arch[0])
    assert lookup.params_M[0] == pytest.approx(rgb.params(arch), abs=1e-6)
    assert lookup.flops_M[0] == pytest.approx(rgb.flops(arch), abs=1e-6)
    final = json.loads((project / "metrics/final.json").read_text())
    assert 0.0 <= final["test_acc"] <= 1.0
    assert torch.load(project / "models/final.pt", weights_only=True)["shape"]["in_channels"] == 3

"""The params profiles: valid against the schema, and the ImageNet one spans the paper's mobile FLOPs range."""

import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from fitnas import config, spaces
from fitnas.costs import count_flops

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_profiles_are_complete_valid_params_files(path):
    p = config.load(path)
    assert p.space.name == "mobilenet"
    raw = yaml.safe_load(path.read_text())
    assert set(config.flatten(config.Params.model_validate(raw))) == set(config.flatten(config.Params()))


def test_imagenet_profile_spans_the_mobile_setting_and_a_400_mflops_budget_binds():
    p = config.load(ROOT / "profiles/mobilenet-imagenet.yaml")
    space = spaces.get(p.space)
    assert space.num_layers == 21 and len(space.OPS) == 7
    shape = space.network_shape(p.final, 3, 1000)
    flops = space.cost_model(shape, 224).tables["flops"]
    assert 90 < flops.min() < 160 and 550 < flops.max() < 650  # about 150-600 MFLOPs, as the paper's mobile setting
    rng = random.Random(0)
    typical = flops.batch(np.array([space.random_cell(rng) for _ in range(2000)]))
    assert 150 < typical.min() and typical.max() < 600
    assert p.budget.flops == 400 and (typical > 400).mean() > 0.1 and (typical <= 400).mean() > 0.5  # it binds
    # Built networks have the FLOPs the additive model gives, at 224x224.
    cheapest = tuple(int(np.nanargmin(row)) for row in flops.table)
    dearest = tuple(int(np.nanargmax(row)) for row in flops.table)
    for arch in (cheapest, dearest, space.random_cell(rng)):
        counted = count_flops(space.build(arch, shape), (3, 224, 224)) / 1e6
        assert counted == pytest.approx(flops(arch), rel=1e-9)
    assert count_flops(space.build(dearest, shape), (3, 224, 224)) / 1e6 == pytest.approx(flops.max())


def test_cpu_proxy_profile_is_the_default_chain_layout_on_fashion_mnist():
    p = config.load(ROOT / "profiles/mobilenet-fmnist.yaml")
    default = config.load(ROOT / "params.yaml")
    assert p.space.mobilenet == default.space.mobilenet and p.data.train_limit == 20000
    space = spaces.get(p.space)
    flops = space.cost_model(space.network_shape(p.final, 1, 10), 28).tables["flops"]
    assert flops.min() < 2 < 10 < flops.max() < 15  # MFLOPs at 28x28

import random

import numpy as np
import pytest
import torch

from fitnas import spaces
from fitnas.config import Space
from fitnas.costs import count_flops, count_params
from fitnas.spaces.base import ArchError
from fitnas.spaces.mobilenet import ChainSpace, layout

# MobileNetV2 (Sandler et al. 2018, table 2) as this space: stem 32 stride 2, the fixed t=1 block of 16,
# then stages (t, c, n, s) = (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), head 1280.
MOBILENET_V2 = layout(
    stem=32, stem_stride=2, first=16, widths=(24, 32, 64, 96, 160, 320), depths=(2, 3, 4, 3, 3, 1),
    strides=(2, 2, 2, 1, 2, 1), head=1280, kernels=(3,), expansions=(6,), in_channels=3, num_classes=1000,
)
SMALL = layout(stem=8, first=8, widths=(8, 16, 16), depths=(3, 3, 2), strides=(1, 2, 2), head=32,
                     in_channels=1, num_classes=10)


@pytest.fixture(scope="module")
def space() -> ChainSpace:
    return ChainSpace()


def test_default_space_is_21_layers_of_7_choices_with_skip_where_shapes_allow(space):
    assert space.num_layers == 21 and len(space.OPS) == 7
    assert space.OPS == ("k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6", "skip")
    # First layer of each stage changes width or stride (stage 0 keeps 8 channels at stride 1: it may skip).
    no_skip = [layer.index for layer in space.layers if not layer.skippable]
    assert no_skip == [4, 8, 12, 16, 20]
    assert all(len(space.choices[i]) == (6 if i in no_skip else 7) for i in range(21))
    assert space.size == 6**5 * 7**16
    assert len(space.NODE_TYPES) == 2 + 21 * 7


def test_strings_round_trip(space):
    rng = random.Random(0)
    for _ in range(200):
        arch = space.random_cell(rng)
        assert space.parse(space.to_str(arch)) == arch
    assert space.parse(space.EXAMPLE) == (0,) * 21
    assert space.to_str((0,) * 21).count("|") == 5


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("k3e3", "1 stages"),
        ("k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3", "stage 0 has 3 layers"),
        ("k3e3-k3e3-k3e3-k9e9|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3", "unknown op 'k9e9'"),
        ("k3e3-k3e3-k3e3-k3e3|skip-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3-k3e3-k3e3-k3e3|k3e3", "cannot be skip"),
    ],
)
def test_malformed_strings_name_the_problem_and_show_the_form(space, bad, problem):
    with pytest.raises(ArchError) as err:
        space.parse(bad)
    assert problem in str(err.value)
    assert "expected:" in str(err.value) and "example:" in str(err.value)


def test_sampler_and_random_cells_respect_the_choices(space):
    archs = space.sample(300, random.Random(1))
    assert len(set(archs)) == 300
    assert space.sample(20, random.Random(7)) == space.sample(20, random.Random(7))
    for arch in archs:
        assert all(op in space.choices[i] for i, op in enumerate(arch))
    # Every op turns up in a layer that allows it: the draw is uniform over the choices.
    counts = np.bincount([a[1] for a in archs], minlength=7)
    assert (counts > 20).all()


def test_graph_is_a_path_typed_by_layer_and_op(space):
    arch = space.random_cell(random.Random(2))
    g = space.graph(arch)
    assert len(g.node_types) == 23 and g.edges == [(i, i + 1) for i in range(22)]
    assert g.node_types[0] == 0 and g.node_types[-1] == 1
    assert g.node_types[1 + 5] == space.node_type(5, arch[5])
    assert space.node_type(20, 6) == len(space.NODE_TYPES) - 1
    onehot = space.onehot(arch)
    assert len(onehot) == 147 and sum(onehot) == 21 and onehot[5 * 7 + arch[5]] == 1.0


def test_spaces_get_builds_the_layout_of_the_params():
    settings = Space(name="mobilenet", mobilenet={"widths": [8, 16], "depths": [2, 3], "strides": [1, 2]})
    space = spaces.get(settings)
    assert space.num_layers == 5 and space.layout.widths == (8, 16)
    assert spaces.get("mobilenet").num_layers == 21
    assert spaces.get(Space()).NAME == "nb201"


def test_networks_and_supernet_run_and_share_the_layout():
    space = ChainSpace(SMALL)
    arch = space.random_cell(random.Random(3))
    net = space.build(arch, SMALL)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    supernet = space.build_supernet(SMALL)
    supernet.set_arch(arch)
    out = supernet(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    out.sum().backward()
    layer = 4  # layer 4 runs arch[4]; its other candidates get no gradient
    for op, block in enumerate(supernet.layers[layer].candidates):
        grads = [p.grad for p in block.parameters()]
        if op == arch[layer]:
            assert grads and all(g is not None for g in grads)
        else:
            assert all(g is None for g in grads)
    with pytest.raises(ArchError, match="layout"):
        space.build(space.random_cell(random.Random(0)), MOBILENET_V2)


def test_cost_model_equals_counting_whole_networks():
    space = ChainSpace(SMALL)
    model = space.cost_model(SMALL, 28)
    archs = space.sample(6, random.Random(4)) + [tuple(c[0] for c in space.choices), tuple(c[-1] for c in space.choices)]
    batch_flops = model.tables["flops"].batch(np.array(archs))
    for arch, batched in zip(archs, batch_flops):
        net = space.build(arch, SMALL)
        assert model.flops(arch) == pytest.approx(count_flops(net, (1, 28, 28)) / 1e6, abs=1e-9)
        assert model.params(arch) == pytest.approx(count_params(net) / 1e6, abs=1e-9)
        assert batched == pytest.approx(model.flops(arch), abs=1e-9)
    # The cheapest and dearest networks are the table's min and max.
    cheapest = tuple(int(np.nanargmin(row)) for row in model.tables["flops"].table)
    assert model.tables["flops"].min() == pytest.approx(model.flops(cheapest))
    assert model.tables["flops"].max() > model.tables["flops"].min()


def test_counter_reproduces_mobilenet_v2_at_224():
    """Published: 300 M multiply-adds and 3.4 M parameters; torchvision's model has 3,504,872 parameters.

    Our count is 300.77 M MACs (convolutions and the classifier; normalisation, activations,
    additions and the global pool not counted, as in the paper); tolerance 1%.
    """
    space = ChainSpace(MOBILENET_V2)
    assert space.num_layers == 16 and space.OPS == ("k3e6", "skip")
    arch = (0,) * 16
    net = space.build(arch, MOBILENET_V2)
    macs = count_flops(net, (3, 224, 224)) / 1e6
    assert macs == pytest.approx(300.0, rel=0.01)
    assert count_params(net) == 3_504_872
    assert space.cost_model(MOBILENET_V2, 224).flops(arch) == pytest.approx(macs, abs=1e-6)

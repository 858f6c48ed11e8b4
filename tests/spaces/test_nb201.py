import random

import pytest
import torch

from fitnas.costs import count_flops, count_params
from fitnas.spaces import nb201
from fitnas.spaces.base import ArchError

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"

# Published NAS-Bench-201 figures (CIFAR-10: 32x32x3 input, 10 classes, C=16, N=5), from the
# benchmark's table: FLOPs in millions as the benchmark counts them, params in millions.
PUBLISHED = {
    ALL_3X3: (222.861, 1.53155),
    ALL_SKIP: (7.94387, 0.073306),
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|": (17.9586, 0.129306),
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|": (116.693, 0.802426),
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|": (34.1173, 0.241306),
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|": (15.6853, 0.073306),
}
CIFAR = nb201.NetworkShape(channels=16, cells=5, in_channels=3, num_classes=10)


def test_string_round_trip_over_the_whole_space():
    cells = nb201.all_cells()
    assert len(cells) == 15625
    for arch in cells:
        assert nb201.parse(nb201.to_str(arch)) == arch


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|nor_conv_3x3~0|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",
        "|conv~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "nor_conv_3x3~0+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    ],
)
def test_malformed_strings_show_the_expected_form(bad):
    with pytest.raises(ArchError) as err:
        nb201.parse(bad)
    assert "expected: |op~0|+|op~0|op~1|+|op~0|op~1|op~2|" in str(err.value)
    assert "example:" in str(err.value)


def test_isomorphic_cells_share_one_canonical_form():
    # Nodes 1 and 2 both read the input and feed the output: swapping them is the same network.
    a = nb201.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    b = nb201.parse("|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|")
    assert a != b and nb201.canonical(a) == nb201.canonical(b)
    # A skip into node 1 makes edges out of node 1 the same as edges out of the input.
    c = nb201.parse("|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
    d = nb201.parse("|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|")
    direct = nb201.parse("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    assert nb201.canonical(c) == nb201.canonical(d) == direct
    # An edge that never reaches the output is dead and dropped.
    e = nb201.parse("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|nor_conv_1x1~0|none~1|none~2|")
    assert nb201.canonical(e) == nb201.parse("|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|")
    # Different networks stay different.
    f = nb201.parse("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    assert nb201.canonical(f) != nb201.canonical(e)


def test_every_output_cut_off_cell_is_one_network():
    cut = nb201.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    assert nb201.canonical(cut) == (0,) * 6


def test_canonical_is_idempotent_and_has_no_more_ops():
    for arch in nb201.all_cells():
        rep = nb201.canonical(arch)
        assert nb201.canonical(rep) == rep
        assert sum(op != 0 for op in rep) <= sum(op != 0 for op in arch)
    assert len(nb201.distinct()) == len(set(map(nb201.canonical, nb201.all_cells())))
    assert sum(nb201.class_sizes().values()) == 15625


def test_cells_sharing_a_conv_differ_from_cells_with_two_convs():
    # Node 1 and node 2 each hold a 3x3 conv of the input; reading both differs from reading one twice.
    two = nb201.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    one = nb201.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_3x3~1|avg_pool_3x3~2|")
    assert nb201.canonical(two) != nb201.canonical(one)


def _same_weights_per_op(cell: torch.nn.Module) -> None:
    torch.manual_seed(0)
    shared: dict = {}
    for module in cell.modules():
        if isinstance(module, torch.nn.Conv2d):
            key = module.weight.shape
            shared.setdefault(key, torch.randn(key) * 0.3)
            module.weight.data.copy_(shared[key])
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.fill_(1.0)


def test_canonical_cells_compute_the_same_function():
    """With one set of weights per op type, a cell and its canonical form give the same output."""
    rng = random.Random(0)
    x = torch.randn(2, 4, 6, 6)
    supercell = nb201.SuperCell(4).eval()
    _same_weights_per_op(supercell)
    checked = 0
    for _ in range(200):
        arch = nb201.random_cell(rng)
        rep = nb201.canonical(arch)
        if rep == (0,) * 6:
            continue
        with torch.no_grad():
            supercell.arch = arch
            full = supercell(x)
            supercell.arch = rep
            assert torch.allclose(full, supercell(x), atol=1e-4), (nb201.to_str(arch), nb201.to_str(rep))
        checked += 1
    assert checked > 100


def test_canonical_cells_have_as_many_live_weights():
    """A canonical form never gains or loses a parametrised op that reaches the output."""
    rng = random.Random(1)
    for _ in range(300):
        arch = nb201.random_cell(rng)
        key = nb201._function_key(arch)
        convs = sum(1 for op, _ in key[0] if op.startswith("nor_conv")) if key else 0
        rep = nb201.canonical(arch)
        assert sum(1 for op in rep if nb201.OPS[op].startswith("nor_conv")) == convs


def test_sampler_returns_distinct_networks():
    archs = nb201.sample(500, random.Random(1))
    assert len(archs) == 500
    assert len({nb201.canonical(a) for a in archs}) == 500
    assert all(nb201.canonical(a) == a for a in archs)
    assert nb201.sample(20, random.Random(7)) == nb201.sample(20, random.Random(7))
    with pytest.raises(ValueError):
        nb201.sample(len(nb201.distinct()) + 1, random.Random(0))


def test_graph_encoding():
    g = nb201.graph(nb201.parse(ALL_3X3))
    assert len(g.node_types) == 8  # input, 6 ops, output
    assert g.node_types[0] == nb201.NODE_TYPES.index("input")
    assert g.node_types[-1] == nb201.NODE_TYPES.index("output")
    # input feeds the 3 ops leaving node 0; 3 ops feed the output; 1->2 edges: op(1<-0) feeds ops 2<-1, 3<-1 ...
    assert sum(1 for s, _ in g.edges if s == 0) == 3
    assert sum(1 for _, d in g.edges if d == 7) == 3
    empty = nb201.graph((0,) * 6)
    assert len(empty.node_types) == 2 and empty.edges == []
    # isomorphic cells encode identically
    a = nb201.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    b = nb201.parse("|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|")
    assert nb201.graph(a) == nb201.graph(b)
    assert len(nb201.onehot(a)) == 30 and nb201.onehot(a) == nb201.onehot(b)


@pytest.mark.parametrize("text", list(PUBLISHED))
def test_params_match_nas_bench_201_exactly(text):
    net = nb201.build(nb201.parse(text), CIFAR)
    assert count_params(net) / 1e6 == pytest.approx(PUBLISHED[text][1], rel=5e-6)  # table has 6 digits


@pytest.mark.parametrize("text", list(PUBLISHED))
def test_flops_match_nas_bench_201(text):
    net = nb201.build(nb201.parse(text), CIFAR)
    published = PUBLISHED[text][0]
    # The benchmark's counter also counts ReLU and BatchNorm element-wise ops; with those our
    # count agrees to 0.02% (the residual is 1,088 ops in the skeleton).
    assert count_flops(net, (3, 32, 32), elementwise=True) / 1e6 == pytest.approx(published, rel=2e-4)


def test_macs_of_the_issue_reference_cells():
    # Multiply-accumulates alone, the convention we report, for the two figures every NAS paper quotes:
    # all-3x3 222.86 M and all-skip 7.94 M; the benchmark's extra element-wise ops are 1.2% and 1.7% of them.
    assert count_flops(nb201.build(nb201.parse(ALL_3X3), CIFAR), (3, 32, 32)) / 1e6 == pytest.approx(222.86, rel=0.015)
    assert count_flops(nb201.build(nb201.parse(ALL_SKIP), CIFAR), (3, 32, 32)) / 1e6 == pytest.approx(7.94, rel=0.02)


def test_per_op_flops_increments_match_the_benchmarks_formula():
    # NAS-Bench-201: FLOPs = 7.943872 + 4.36224 n_1x1 + 35.81952 n_3x3 + 1.29024 n_pool (millions)
    model = nb201.cost_model(CIFAR, 32, elementwise=True)
    per_op = {name: sum(model.tables["flops"].table[e, nb201.OPS.index(name)] for e in range(6)) / 6 for name in nb201.OPS}
    assert per_op["nor_conv_1x1"] == pytest.approx(4.36224, abs=1e-6)
    assert per_op["nor_conv_3x3"] == pytest.approx(35.81952, abs=1e-6)
    assert per_op["avg_pool_3x3"] == pytest.approx(1.29024, abs=1e-6)
    assert per_op["skip_connect"] == 0 and per_op["none"] == 0


def test_cost_model_equals_counting_whole_networks():
    shape = nb201.NetworkShape(channels=8, cells=2, in_channels=1, num_classes=10)
    model = nb201.cost_model(shape, 28)
    for arch in nb201.sample(8, random.Random(3)):
        net = nb201.build(arch, shape)
        assert model.flops(arch) == pytest.approx(count_flops(net, (1, 28, 28)) / 1e6, abs=1e-9)
        assert model.params(arch) == pytest.approx(count_params(net) / 1e6, abs=1e-9)


def test_supernet_paths_share_weights_with_standalone_networks():
    shape = nb201.NetworkShape(channels=4, cells=1, in_channels=1, num_classes=10)
    supernet = nb201.build_supernet(shape)
    arch = nb201.parse(ALL_3X3)
    supernet.set_arch(arch)
    out = supernet(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    out.sum().backward()
    conv3 = supernet.layers[0].edges["1_0"][nb201.OPS.index("nor_conv_3x3")]
    conv1 = supernet.layers[0].edges["1_0"][nb201.OPS.index("nor_conv_1x1")]
    assert conv3[1].weight.grad is not None and conv1[1].weight.grad is None


def test_size_is_the_number_of_distinct_networks():
    # params.yaml is checked against size at load, without building the classes.
    assert nb201.SPACE.size == len(nb201.distinct()) == len(nb201.SPACE.enumerate()) == 5260

"""Zero-cost proxies on tiny networks, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fitnas import zerocost
from fitnas.spaces import nb201


def linear(weight: list[list[float]], bias: list[float] | None = None) -> nn.Linear:
    w = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


def test_synflow_of_one_linear_layer_is_the_sum_of_its_absolute_weights():
    # R = 1^T |W| 1 and dR/dW_ij = 1, so the score is sum |W_ij| = 1 + 2 + 3 + 4.
    assert zerocost.synflow(linear([[1, -2], [3, -4]]), (2,)) == pytest.approx(10.0)


def test_synflow_of_two_linear_layers_with_a_relu_is_twice_the_path_sum():
    # |W1| 1 = [3, 7], R = |W2| [3, 7] = 3 + 7 = 10. Each layer's sum of
    # |theta * dR/dtheta| equals R for a bias-free chain, so 2 * 10; the sign of
    # the weights and the ReLU do not matter once every weight is made positive.
    net = nn.Sequential(linear([[1, -2], [3, 4]]), nn.ReLU(), linear([[1, -1]]))
    assert zerocost.synflow(net, (2,)) == pytest.approx(20.0)


def test_synflow_counts_biases_and_leaves_the_network_untouched():
    # y = |w| . 1 + |b| = 3 + 5; score = |w|.1 (weights: 1 + 2) + |b| * 1 (bias: 5) = 8.
    net = linear([[1, -2]], bias=[-5])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert zerocost.synflow(net, (2,)) == pytest.approx(8.0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in net.parameters())


def test_synflow_treats_batchnorm_as_identity_whatever_its_statistics():
    bn = nn.BatchNorm1d(2, eps=0.0)
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(9.0)
    net = nn.Sequential(linear([[1, -2], [3, 4]]), bn, linear([[1, -1]]))
    # gamma = 1, beta = 0 count as parameters: |gamma| * dR/dgamma adds each unit's output [3, 7] once more.
    assert zerocost.synflow(net, (2,)) == pytest.approx(30.0)
    assert float(bn.running_mean[0]) == 7.0


def test_naswot_of_a_relu_on_the_input_matches_the_enumerated_kernel():
    # The ReLU sees the inputs themselves. Codes: [1, 1], [1, 0], [0, 1]; 2 units.
    # K = units - Hamming = [[2, 1, 1], [1, 2, 0], [1, 0, 2]]: det = 2*4 - 1*2 + 1*(-2) = 4.
    net = nn.Sequential(nn.ReLU(), nn.Identity())
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [-2.0, 5.0]])
    assert zerocost.relu_codes(net, x).tolist() == [[1, 1], [1, 0], [0, 1]]
    assert zerocost.naswot(net, x) == pytest.approx(math.log(4.0))


def test_naswot_reads_relu6_as_relu():
    # The chain space's MobileNet blocks use ReLU6: the same on/off code, so the same kernel as above.
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [-2.0, 5.0]])
    assert zerocost.relu_codes(nn.Sequential(nn.ReLU6()), x).tolist() == [[1, 1], [1, 0], [0, 1]]
    assert zerocost.naswot(nn.Sequential(nn.ReLU6()), x) == pytest.approx(math.log(4.0))


def test_naswot_concatenates_every_relu_and_is_minus_inf_for_repeated_codes():
    # Two ReLUs: on x and on -x, codes [x > 0, -x > 0] per unit. With one unit, inputs 1 and -1
    # give codes [1, 0] and [0, 1]: K = [[2, 0], [0, 2]], det 4.
    class TwoRelus(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.ReLU(), nn.ReLU()

        def forward(self, x):
            return self.a(x) + self.b(-x)

    assert zerocost.naswot(TwoRelus(), torch.tensor([[1.0], [-1.0]])) == pytest.approx(math.log(4.0))
    # Same sign, same code: K = [[2, 2], [2, 2]] is singular.
    assert zerocost.naswot(TwoRelus(), torch.tensor([[1.0], [3.0]])) == -math.inf


def test_jacov_of_a_linear_network_sees_identical_jacobians():
    # f(x) = w . x: every input's Jacobian is w, so the N x N correlation matrix is all ones,
    # eigenvalues N and N - 1 zeros.
    n, k = 4, zerocost.JACOV_K
    expected = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    assert zerocost.jacov(linear([[1.0, -2.0, 0.5]]), x) == pytest.approx(expected, rel=1e-6)


def test_jacov_prefers_uncorrelated_jacobians():
    # A ReLU on the input: the Jacobian of sum(relu(x)) is the input's code. Orthogonal codes
    # ([1, 0, 0] etc.) after mean removal have correlation -1/2, not 1: far higher score.
    net = nn.Sequential(nn.ReLU())
    same = torch.tensor([[1.0, 2.0, -1.0], [3.0, 1.0, -2.0], [2.0, 2.0, -3.0]])
    apart = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    assert zerocost.jacov(net, apart) > zerocost.jacov(net, same) + 1e4


def test_grad_norm_of_a_zero_linear_classifier():
    # W = 0: softmax is uniform [1/2, 1/2]; for label 0 dL/dlogits = [-1/2, 1/2], dL/dW = outer(that, x),
    # whose norm is |[-1/2, 1/2]| * |x| = sqrt(1/2) * 5 for x = [3, 4].
    layer = linear([[0.0, 0.0], [0.0, 0.0]])
    value = zerocost.grad_norm(layer, torch.tensor([[3.0, 4.0]]), torch.tensor([0]))
    assert value == pytest.approx(math.sqrt(0.5) * 5.0)
    assert layer.weight.grad is None


def test_snip_of_a_linear_classifier():
    # W = [[1, 0], [0, 1]], x = [1, 0]: logits [1, 0], p = [e/(e+1), 1/(e+1)], label 1:
    # dL/dlogits = [p0, p1 - 1] = [p0, -p0]; dL/dW = outer(., [1, 0]): only column 0 is non-zero,
    # so |W * grad| = |1 * p0| + |0 * -p0| = p0.
    p0 = math.e / (math.e + 1)
    value = zerocost.snip(linear([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert value == pytest.approx(p0)


def test_every_proxy_runs_on_a_space_network_and_ranks_a_real_cell_above_an_empty_one():
    shape = nb201.NetworkShape(channels=4, cells=1, in_channels=3, num_classes=10)
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 10
    torch.manual_seed(0)
    convs = nb201.build(nb201.parse(nb201.EXAMPLE), shape)
    torch.manual_seed(0)
    skips = nb201.build((nb201.SKIP,) * 6, shape)
    a = zerocost.score_all(convs, x, labels)
    b = zerocost.score_all(skips, x, labels)
    assert set(a) == set(zerocost.PROXIES)
    assert all(np.isfinite(v) for v in a.values())
    # More weighted paths through convolutions: higher synflow; more distinct activation codes: naswot.
    assert a["synflow"] > b["synflow"]
    assert a["naswot"] >= b["naswot"]
    # Deterministic: the same network and batch score the same twice.
    assert zerocost.score_all(convs, x, labels) == a


def test_unknown_proxy_is_refused():
    with pytest.raises(ValueError, match="flops"):
        zerocost.score_all(nn.ReLU(), torch.zeros(1, 1), torch.zeros(1), proxies=("flops",))


def test_score_archs_gives_one_value_per_arch_and_one_init_per_build():
    shape = nb201.NetworkShape(channels=2, cells=1, in_channels=1, num_classes=3)
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0])
    cell = nb201.parse(nb201.EXAMPLE)
    scores = zerocost.score_archs([cell, (nb201.SKIP,) * 6, cell], lambda a: nb201.build(a, shape), x, labels,
                                  proxies=("synflow", "grad_norm"))
    assert set(scores) == {"synflow", "grad_norm"} and scores["synflow"].shape == (3,)
    assert scores["synflow"][0] == scores["synflow"][2] and scores["grad_norm"][0] == scores["grad_norm"][2]


def test_proxy_batch_is_a_seeded_normalised_batch_on_the_cpu_by_default():
    from fitnas.data import splits

    split = splits.Split(torch.full((10, 1, 4, 4), 255, dtype=torch.uint8), torch.arange(10) % 2, ["a", "b"], (0.5,), (0.5,))
    inputs, targets = zerocost.proxy_batch(split, 4, seed=0)
    assert inputs.shape == (4, 1, 4, 4) and inputs.device.type == "cpu"
    assert torch.allclose(inputs, torch.ones_like(inputs))  # (1.0 - 0.5) / 0.5
    assert sorted(targets.tolist()) == [0, 0, 1, 1]  # class-balanced
    again, _ = zerocost.proxy_batch(split, 4, seed=0)
    assert torch.equal(inputs, again)

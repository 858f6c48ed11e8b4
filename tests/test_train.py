import math

import pytest
import torch
from torch import nn

from fitnas.train import NonFiniteLoss, evaluate, recalibrate_batchnorm, sgd_one_cycle, train_epoch


def batches(n=4, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n * size, 1, 8, 8, generator=gen)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()  # a learnable rule
    return [(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]) for i in range(n)]


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_training_lowers_the_loss():
    net, data = small_net(), batches()
    optimizer, scheduler = sgd_one_cycle(net, lr=0.2, momentum=0.9, weight_decay=0.0, total_steps=40)
    first, _ = evaluate(net, data)
    for _ in range(10):
        train_epoch(net, data, optimizer, scheduler)
    last, acc = evaluate(net, data)
    assert last < first and acc > 0.8


def test_evaluate_counts_accuracy_exactly():
    net = small_net()
    data = batches()
    _, acc = evaluate(net, data)
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in data)
    assert acc == correct / 128


def test_recalibration_measures_the_data_and_keeps_momentum():
    net, data = small_net(), batches()
    bn = net[1]
    recalibrate_batchnorm(net, data, n_batches=2)
    with torch.no_grad():
        feats = torch.cat([net[0](x) for x, _ in data[:2]])
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1 and not net.training


def test_non_finite_loss_stops_training_with_the_step():
    net, data = small_net(), batches()
    optimizer = torch.optim.SGD(net.parameters(), lr=math.inf)
    with pytest.raises(NonFiniteLoss, match="step 1"):
        train_epoch(net, data, optimizer)

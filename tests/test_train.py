import io
import math
import os
import signal

import pytest
import torch
from torch import nn

from fitnas.train import (
    EpochState,
    Interrupted,
    NonFiniteLoss,
    StopRequest,
    evaluate,
    recalibrate_batchnorm,
    sgd_one_cycle,
    train_epoch,
)


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


def test_an_epoch_stopped_mid_way_resumes_to_the_uninterrupted_result():
    def fresh():
        net = small_net()
        optimizer, scheduler = sgd_one_cycle(net, lr=0.2, momentum=0.9, weight_decay=5e-4, total_steps=8)
        return net, optimizer, scheduler

    net, optimizer, scheduler = fresh()
    expected = [train_epoch(net, batches(), optimizer, scheduler) for _ in range(2)]

    net, optimizer, scheduler = fresh()
    stop, state = StopRequest(), EpochState()

    def signal_at_step_2(step: int) -> None:
        if step == 2:
            stop.signum = signal.SIGTERM  # what the handler records

    with pytest.raises(Interrupted, match="stopped after 3 steps") as stopped:
        train_epoch(net, batches(), optimizer, scheduler, before_step=signal_at_step_2, stop=stop, state=state)
    assert stopped.value.exit_code == 143 and state.steps == 3 and state.seen == 96
    saved = io.BytesIO()
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "partial": vars(state)}, saved)
    saved.seek(0)
    saved = torch.load(saved, weights_only=True)

    net, optimizer, scheduler = fresh()
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    resumed = [train_epoch(net, batches(), optimizer, scheduler, state=EpochState(**saved["partial"]))]
    resumed.append(train_epoch(net, batches(), optimizer, scheduler))
    assert resumed == expected


def test_stop_request_records_the_signal_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_fair_paths_give_every_slot_each_of_its_choices_once_per_step():
    from fitnas.spaces import nb201
    from fitnas.spaces.mobilenet import ChainSpace, layout
    from fitnas.train import fair_paths

    paths = fair_paths(nb201.SPACE, seed=0, epoch=1, step=3)
    assert len(paths) == len(nb201.OPS)
    for slot in range(nb201.SPACE.num_slots):
        assert sorted(path[slot] for path in paths) == list(range(len(nb201.OPS)))
    assert fair_paths(nb201.SPACE, 0, 1, 3) == paths != fair_paths(nb201.SPACE, 0, 1, 4)
    # A chain with uneven choices: the longest sets the count, shorter slots cover theirs and repeat.
    chain = ChainSpace(layout(widths=(8, 16), depths=(2, 2), strides=(1, 2), head=16, in_channels=1, num_classes=10))
    chain_paths = fair_paths(chain, 0, 1, 0)
    assert len(chain_paths) == max(len(c) for c in chain.choices)
    for slot, options in enumerate(chain.choices):
        assert set(path[slot] for path in chain_paths) == set(options)


class TwoPaths(nn.Module):
    """A supernet of one slot: path 0 or 1 picks one of two linear layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.ops = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 2)])
        self.arch = (0,)

    def set_arch(self, arch):
        self.arch = arch

    def forward(self, x):
        return self.ops[self.arch[0]](x.flatten(1)[:, :4])


def test_a_step_over_several_paths_applies_the_mean_of_their_gradients():
    data = batches(n=1)
    net = TwoPaths()
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    train_epoch(net, data, optimizer, paths=lambda step: [(0,), (1,)])
    # By hand: each layer gets half its own gradient (the other path does not touch it).
    reference = TwoPaths()
    x, y = data[0]
    for op in reference.ops:
        loss = nn.functional.cross_entropy(op(x.flatten(1)[:, :4]), y) / 2
        loss.backward()
        with torch.no_grad():
            for param in op.parameters():
                param -= param.grad
    for got, want in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want)

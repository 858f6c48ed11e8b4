"""bench/truth_noise.py: which networks it retrains by default, and the per-image scoring it compares."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from conftest import ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_truth_noise", ROOT / "bench" / "truth_noise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_archs_are_ranks_of_seed_0_among_networks_with_both_seeds():
    bench = load_bench()
    table = {(f"a{i}", seed): {"standalone_acc": 0.8 + 0.01 * ((7 * i) % 12) + 0.001 * seed}
             for i in range(12) for seed in (0, 1)}
    del table[("a3", 1)]  # one seed only: never picked
    picked = bench.default_archs(table, n_ranks=(0, 5, 10, 40))
    with_both = sorted({a for a, s in table if (a, 1) in table}, key=lambda a: table[(a, 0)]["standalone_acc"])
    assert picked == [with_both[0], with_both[5], with_both[10]]  # a rank past the end is left out
    assert "a3" not in picked


def test_correct_marks_each_image():
    bench = load_bench()

    class Constant(torch.nn.Module):  # always class 1
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([[0.0, 1.0]]).repeat(len(x), 1) + self.w

    batches = [(torch.zeros(3, 1), torch.tensor([1, 0, 1])), (torch.zeros(2, 1), torch.tensor([0, 1]))]
    np.testing.assert_array_equal(bench.correct(Constant(), batches), [True, False, True, False, True])

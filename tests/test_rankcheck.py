"""The rank check's pieces: which networks it trains, its truth table, its report (the stage itself runs in test_pipeline).

Run as a script under torchrun, this file is the worker of the test that two processes train the
table one process trains.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fitnas import distributed, rankcheck, strategies
from fitnas.config import ConfigError, Params
from fitnas.data.splits import Split
from fitnas.metrics import kendall_tau
from fitnas.spaces import nb201


@pytest.fixture(scope="module")
def lookup() -> pd.DataFrame:
    archs = nb201.distinct()
    rng = np.random.default_rng(0)
    flops = [sum(1.0 + 8.0 * (op == 3) for op in a) for a in archs]
    return pd.DataFrame({"arch": [nb201.to_str(a) for a in archs], "predicted_acc": rng.random(len(archs)),
                         "flops_M": flops, "params_M": np.array(flops) / 10})


def test_pick_archs_draws_connected_networks_none_sampled_nor_anchors(lookup):
    sampled = list(lookup.arch[:500])
    anchors = list(lookup.arch[500:520])
    picked = rankcheck.pick_archs(nb201.SPACE, lookup, sampled + anchors, 50, seed=0)
    assert len(picked) == 50 and picked.arch.is_unique
    assert not set(picked.arch) & set(sampled + anchors)
    assert nb201.to_str((nb201.NONE,) * 6) not in set(picked.arch)
    assert list(picked.columns) == list(lookup.columns)
    assert not picked.equals(rankcheck.pick_archs(nb201.SPACE, lookup, sampled, 50, seed=1))


def test_pick_archs_is_uniform_not_spread_over_flops(lookup):
    # 1,000 draws: their mean FLOPs is the pool's within a few standard errors, as a uniform draw's is.
    picked = rankcheck.pick_archs(nb201.SPACE, lookup, [], 1000, seed=3)
    pool = lookup.flops_M
    assert abs(picked.flops_M.mean() - pool.mean()) < 4 * pool.std() / np.sqrt(1000)
    assert not picked.flops_M.is_monotonic_increasing


def test_pick_archs_does_not_depend_on_the_pools_row_order(lookup):
    shuffled = lookup.sample(frac=1.0, random_state=7)
    assert rankcheck.pick_archs(nb201.SPACE, shuffled, [], 30, seed=0).arch.tolist() == \
        rankcheck.pick_archs(nb201.SPACE, lookup, [], 30, seed=0).arch.tolist()


def test_excluding_one_more_network_swaps_out_only_that_one(lookup):
    # So a committed truth stays valid for all the others when the samples or anchors change.
    before = rankcheck.pick_archs(nb201.SPACE, lookup, [], 30, seed=0).arch.tolist()
    after = rankcheck.pick_archs(nb201.SPACE, lookup, [before[4]], 30, seed=0).arch.tolist()
    assert after[:29] == before[:4] + before[5:] and after[29] not in before


def test_pick_archs_accepts_non_canonical_excluded_strings(lookup):
    dead_edge = (nb201.OPS.index("nor_conv_1x1"), 3, 0, 2, 0, 3)  # nothing leaves node 1
    canonical = nb201.to_str(nb201.canonical(dead_edge))
    assert canonical != nb201.to_str(dead_edge)
    # Every network but the excluded one and the cut-off cell.
    picked = rankcheck.pick_archs(nb201.SPACE, lookup, [nb201.to_str(dead_edge)], len(lookup) - 2, seed=0)
    assert canonical not in set(picked.arch)


def test_pick_archs_asking_for_too_many_names_the_key_and_the_most_it_can_be(lookup):
    with pytest.raises(ConfigError, match=rf"rankcheck.archs is {len(lookup) + 1}.*lower rankcheck.archs to at most {len(lookup) - 1}"):
        rankcheck.pick_archs(nb201.SPACE, lookup, [], len(lookup) + 1, seed=0)


def test_a_searched_space_picks_from_random_networks_with_their_predictions_and_costs():
    from fitnas import spaces

    space = spaces.get("mobilenet")
    costs = space.cost_model(space.network_shape(None, 1, 10), 28)

    class LayerSum:  # a stand-in predictor: any object with query(archs)
        def query(self, archs):
            return np.array([float(sum(a)) for a in archs])

    pool = strategies.random_pool(space, LayerSum(), costs, 200, seed=1)
    assert len(pool) == 200 and pool.arch.is_unique
    first = space.parse(pool.arch[0])
    assert pool.predicted_acc[0] == sum(first) and pool.flops_M[0] == pytest.approx(costs.flops(first), abs=1e-6)
    sampled = [space.to_str(a) for a in space.sample(20, random.Random(1))]  # the same draw: the pool's first 20
    picked = rankcheck.pick_archs(space, pool, sampled, 8, seed=0)
    assert len(picked) == 8 and picked.arch.is_unique and not set(picked.arch) & set(sampled)
    assert set(picked.arch) <= set(pool.arch)


def test_budget_picks_take_the_best_predicted_and_the_largest_network_under_each_budget(lookup):
    strategy = strategies.TableSearch(nb201.SPACE, lookup, None)
    low, high = lookup.flops_M.min(), lookup.flops_M.max()
    picks = strategies.budget_picks(strategy, [0.25, 0.5, 1.0])
    assert picks.flops_budget.tolist() == pytest.approx([low + 0.25 * (high - low), low + 0.5 * (high - low), high])
    for row in picks.itertuples():
        feasible = lookup[lookup.flops_M <= row.flops_budget]
        assert row.choice == feasible.sort_values("predicted_acc").arch.iloc[-1]
        assert row.largest_flops_M == feasible.flops_M.max() == lookup.set_index("arch").flops_M[row.largest]
    assert picks.largest_flops_M.iloc[-1] == high


def test_end_result_counts_the_budgets_where_the_choice_is_at_least_as_good():
    picks = pd.DataFrame({"fraction": [0.25, 0.5, 0.75], "flops_budget": [1.0, 2.0, 3.0],
                          "choice": ["a", "b", "c"], "choice_flops_M": [1.0, 1.5, 2.0],
                          "largest": ["x", "b", "z"], "largest_flops_M": [1.0, 1.5, 3.0]})
    truth = pd.DataFrame({"arch": ["a", "b", "c", "x", "z"], "standalone_acc": [0.9, 0.8, 0.7, 0.85, 0.75]})
    report = rankcheck.end_result(picks, truth)
    assert report["end.budgets"] == 3 and report["end.choice_at_least_as_good"] == 2  # a beats x; b is x; c loses
    assert report["end.q25.gain"] == pytest.approx(0.05) and report["end.q75.gain"] == pytest.approx(-0.05)
    assert report["end.q50.choice_arch"] == report["end.q50.largest_arch"] == "b"
    assert rankcheck.end_result(picks.iloc[:0], truth) == {}


ROW = dict(standalone_acc=0.8, standalone_loss=0.5, train_acc=0.9, train_seconds=3.0)


def test_truth_table_keeps_every_key_and_merges_sorted(tmp_path):
    path = tmp_path / "truth.csv"
    rankcheck.add_truth(path, "k1", {("b", 0): ROW, ("a", 1): ROW})
    rankcheck.add_truth(path, "k2", {("a", 0): ROW | {"standalone_acc": 0.1}})
    rankcheck.add_truth(path, "k1", {("a", 0): ROW | {"standalone_acc": 0.7}})
    assert rankcheck.read_truth(path, "k1") == {("a", 0): ROW | {"standalone_acc": 0.7}, ("a", 1): ROW, ("b", 0): ROW}
    assert rankcheck.read_truth(path, "k2") == {("a", 0): ROW | {"standalone_acc": 0.1}}
    assert rankcheck.read_truth(path, "k3") == {}
    table = pd.read_csv(path)
    assert list(table.columns) == rankcheck.TRUTH_COLUMNS
    assert list(zip(table.key, table.arch, table.seed)) == [("k1", "a", 0), ("k1", "a", 1), ("k1", "b", 0), ("k2", "a", 0)]


def test_a_numeric_looking_key_stays_a_string(tmp_path):
    path = tmp_path / "truth.csv"
    rankcheck.add_truth(path, "0123456789", {("a", 0): ROW})
    assert rankcheck.read_truth(path, "0123456789") == {("a", 0): ROW}


def test_unreadable_truth_table_is_ignored_not_fatal(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_bytes(b"\xff\xfe garbage")
    assert rankcheck.read_truth(path, "k") == {}
    path.write_text("arch,key\n")  # old or foreign columns (the earlier rankcheck.cache.csv had no seed)
    assert rankcheck.read_truth(path, "k") == {}
    assert rankcheck.read_truth(tmp_path / "missing.csv", "k") == {}


def test_mean_over_seeds_keeps_the_networks_order():
    trained = pd.DataFrame({"arch": ["b", "b", "a", "a"], "seed": [0, 1, 0, 1],
                            "standalone_acc": [0.8, 0.6, 0.5, 0.7], "standalone_loss": [1.0, 2.0, 3.0, 4.0],
                            "train_acc": [0.9, 0.9, 0.8, 0.8], "train_seconds": [1.0, 3.0, 2.0, 2.0]})
    table = rankcheck.mean_over_seeds(trained)
    assert table.arch.tolist() == ["b", "a"]
    assert table.standalone_acc.tolist() == pytest.approx([0.7, 0.6])
    assert table.standalone_acc_seed0.tolist() == [0.8, 0.5] and table.standalone_acc_seed1.tolist() == [0.6, 0.7]
    assert table.standalone_loss.tolist() == [1.5, 3.5]


def test_regret_top1_by_hand():
    truth = [0.5, 0.9, 0.7]
    assert rankcheck.regret_top1([3, 2, 1], truth) == pytest.approx(0.4)  # picks the worst
    assert rankcheck.regret_top1([1, 3, 2], truth) == 0.0  # picks the best
    assert rankcheck.regret_top1([1, 1, 1], truth) == pytest.approx(0.4)  # a tie: the first in the table


def test_rank_report_on_hand_made_rankings():
    n = 20
    truth = 0.50 + 0.01 * np.arange(n)  # network i is the i-th worst
    seed1 = truth.copy()
    seed1[[3, 4]] = seed1[[4, 3]]  # the two seeds disagree on one pair of 190
    swapped = truth.copy()
    swapped[[17, 18]] = swapped[[18, 17]]  # top 2 (10% of 20) is {19, 17}: half right, and the best first
    best_last = truth.copy()
    best_last[19] = 0.0  # the best ranked last: 19 of 190 pairs discordant, the first pick the second best
    naswot = truth.copy()
    naswot[0] = -np.inf  # a singular kernel: ranked last, where it belongs here
    table = pd.DataFrame({
        # The truth is the seeds' mean; here seed 0's, so the pairs can be counted by hand.
        "standalone_acc": truth, "standalone_acc_seed0": truth, "standalone_acc_seed1": seed1,
        "supernet_acc": truth, "predicted_acc": truth[::-1].copy(), "params_M": swapped, "flops_M": best_last,
        "naswot": naswot, "synflow": np.ones(n),
    })
    report = rankcheck.rank_report(table, resamples=200, seed=0,
                                   rankers=["supernet_acc", "predicted_acc", "params_M", "flops_M", "naswot", "synflow"])
    assert report["networks"] == n
    assert report["truth.self_kendall_tau"] == pytest.approx(1 - 2 * 1 / 190)
    assert report["truth.self_kendall_tau_low"] <= report["truth.self_kendall_tau"] <= report["truth.self_kendall_tau_high"]
    expected = {  # (tau, spearman, precision at the top 10%, top-1 regret)
        "supernet_acc": (1.0, 1.0, 1.0, 0.0),
        "predicted_acc": (-1.0, -1.0, 0.0, 0.19),
        "params_M": (1 - 2 * 1 / 190, None, 0.5, 0.0),
        "flops_M": (1 - 2 * 19 / 190, None, 0.5, 0.01),
        "naswot": (1.0, 1.0, 1.0, 0.0),
        "synflow": (0.0, 0.0, 0.0, 0.19),  # constant: no ranking; its first pick is the table's first row
    }
    for column, (tau, rho, precision, regret) in expected.items():
        assert report[f"{column}.kendall_tau"] == pytest.approx(tau), column
        if rho is not None:
            assert report[f"{column}.spearman_rho"] == pytest.approx(rho), column
        assert report[f"{column}.precision_top10"] == pytest.approx(precision), column
        assert report[f"{column}.regret_top1"] == pytest.approx(regret), column
        assert report[f"{column}.kendall_tau_low"] <= report[f"{column}.kendall_tau"] + 1e-12
        assert report[f"{column}.kendall_tau"] <= report[f"{column}.kendall_tau_high"] + 1e-12


def test_every_zero_cost_proxy_is_a_ranking():
    from fitnas import zerocost

    assert {"predicted_acc", "supernet_acc", "flops_M", "params_M", *zerocost.PROXIES} == set(rankcheck.RANKERS)


def test_verdict_says_who_wins_and_whether_it_is_resolved():
    report = {"networks": 30, "predicted_acc.kendall_tau": 0.6, "predicted_acc.kendall_tau_low": 0.5,
              "predicted_acc.kendall_tau_high": 0.7, "supernet_acc.kendall_tau": 0.2,
              "supernet_acc.kendall_tau_low": 0.1, "supernet_acc.kendall_tau_high": 0.3}
    assert "beats" in rankcheck.verdict(report, "gcn") and "do not overlap" in rankcheck.verdict(report, "gcn")
    report |= {"supernet_acc.kendall_tau": 0.65, "supernet_acc.kendall_tau_low": 0.55, "supernet_acc.kendall_tau_high": 0.75}
    line = rankcheck.verdict(report, "gcn")
    assert "does not beat" in line and "cannot tell them apart" in line


# ---------------------------------------------------------------------------------------------
# Training the truth: a tiny recipe on tiny synthetic images

SHAPE = nb201.NetworkShape(channels=4, cells=1, in_channels=1, num_classes=3)
TINY = {"rankcheck": {"archs": 4, "epochs": 1, "train_limit": 120, "batch_size": 40}}
ARCHS = ["|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_3x3~2|",
         "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
         "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|"]


def tiny_split(n: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    # Class c is brighter in its third of the image: learnable in one epoch, not trivially.
    images = torch.randint(0, 120, (n, 1, 12, 12), generator=gen, dtype=torch.uint8)
    for c in range(3):
        images[labels == c, :, 4 * c : 4 * c + 4, :] += 100
    return Split(images, labels.long(), ["a", "b", "c"])


def train_tiny(path: Path, world: distributed.World | None = None) -> tuple[pd.DataFrame, int]:
    p = Params.model_validate(TINY)
    return rankcheck.truth_results(p, nb201.SPACE, SHAPE, ARCHS, torch.device("cpu"), path,
                                   tiny_split(150, 0), tiny_split(60, 1), "tiny", world)


@pytest.mark.parametrize("space_settings", [{}, {"name": "mobilenet", "mobilenet": {
    "stem": 4, "first": 4, "widths": [4, 8], "depths": [2, 2], "strides": [1, 2], "head": 16}}], ids=["nb201", "mobilenet"])
def test_every_zero_cost_proxy_scores_both_spaces_networks_on_real_images(space_settings):
    from fitnas import spaces, zerocost

    p = Params.model_validate({"space": space_settings, "supernet": {"channels": 4}})
    space = spaces.get(p.space)
    shape = space.network_shape(p.supernet, 1, 3)
    archs = [space.to_str(a) for a in space.sample(3, random.Random(0))]
    scores = rankcheck.zero_cost_scores(space, archs, shape, tiny_split(60, 0), 16, seed=0)
    assert set(scores) == set(zerocost.PROXIES)
    assert all(len(values) == 3 and np.isfinite(values).all() for values in scores.values())
    again = rankcheck.zero_cost_scores(space, archs, shape, tiny_split(60, 0), 16, seed=0)
    assert all(np.array_equal(scores[name], again[name]) for name in scores)  # seeded: one network, one score


def test_training_key_follows_the_recipe_not_the_count_of_networks_or_seeds(tmp_path):
    data = tmp_path / "train.pt"
    data.write_bytes(b"images")
    key = lambda **change: rankcheck.training_key(  # noqa: E731
        Params.model_validate({"rankcheck": change}), SHAPE, nb201.SPACE, [data])
    assert key() == key(archs=60, seeds=3, bootstrap=10, budgets=[0.5])
    assert key() != key(epochs=3) and key() != key(lr=0.05)
    assert key() != rankcheck.training_key(Params(), nb201.NetworkShape(8, 1, 1, 3), nb201.SPACE, [data])
    before = key()
    data.write_bytes(b"other images")
    assert key() != before


def test_truth_results_train_what_is_missing_and_resume(tmp_path):
    path = tmp_path / "truth.csv"
    first, had = train_tiny(path)
    assert had == 0 and len(first) == 6
    assert first[["arch", "seed"]].values.tolist() == [[a, s] for a in ARCHS for s in (0, 1)]
    assert first.standalone_acc.between(0, 1).all()
    assert first.standalone_acc[0] != first.standalone_acc[1] or first.standalone_loss[0] != first.standalone_loss[1]
    assert len(pd.read_csv(path)) == 6
    # A run interrupted after some trainings: only the rest is trained, to the same numbers.
    table = pd.read_csv(path, dtype={"key": str})
    table[table.arch != ARCHS[1]].to_csv(path, index=False)
    again, had = train_tiny(path)
    assert had == 4
    pd.testing.assert_frame_equal(again.drop(columns="train_seconds"), first.drop(columns="train_seconds"))


def test_two_processes_train_the_table_of_one(tmp_path):
    one, _ = train_tiny(tmp_path / "one.csv")
    two = tmp_path / "two.csv"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(two)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1" in result.stdout  # both ranks trained
    columns = ["key", "arch", "seed", "standalone_acc", "standalone_loss", "train_acc"]
    written_one = pd.read_csv(tmp_path / "one.csv")[columns]
    written_two = pd.read_csv(two)[columns]
    pd.testing.assert_frame_equal(written_two, written_one)
    returned = pd.read_csv(tmp_path / "two.returned.csv")
    pd.testing.assert_frame_equal(returned.drop(columns="train_seconds"), one.drop(columns="train_seconds"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    with distributed.session() as world:
        trained, _ = train_tiny(Path(sys.argv[1]), world)
        if world.is_main:
            trained.to_csv(Path(sys.argv[1]).with_suffix(".returned.csv"), index=False)


def test_truth_ceiling_matches_a_simulated_truth():
    # Networks' true accuracies plus independent training noise: the tau of the true order against the mean
    # of two seeds, simulated, is what truth_ceiling computes from the seeds' agreement alone.
    rng = np.random.default_rng(0)
    for spread in (0.5, 1.0, 3.0):  # true spread over the noise's std
        self_taus, perfect = [], []
        for _ in range(300):
            true = rng.normal(0.0, spread, 60)
            seeds = true + rng.normal(0.0, 1.0, (2, 60))
            self_taus.append(kendall_tau(seeds[0], seeds[1]))
            perfect.append(kendall_tau(true, seeds.mean(0)))
        assert rankcheck.truth_ceiling(float(np.mean(self_taus)), 2) == pytest.approx(np.mean(perfect), abs=0.02)


def test_truth_ceiling_ends():
    assert rankcheck.truth_ceiling(1.0, 2) == pytest.approx(1.0)
    assert rankcheck.truth_ceiling(0.0, 2) == 0.0
    assert rankcheck.truth_ceiling(-0.2, 2) == 0.0  # seeds that disagree: nothing is resolved
    # More seeds in the mean, a higher ceiling; one seed: the seeds' own agreement's square root in r.
    assert rankcheck.truth_ceiling(0.33, 1) < rankcheck.truth_ceiling(0.33, 2) < rankcheck.truth_ceiling(0.33, 4) < 1
    with pytest.raises(ValueError, match="seeds"):
        rankcheck.truth_ceiling(0.5, 0)

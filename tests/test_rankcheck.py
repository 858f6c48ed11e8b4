"""The rank check's pieces: which networks it trains, its cache, its report (the stage itself runs in test_pipeline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fitnas import rankcheck, strategies
from fitnas.config import ConfigError
from fitnas.spaces import nb201


@pytest.fixture(scope="module")
def lookup() -> pd.DataFrame:
    archs = nb201.distinct()
    rng = np.random.default_rng(0)
    flops = [sum(1.0 + 8.0 * (op == 3) for op in a) for a in archs]
    return pd.DataFrame({"arch": [nb201.to_str(a) for a in archs], "predicted_acc": rng.random(len(archs)),
                         "flops_M": flops, "params_M": np.array(flops) / 10})


def test_pick_archs_spreads_over_flops_and_skips_sampled_and_cut_off(lookup):
    sampled = list(lookup.arch[:500])
    picked = rankcheck.pick_archs(nb201.SPACE, lookup, sampled, 12, seed=0)
    assert len(picked) == 12 and picked.arch.is_unique
    assert not set(picked.arch) & set(sampled)
    assert nb201.to_str((nb201.NONE,) * 6) not in set(picked.arch)
    assert picked.flops_M.is_monotonic_increasing
    pool = lookup[~lookup.arch.isin(sampled)]
    assert picked.flops_M.iloc[0] == pool.flops_M.min() and picked.flops_M.iloc[-1] == pool.flops_M.max()


def test_pick_archs_accepts_non_canonical_sample_strings(lookup):
    dead_edge = (nb201.OPS.index("nor_conv_1x1"), 3, 0, 2, 0, 3)  # nothing leaves node 1
    canonical = nb201.to_str(nb201.canonical(dead_edge))
    assert canonical != nb201.to_str(dead_edge)
    # Every network but the sampled one and the cut-off cell.
    picked = rankcheck.pick_archs(nb201.SPACE, lookup, [nb201.to_str(dead_edge)], len(lookup) - 2, seed=0)
    assert canonical not in set(picked.arch)


def test_pick_archs_asking_for_too_many_names_the_key(lookup):
    with pytest.raises(ConfigError, match="rankcheck.archs"):
        rankcheck.pick_archs(nb201.SPACE, lookup, [], len(lookup) + 1, seed=0)


def test_a_searched_space_picks_from_random_networks_with_their_predictions_and_costs():
    import random

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
    assert len(picked) == 8 and not set(picked.arch) & set(sampled)
    assert picked.flops_M.is_monotonic_increasing
    rest = pool[~pool.arch.isin(sampled)]
    assert picked.flops_M.iloc[0] == rest.flops_M.min() and picked.flops_M.iloc[-1] == rest.flops_M.max()


def test_cache_round_trip_keeps_only_the_same_key(tmp_path):
    path = tmp_path / "cache.csv"
    row = dict(standalone_acc=0.8, standalone_loss=0.5, train_acc=0.9, train_seconds=3.0)
    rankcheck.write_cache(path, "k1", {"a": row})
    assert rankcheck.read_cache(path, "k1") == {"a": row}
    assert rankcheck.read_cache(path, "k2") == {}


def test_unreadable_cache_is_ignored_not_fatal(tmp_path):
    path = tmp_path / "cache.csv"
    path.write_bytes(b"\xff\xfe garbage")
    assert rankcheck.read_cache(path, "k") == {}
    path.write_text("arch,key\n")  # old or foreign columns
    assert rankcheck.read_cache(path, "k") == {}
    assert rankcheck.read_cache(tmp_path / "missing.csv", "k") == {}


def test_rank_report_on_hand_made_rankings():
    truth = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    table = pd.DataFrame({
        "standalone_acc": truth,
        "supernet_acc": truth,  # perfect
        "predicted_acc": truth[::-1],  # reversed
        "params_M": [1.0, 2.0, 3.0, 5.0, 4.0],  # one swapped pair: tau 0.8
        "flops_M": [1.0, 1.0, 1.0, 1.0, 1.0],  # constant: no ranking
    })
    report = rankcheck.rank_report(table, resamples=200, seed=0)
    assert report["networks"] == 5
    assert report["supernet_acc.kendall_tau"] == pytest.approx(1.0)
    assert report["predicted_acc.kendall_tau"] == pytest.approx(-1.0)
    assert report["params_M.kendall_tau"] == pytest.approx(0.8)
    assert report["flops_M.kendall_tau"] == 0.0
    for column in rankcheck.RANKERS:
        assert report[f"{column}.kendall_tau_low"] <= report[f"{column}.kendall_tau"] <= report[f"{column}.kendall_tau_high"]


def test_verdict_says_who_wins_and_whether_it_is_resolved():
    report = {"networks": 30, "predicted_acc.kendall_tau": 0.6, "predicted_acc.kendall_tau_low": 0.5,
              "predicted_acc.kendall_tau_high": 0.7, "supernet_acc.kendall_tau": 0.2,
              "supernet_acc.kendall_tau_low": 0.1, "supernet_acc.kendall_tau_high": 0.3}
    assert "beats" in rankcheck.verdict(report, "gcn") and "do not overlap" in rankcheck.verdict(report, "gcn")
    report |= {"supernet_acc.kendall_tau": 0.65, "supernet_acc.kendall_tau_low": 0.55, "supernet_acc.kendall_tau_high": 0.75}
    line = rankcheck.verdict(report, "gcn")
    assert "does not beat" in line and "cannot tell them apart" in line

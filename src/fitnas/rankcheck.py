"""The rank check: ground truth for the ranking, from networks trained from scratch.

The pipeline picks its network by a ranking it never verifies: the graph
network's predictions, fitted to supernet scores. The rank check trains
networks the fit never saw, drawn uniformly at random, each from scratch with
one fixed recipe and several seeds, and asks how well each cheap ranking
(supernet scores, the predictor, params, FLOPs, zero-cost proxies) orders them.

The trained results are a small table committed with the project
(`results/truth.csv`): one row per network and seed, under a key of the recipe,
the data and the training code, so a fresh machine reuses them and a changed
recipe trains anew.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import inspect
import json
import os
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from fitnas import zerocost
from fitnas.data import splits

from fitnas.data.batches import Batches
from fitnas.config import ConfigError, Params
from fitnas.distributed import World
from fitnas.metrics import bootstrap_kendall_tau, kendall_tau, precision_at_top, spearman_rho
from fitnas.spaces.base import SearchSpace
from fitnas.train import evaluate, seed_everything, sgd_one_cycle, train_epoch

# The rankings under test: a column of the rank check's table each, higher meaning better.
RANKERS: dict[str, str] = {
    "supernet_acc": "supernet score (inherited weights)",
    "predicted_acc": "predicted accuracy (the fit's lookup table)",
    "params_M": "params (M)",
    "flops_M": "FLOPs (M)",
} | {name: f"zero-cost proxy {name}" for name in zerocost.PROXIES}
TRUTH = "standalone_acc"  # the mean over seeds in the rank check's table; one seed's in the truth table
RESULT_COLUMNS = [TRUTH, "standalone_loss", "train_acc", "train_seconds"]  # what training one network gives
TRUTH_COLUMNS = ["key", "arch", "seed", *RESULT_COLUMNS]
TOP_FRACTION = 0.10  # precision at the top 10%


# A space too large to tabulate: the networks are picked from this many random ones per network asked for.
POOL_PER_ARCH = 100


def pick_archs(space: SearchSpace, pool: pd.DataFrame, excluded: Iterable[str], n: int, seed: int) -> pd.DataFrame:
    """n distinct networks drawn uniformly at random from the pool's connected ones, none of them excluded.

    `pool`: the fit's lookup table (every distinct network of a tabulated space), or
    for a space too large to tabulate a `strategies.random_pool`. `excluded`: the
    samples and the anchors, in any (also non-canonical) spelling. Returns their rows
    in draw order. The draw is one seeded permutation of the whole pool, taken before
    anything is excluded, so excluding one more network swaps out only that one: the
    committed truth stays valid for all the others when the samples or anchors change.
    """
    seen = {space.to_str(space.canonical(space.parse(text))) for text in excluded}
    # Sorted first: the draw must not depend on the order the pool's file lists its rows in.
    ordered = pool.sort_values("arch", kind="stable").reset_index(drop=True)
    drawn = ordered.iloc[np.random.default_rng(seed).permutation(len(ordered))]
    # A network whose output is cut off from its input outputs the same for every
    # image, so its accuracy is chance without any training, and one network every
    # ranking can place last would only flatter them all.
    connected = drawn.arch.map(lambda text: space.connected(space.parse(text)))
    eligible = drawn[~drawn.arch.isin(seen) & connected]
    if n > len(eligible):
        raise ConfigError(
            f"rankcheck.archs is {n}, but only {len(eligible)} networks of the pool are connected and neither sampled "
            f"nor anchors; lower rankcheck.archs to at most {len(eligible)} (or sample.n, or anchors)"
        )
    return eligible.iloc[:n].reset_index(drop=True)


def pick_anchors(space: SearchSpace, sampled: Sequence[str], n: int) -> list[str]:
    """The networks the anchors stage trains: the first n distinct connected samples, in the sample stage's draw order.

    Among the samples, so the fit has the supernet's score beside each anchor's true accuracy and the
    rank check's draw, which leaves the samples out already, stays the same: the committed truth stays
    valid whatever `anchors.n` is. A cut-off network is never one: its accuracy is chance, which every
    cheap signal tells already.
    """
    picked: dict[str, str] = {}
    for text in sampled:
        arch = space.parse(text)
        name = space.to_str(space.canonical(arch))
        if name not in picked and space.connected(arch):
            picked[name] = text
        if len(picked) == n:
            return list(picked.values())
    raise ConfigError(f"anchors.n is {n}, but only {len(picked)} of the {len(sampled)} samples are distinct connected "
                      f"networks; lower anchors.n to at most {len(picked)} or raise sample.n")


def training_key(p: Params, shape: Any, space: SearchSpace, data_files: Sequence[Path]) -> str:
    """What a stand-alone accuracy depends on, hashed: the recipe, the data and the code that trains.

    A result in the truth table is reused only under the same key, so a changed
    setting, dataset or training loop retrains every network. The code hashed is
    what computes the numbers (the space's own module, the training loop, the
    batches, `train_from_scratch`), not every module those import: the table is
    committed, and an unrelated edit to, say, config.py must not throw away hours
    of training.
    """
    recipe = p.rankcheck.model_dump(exclude={"archs", "seeds", "bootstrap", "budgets"})
    settings = {"seed": p.seed, "shape": dataclasses.asdict(shape), "recipe": recipe, "torch": torch.__version__}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for path in data_files:
        digest.update(Path(path).read_bytes())
    import fitnas.data.batches
    import fitnas.train

    for module in (inspect.getmodule(type(space)), fitnas.train, fitnas.data.batches):
        digest.update(Path(inspect.getfile(module)).read_bytes())
    digest.update(inspect.getsource(train_from_scratch).encode())
    return digest.hexdigest()[:16]


def read_truth(path: Path, key: str) -> dict[tuple[str, int], dict]:
    """Results trained earlier under this key, by (arch, seed); rows of other keys are ignored."""
    table = _read_table(path)
    results = {}
    for row in table[table.key == key].to_dict("records"):
        results[(row["arch"], int(row["seed"]))] = {column: row[column] for column in RESULT_COLUMNS}
    return results


def _read_table(path: Path) -> pd.DataFrame:
    empty = pd.DataFrame(columns=TRUTH_COLUMNS)
    if not path.is_file():
        return empty
    try:
        table = pd.read_csv(path, dtype={"key": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return empty
    if not set(TRUTH_COLUMNS) <= set(table.columns):
        return empty
    return table[TRUTH_COLUMNS]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time: under torchrun every rank adds its rows to the same table."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_truth(path: Path, key: str, results: dict[tuple[str, int], dict]) -> None:
    """Merge results into the truth table, keeping every other row (other keys: other recipes).

    Rewritten whole through a temporary file (an interruption never leaves a torn
    row) and sorted, so the committed file does not depend on the order networks
    finished in or on how many processes trained them.
    """
    new = pd.DataFrame([{"key": key, "arch": arch, "seed": seed, **row} for (arch, seed), row in results.items()],
                       columns=TRUTH_COLUMNS)
    with _locked(path):
        old = _read_table(path)
        merged = pd.concat([old, new]) if len(old) else new
        merged = merged.drop_duplicates(["key", "arch", "seed"], keep="last")
        merged = merged.sort_values(["key", "arch", "seed"], kind="stable")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        merged.to_csv(tmp, index=False)
        os.replace(tmp, path)


def train_from_scratch(
    space: SearchSpace,
    arch: tuple[int, ...],
    shape: Any,
    batches: Batches,
    val_batches: Batches,
    cfg: Any,
    seed: int,
    desc: str,
) -> dict[str, float]:
    """One network trained with the rank check's recipe (`cfg`: rankcheck params) from `seed`, then validated.

    `batches` must be seeded with the same `seed`: a seed sets the initial weights
    and the order of the batches. Every network of one seed starts from the same
    random state and sees the same batches in the same order, so within a seed the
    networks differ in their cell and nothing else.
    """
    seed_everything(seed)
    batches.set_epoch(0)
    net = space.build(arch, shape).to(batches.device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))
    start = time.time()
    for epoch in range(1, cfg.epochs + 1):
        _, train_acc = train_epoch(net, batches, optimizer, scheduler, desc=f"{desc} epoch {epoch}/{cfg.epochs}")
    val_loss, val_acc = evaluate(net, val_batches)
    return dict(standalone_acc=val_acc, standalone_loss=val_loss, train_acc=train_acc, train_seconds=time.time() - start)


def truth_results(
    p: Params, space: SearchSpace, shape: Any, archs: Sequence[str], device: torch.device, path: Path,
    train_split: splits.Split, val_split: splits.Split, key: str, world: World | None = None,
    seeds: Sequence[int] | None = None, label: str = "rankcheck",
) -> tuple[pd.DataFrame, int]:
    """Every (network, seed) result of the truth, trained where the table lacks it, and how many it had.

    Returns one row per network and seed (columns arch, seed and RESULT_COLUMNS), in
    the order of `archs` then seed. Under torchrun (`world`) the missing trainings are
    shared out across the ranks, each trained exactly as one process would train it;
    every result is added to the table as soon as it exists, so an interrupted run
    resumes with what it had not finished. Every rank returns the whole table.
    `seeds`: which seeds (offsets from p.seed), by default 0 to rankcheck.seeds - 1;
    `label`: the stage's name in the progress lines.
    """
    world = world or World()
    cfg = p.rankcheck
    if cfg.train_limit is not None:
        # The same images for every seed: the seeds differ in initial weights and batch order only.
        train_split = splits.subset(train_split, cfg.train_limit, p.seed)
    # The whole validation split: the supernet scores use a part of it, the test split stays unread.
    val_batches = Batches(val_split, 1000, shuffle=False, seed=p.seed, device=device)
    seeds = list(range(cfg.seeds)) if seeds is None else list(seeds)
    wanted = [(arch, seed) for arch in archs for seed in seeds]
    results = read_truth(path, key)
    had = sum(item in results for item in wanted)
    missing = [item for item in wanted if item not in results]
    if world.is_main:
        print(f"{label}: {len(missing)} of {len(wanted)} trainings to do ({len(archs)} networks x {len(seeds)} seeds; "
              f"{had} in {path}), {world.size} process(es); {cfg.epochs} epochs on {len(train_split)} images each, "
              f"on {device}", flush=True)
    batches = {seed: Batches(train_split, cfg.batch_size, shuffle=True, seed=p.seed + seed, device=device) for seed in seeds}
    mine = world.shard(missing)
    for i, (arch, seed) in enumerate(mine, start=1):
        line = f"{label} {i}/{len(mine)}" + (f" (rank {world.rank})" if world.enabled else "")
        result = train_from_scratch(space, space.parse(arch), shape, batches[seed], val_batches, cfg, p.seed + seed, line)
        add_truth(path, key, {(arch, seed): result})
        results[(arch, seed)] = result
        print(f"{line}: {arch} seed {seed}  stand-alone acc {result[TRUTH]:.4f}  "
              f"(trained in {result['train_seconds']:.0f}s)", flush=True)
    gathered = {}
    for part in world.gather({item: results[item] for item in mine}):
        gathered.update(part)
    if world.enabled and world.is_main and gathered:
        add_truth(path, key, gathered)  # the other ranks' rows too, should their disks not be this one's (several nodes)
    results.update(gathered)
    table = pd.DataFrame([{"arch": arch, "seed": seed, **results[(arch, seed)]} for arch, seed in wanted])
    return table, had


def end_result(picks: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """The metrics of the end result: per budget (end.qNN.*) both networks' true accuracy, and at how many the choice is as good."""
    accuracy = truth.set_index("arch")[TRUTH]
    report: dict[str, Any] = {}
    wins = 0
    for row in picks.itertuples():
        name = f"end.q{round(row.fraction * 100):02d}"
        choice, largest = float(accuracy[row.choice]), float(accuracy[row.largest])
        wins += choice >= largest
        report |= {f"{name}.flops_budget": row.flops_budget, f"{name}.choice_arch": row.choice,
                   f"{name}.choice_flops_M": row.choice_flops_M, f"{name}.choice_acc": choice,
                   f"{name}.largest_arch": row.largest, f"{name}.largest_flops_M": row.largest_flops_M,
                   f"{name}.largest_acc": largest, f"{name}.gain": choice - largest}
    if len(picks):
        report |= {"end.budgets": len(picks), "end.choice_at_least_as_good": wins}
    return report


def mean_over_seeds(trained: pd.DataFrame) -> pd.DataFrame:
    """One row per network (first-seen order): the truth is the mean accuracy over its seeds, one column per seed beside it."""
    order = list(dict.fromkeys(trained.arch))
    means = trained.groupby("arch", sort=False)[RESULT_COLUMNS].mean().loc[order]
    per_seed = trained.pivot(index="arch", columns="seed", values=TRUTH).loc[order]
    per_seed.columns = [f"{TRUTH}_seed{seed}" for seed in per_seed.columns]
    return means.join(per_seed).reset_index()


def zero_cost_scores(space: SearchSpace, archs: Sequence[str], shape: Any, train_split: splits.Split,
                     batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """Every zero-cost proxy of zerocost.py for each network, at the trained shape, on one batch of real training images.

    The batch is the sample stage's (`zerocost.proxy_batch` with the same size and seed), so a
    proxy's values here and in results/samples.csv are comparable. On the CPU, where the space
    builds the networks: the proxies cost seconds, not what the trainings cost.
    """
    inputs, targets = zerocost.proxy_batch(train_split, batch_size, seed)
    return zerocost.score_archs([space.parse(a) for a in archs], lambda arch: space.build(arch, shape),
                                inputs, targets, seed=seed)


def regret_top1(scores: Sequence[float], truth: Sequence[float]) -> float:
    """True accuracy of the truly best network minus that of the ranking's first pick (0 when it picks the best).

    A tie for the first pick is broken by position, as precision at the top is.
    """
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    return float(truth.max() - truth[int(np.argsort(-scores, kind="stable")[0])])


def _last_if_not_finite(scores: np.ndarray) -> np.ndarray:
    """-inf or nan (naswot on a singular kernel) ranked below every finite score: the proxy's own meaning of it."""
    finite = np.isfinite(scores)
    if finite.all():
        return scores
    floor = scores[finite].min() - 1.0 if finite.any() else 0.0
    return np.where(finite, scores, floor)


def truth_ceiling(self_tau: float, seeds: int) -> float:
    """The Kendall tau a perfect ranking is expected to reach against the mean of `seeds` trainings per network.

    Each training is the network's true accuracy plus independent noise, both taken as Gaussian. Then
    Kendall tau and Pearson's r of two seeds are related by tau = 2/pi arcsin(r) (Greiner), the mean of
    `seeds` trainings has reliability S r / (1 + (S - 1) r) (Spearman-Brown), and the true accuracies
    correlate with that mean at the square root of it. No ranking is expected to beat this against
    the rank check's truth, however good: a lead over a ranking larger than the room between that
    ranking and the ceiling cannot be measured.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    r = np.sin(np.pi * min(max(self_tau, 0.0), 1.0) / 2)
    reliability = seeds * r / (1 + (seeds - 1) * r) if r > 0 else 0.0
    return float(2 / np.pi * np.arcsin(np.sqrt(reliability)))


def rank_report(table: pd.DataFrame, resamples: int, seed: int, rankers: Iterable[str] = RANKERS) -> dict[str, float]:
    """For every ranker against the truth (the mean over seeds): Kendall tau with its bootstrap 95% interval,
    Spearman rho, precision at the top 10% and top-1 regret; the truth's agreement with itself across seeds
    and the tau a perfect ranking is expected to reach against it (`truth_ceiling`)."""
    truth = table[TRUTH].to_numpy()
    report: dict[str, float] = {"networks": len(table)}
    if {f"{TRUTH}_seed0", f"{TRUTH}_seed1"} <= set(table.columns):
        first, second = table[f"{TRUTH}_seed0"].to_numpy(), table[f"{TRUTH}_seed1"].to_numpy()
        low, high = bootstrap_kendall_tau(first, second, resamples, seed)
        report["truth.self_kendall_tau"] = kendall_tau(first, second)
        report["truth.self_kendall_tau_low"] = low
        report["truth.self_kendall_tau_high"] = high
        seeds = sum(str(c).startswith(f"{TRUTH}_seed") for c in table.columns)
        report["truth.ceiling_kendall_tau"] = truth_ceiling(report["truth.self_kendall_tau"], seeds)
    for column in rankers:
        scores = _last_if_not_finite(table[column].to_numpy(dtype=float))
        low, high = bootstrap_kendall_tau(scores, truth, resamples, seed)
        report[f"{column}.kendall_tau"] = kendall_tau(scores, truth)
        report[f"{column}.kendall_tau_low"] = low
        report[f"{column}.kendall_tau_high"] = high
        report[f"{column}.spearman_rho"] = spearman_rho(scores, truth)
        report[f"{column}.precision_top10"] = precision_at_top(scores, truth, TOP_FRACTION)
        report[f"{column}.regret_top1"] = regret_top1(scores, truth)
    return report


def verdict(report: dict[str, float], predictor: str) -> str:
    """One line: does the predictor rank better than the supernet scores it was fitted to, and is that resolved?"""

    def tau(column: str) -> tuple[float, float, float]:
        return tuple(report[f"{column}.kendall_tau{end}"] for end in ("", "_low", "_high"))

    fit, fit_low, fit_high = tau("predicted_acc")
    raw, raw_low, raw_high = tau("supernet_acc")
    if fit > raw:
        compared = "beats"
    elif fit == raw:
        compared = "ties with"
    else:
        compared = "does not beat"
    overlap = fit_low <= raw_high and raw_low <= fit_high
    settled = (
        f"the 95% intervals overlap, so {report['networks']} networks cannot tell them apart"
        if overlap
        else "the 95% intervals do not overlap"
    )
    return (f"rankcheck: the {predictor} predictor's Kendall tau {fit:.3f} [{fit_low:.3f}, {fit_high:.3f}] {compared} "
            f"the raw supernet scores' {raw:.3f} [{raw_low:.3f}, {raw_high:.3f}]; {settled}")

"""The rank check: ground truth for the ranking, from networks trained from scratch.

The pipeline picks its network by a ranking it never verifies: the graph
network's predictions, fitted to supernet scores. The rank check trains a few
networks the fit never saw, each from scratch with one fixed recipe, and asks
how well each cheap ranking (supernet scores, the predictor, params, FLOPs)
orders them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fitnas.data import splits

from fitnas.data.batches import Batches
from fitnas.deps import code_files
from fitnas.config import ConfigError, Params
from fitnas.metrics import bootstrap_kendall_tau, kendall_tau, spearman_rho
from fitnas.spaces.base import SearchSpace
from fitnas.train import evaluate, seed_everything, sgd_one_cycle, train_epoch

# The rankings under test: a column of the rank check's table each, higher meaning better.
RANKERS: dict[str, str] = {
    "supernet_acc": "supernet score (inherited weights)",
    "predicted_acc": "predicted accuracy (the fit's lookup table)",
    "params_M": "params (M)",
    "flops_M": "FLOPs (M)",
}
TRUTH = "standalone_acc"
RESULT_COLUMNS = [TRUTH, "standalone_loss", "train_acc", "train_seconds"]  # what training one network gives
CACHE_COLUMNS = ["arch", "key", *RESULT_COLUMNS]


# A space too large to tabulate: the networks are picked from this many random ones per network asked for.
POOL_PER_ARCH = 100


def pick_archs(space: SearchSpace, lookup: pd.DataFrame, sampled: Iterable[str], n: int, seed: int) -> pd.DataFrame:
    """n distinct networks the fit never saw, at evenly spaced quantiles of FLOPs.

    `lookup`: the fit's lookup table, or for a space too large to tabulate a
    `strategies.random_pool`. Returns their rows (arch, predicted_acc, flops_M, params_M),
    cheapest first. Many networks share a FLOPs count; a seeded shuffle before
    the sort decides which of them a quantile lands on.
    """
    seen = {space.to_str(space.canonical(space.parse(text))) for text in sampled}
    # A network whose output is cut off from its input outputs the same for every
    # image, so its accuracy is chance without any training, and one network every
    # ranking can place last would only flatter them all.
    connected = lookup.arch.map(lambda text: space.connected(space.parse(text)))
    pool = lookup.loc[~lookup.arch.isin(seen) & connected, ["arch", "predicted_acc", "flops_M", "params_M"]]
    if n > len(pool):
        raise ConfigError(f"rankcheck.archs is {n}, but only {len(pool)} networks are neither sampled nor cut off; lower it")
    shuffled = pool.iloc[np.random.default_rng(seed).permutation(len(pool))]
    ordered = shuffled.sort_values("flops_M", kind="stable")
    positions = np.round(np.linspace(0, len(ordered) - 1, n)).astype(int)
    return ordered.iloc[positions].reset_index(drop=True)


def training_key(p: Params, shape: Any, space: SearchSpace, data_files: Sequence[Path]) -> str:
    """What a stand-alone accuracy depends on, hashed: the recipe, the data and the code that trains.

    A cached result is reused only under the same key, so a changed setting,
    dataset or training loop retrains every network.
    """
    recipe = p.rankcheck.model_dump(exclude={"archs", "bootstrap"})
    settings = {"seed": p.seed, "shape": dataclasses.asdict(shape), "recipe": recipe, "torch": torch.__version__}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for path in (*data_files, *code_files(space)):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def read_cache(path: Path, key: str) -> dict[str, dict]:
    """Results trained earlier under this key, by arch; anything else in the file is ignored."""
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}
    if not set(CACHE_COLUMNS) <= set(table.columns):
        return {}
    results = {}
    for row in table[table.key == key].to_dict("records"):
        results[row["arch"]] = {column: row[column] for column in RESULT_COLUMNS}
    return results


def write_cache(path: Path, key: str, results: dict[str, dict]) -> None:
    # Rewritten whole through a temporary file: an interruption never leaves a torn row.
    rows = [{**row, "arch": arch, "key": key} for arch, row in results.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows, columns=CACHE_COLUMNS).to_csv(tmp, index=False)
    os.replace(tmp, path)


def train_from_scratch(
    space: SearchSpace,
    arch: tuple[int, ...],
    shape: Any,
    batches: Batches,
    val_batches: Batches,
    p: Params,
    desc: str,
) -> dict[str, float]:
    """One network trained with the rank check's recipe, then measured on the validation batches."""
    cfg = p.rankcheck
    # Every network starts from the same random state and sees the same batches in
    # the same order, so the networks differ in their cell and nothing else.
    seed_everything(p.seed)
    batches.set_epoch(0)
    net = space.build(arch, shape).to(batches.device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))
    start = time.time()
    for epoch in range(1, cfg.epochs + 1):
        _, train_acc = train_epoch(net, batches, optimizer, scheduler, desc=f"{desc} epoch {epoch}/{cfg.epochs}")
    val_loss, val_acc = evaluate(net, val_batches)
    return dict(standalone_acc=val_acc, standalone_loss=val_loss, train_acc=train_acc, train_seconds=time.time() - start)


def standalone_results(
    p: Params, space: SearchSpace, shape: Any, picked: pd.DataFrame, device: torch.device, cache: Path,
    train_split: splits.Split, val_split: splits.Split, key: str,
) -> tuple[pd.DataFrame, int]:
    """Stand-alone accuracy of every picked network (one row each, in order), and how many came from the cache.

    Each result is written to the cache as soon as it exists, so an interrupted
    run resumes with the first network it had not finished.
    """
    cfg = p.rankcheck
    if cfg.train_limit is not None:
        train_split = splits.subset(train_split, cfg.train_limit, p.seed)
    batches = Batches(train_split, cfg.batch_size, shuffle=True, seed=p.seed, device=device)
    # The whole validation split: the supernet scores use a part of it, the test split stays unread.
    val_batches = Batches(val_split, 1000, shuffle=False, seed=p.seed, device=device)

    results = read_cache(cache, key)
    cached = sum(arch in results for arch in picked.arch)
    print(f"rankcheck: training {len(picked) - cached} of {len(picked)} networks from scratch "
          f"({cached} from {cache}); {cfg.epochs} epochs on {len(train_split)} images each, on {device}", flush=True)
    for i, row in enumerate(picked.itertuples(), start=1):
        label = f"rankcheck {i}/{len(picked)}"
        if row.arch not in results:
            results[row.arch] = train_from_scratch(space, space.parse(row.arch), shape, batches, val_batches, p, label)
            write_cache(cache, key, results)
            how = f"trained in {results[row.arch]['train_seconds']:.0f}s"
        else:
            how = "from the cache"
        print(f"{label}: {row.arch}  {row.flops_M:.2f} MFLOPs  "
              f"stand-alone acc {results[row.arch]['standalone_acc']:.4f}  ({how})", flush=True)
    table = pd.DataFrame([results[arch] for arch in picked.arch])
    return table, cached


def rank_report(table: pd.DataFrame, resamples: int, seed: int) -> dict[str, float]:
    """Kendall tau (with its bootstrap 95% interval) and Spearman rho of every ranker against stand-alone accuracy."""
    truth = table[TRUTH].to_numpy()
    report: dict[str, float] = {"networks": len(table)}
    for column in RANKERS:
        scores = table[column].to_numpy()
        low, high = bootstrap_kendall_tau(scores, truth, resamples, seed)
        report[f"{column}.kendall_tau"] = kendall_tau(scores, truth)
        report[f"{column}.kendall_tau_low"] = low
        report[f"{column}.kendall_tau_high"] = high
        report[f"{column}.spearman_rho"] = spearman_rho(scores, truth)
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

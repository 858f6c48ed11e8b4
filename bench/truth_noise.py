"""Where the rank check's truth is noisy: the evaluation's sampling or the training itself.

Trains networks with the rank check's recipe (`rankcheck.*` of params.yaml, at the supernet's shape,
on the same `rankcheck.train_limit` images and seeds as the truth) and scores every model twice: on the
validation split the truth uses and on the training images the recipe leaves unused (34,000 by
default). If the two seeds of a network differ by much more than the sampling noise of a difference
(sqrt(disagreement / images)), a larger evaluation set would not steady the truth. The stand-alone
accuracy of the same network and seed in results/truth.csv (under the recipe's key) is printed beside
it: on another CPU kind the same seed trains another model.

    python bench/truth_noise.py                  # three networks of the rank check's draw (10th, 32nd, 55th by seed 0)
    python bench/truth_noise.py --archs 'ARCH' 'ARCH'

Needs only the prepared data (`dvc repro prepare`). One line per network is appended to
bench/results/truth_noise.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fitnas import config, spaces
from fitnas.data import splits
from fitnas.data.batches import Batches
from fitnas.pipeline import TRAIN, TRUTH_TABLE, VAL
from fitnas.rankcheck import TRUTH, read_truth, training_key
from fitnas.train import seed_everything, sgd_one_cycle, train_epoch

JOURNAL = Path(__file__).parent / "results" / "truth_noise.jsonl"


@torch.no_grad()
def correct(net: torch.nn.Module, batches: Batches) -> np.ndarray:
    """Per image: did the model classify it right."""
    net.eval()
    return np.concatenate([(net(x).argmax(1) == y).numpy() for x, y in batches])


def default_archs(table: dict, n_ranks: tuple[int, ...] = (10, 32, 55)) -> list[str]:
    """Networks of the committed truth with both seeds, at these ranks of seed 0's accuracy."""
    seed0 = {arch: r[TRUTH] for (arch, seed), r in table.items() if seed == 0 and (arch, 1) in table}
    ordered = sorted(seed0, key=seed0.get)
    return [ordered[i] for i in n_ranks if i < len(ordered)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="*", help="networks (the space's strings); default: three of the truth table")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    p = config.load(args.params)
    torch.set_num_threads(p.threads or 1)
    space, cfg = spaces.get(p.space), p.rankcheck
    train, val = splits.load_split(TRAIN), splits.load_split(VAL)
    shape = space.network_shape(p.supernet, in_channels=train.images.shape[1], num_classes=len(train.classes))
    # The truth's images (the draw of rankcheck.truth_results) and the rest of the training split.
    used = splits.subset_indices(train, cfg.train_limit or len(train), p.seed)
    rest = np.setdiff1d(np.arange(len(train)), used)
    part = lambda idx: splits.Split(train.images[idx], train.labels[idx], list(train.classes), train.mean, train.std)  # noqa: E731
    subset, unused = part(torch.from_numpy(used)), part(torch.from_numpy(rest))
    device = torch.device("cpu")
    evaluations = {"val": Batches(val, 1000, shuffle=False, seed=p.seed, device=device)}
    if len(unused):
        evaluations["unused"] = Batches(unused, 1000, shuffle=False, seed=p.seed, device=device)
    key = training_key(p, shape, space, [TRAIN, VAL])
    table = read_truth(TRUTH_TABLE, key)
    archs = args.archs or default_archs(table)
    for arch in archs:
        per_seed = {}
        for seed in (0, 1):
            batches = Batches(subset, cfg.batch_size, shuffle=True, seed=p.seed + seed, device=device)
            seed_everything(p.seed + seed)  # as rankcheck.train_from_scratch: weights and batch order by seed
            batches.set_epoch(0)
            net = space.build(space.parse(arch), shape).to(device)
            optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))
            start = time.time()
            for epoch in range(1, cfg.epochs + 1):
                train_epoch(net, batches, optimizer, scheduler, desc=f"truth_noise seed {seed} epoch {epoch}/{cfg.epochs}")
            per_seed[seed] = {name: correct(net, b) for name, b in evaluations.items()}
            print(f"{arch} seed {seed}: " + ", ".join(f"{n} {c.mean():.4f}" for n, c in per_seed[seed].items())
                  + f", table {table.get((arch, seed), {}).get(TRUTH, float('nan')):.4f} ({time.time() - start:.0f}s)", flush=True)
        row = {"arch": arch, "key": key, "threads": p.threads, "cpu": _cpu()}
        for name in evaluations:
            first, second = per_seed[0][name], per_seed[1][name]
            disagree = float((first != second).mean())
            row[name] = {"images": len(first), "acc_seed0": float(first.mean()), "acc_seed1": float(second.mean()),
                         "seed_difference": float(abs(first.mean() - second.mean())), "disagreement": disagree,
                         "sampling_std_of_difference": float(np.sqrt(disagree / len(first)))}
        row["table"] = {str(seed): table[(arch, seed)][TRUTH] for seed in (0, 1) if (arch, seed) in table}
        print(json.dumps(row), flush=True)
        with JOURNAL.open("a") as journal:
            journal.write(json.dumps(row) + "\n")


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()

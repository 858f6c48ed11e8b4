"""How well the rank check's truth agrees with itself: Kendall tau between its two training seeds.

Trains the networks the rank check would train (the same draw: uniformly random
connected networks, none among the samples the sample stage draws nor the
anchors), with the recipe of params.yaml's `rankcheck` section or one changed by
the flags, into the same committed truth table (results/truth.csv), so the rank
check reuses every training. Needs only the prepared data (`dvc repro prepare`),
not the supernet: the networks are trained at the supernet's shape from params.

Resumable: the table keeps every finished training, and each run appends one line
per recipe to bench/results/truth_recipe.jsonl with the self-agreement measured
so far, so a journal of partial runs is still a measurement.

    python bench/truth_recipe.py                      # the recipe of params.yaml
    python bench/truth_recipe.py --epochs 4 --train-limit 54000
    python bench/truth_recipe.py --archs 24 --common-init          # common random numbers (bench/common_init.py)
    torchrun --nproc_per_node 2 bench/truth_recipe.py --archs 24   # the trainings shared by 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from fitnas import config, distributed, spaces
from fitnas.data.splits import load_split
from fitnas.metrics import bootstrap_kendall_tau, kendall_tau
from fitnas.pipeline import ANCHORS, TRAIN, TRUTH_TABLE, VAL, read_anchors
from fitnas.rankcheck import TRUTH, mean_over_seeds, pick_archs, read_truth, training_key, truth_results
from fitnas.train import seed_everything

JOURNAL = Path("bench/results/truth_recipe.jsonl")  # relative: run from the project folder


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--journal", default=str(JOURNAL), help="the JSON-lines journal a line per run is added to")
    parser.add_argument("--archs", type=int, help="networks (default: rankcheck.archs)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--common-init", action="store_true",
                        help="every network of a seed starts from the same weights where it can (bench/common_init.py)")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: report on the networks the table already holds every seed of")
    args = parser.parse_args(argv)

    p = config.load(args.params)
    changes = {name: value for name, value in (("archs", args.archs), ("epochs", args.epochs),
               ("train_limit", args.train_limit), ("batch_size", args.batch_size), ("lr", args.lr)) if value is not None}
    p = p.model_copy(update={"rankcheck": p.rankcheck.model_copy(update=changes)})
    torch.set_num_threads(p.threads)
    seed_everything(p.seed)
    space = spaces.get(p.space)
    if args.common_init:
        sys.path.insert(0, str(Path(__file__).parent))
        from common_init import CommonInit  # beside this script; its file is part of the truth's key

        space = CommonInit(space)
    archs = space.enumerate()
    if archs is None:
        raise SystemExit(f"space {p.space.name!r} cannot be listed whole; this bench draws from a tabulated space")
    pool = pd.DataFrame({"arch": [space.to_str(a) for a in archs]})
    # The samples exactly as the sample stage draws them (stages/sample.py), so the draw is the stage's.
    sampled = [space.to_str(a) for a in space.sample(p.sample.n, random.Random(p.seed + 2))]
    anchors = list(read_anchors(ANCHORS, space, 0).arch) if ANCHORS.is_file() else []
    picked = pick_archs(space, pool, sampled + anchors, p.rankcheck.archs, p.seed + 4)

    train, val = load_split(TRAIN), load_split(VAL)
    shape = space.network_shape(p.supernet, train.images.shape[1], len(train.classes))
    key = training_key(p, shape, space, [TRAIN, VAL])
    if args.no_train:
        done = read_truth(TRUTH_TABLE, key)
        picked = picked[[all((arch, s) in done for s in range(p.rankcheck.seeds)) for arch in picked.arch]]
    start = time.time()
    with distributed.session(p.distributed, "cpu") as world:
        trained, had = truth_results(p, space, shape, list(picked.arch), world.device, TRUTH_TABLE, train, val, key, world)
    if not world.is_main:
        return {}
    table = mean_over_seeds(trained)
    first, second = table[f"{TRUTH}_seed0"].to_numpy(), table[f"{TRUTH}_seed1"].to_numpy()
    low, high = bootstrap_kendall_tau(first, second, p.rankcheck.bootstrap, p.seed)
    # Validation loss is continuous where accuracy counts images: is it the steadier truth?
    losses = trained.pivot(index="arch", columns="seed", values="standalone_loss").loc[table.arch]
    row = {
        "key": key, "recipe": p.rankcheck.model_dump(), "common_init": args.common_init, "threads": p.threads,
        "processes": world.size, "networks": len(table),
        "self_kendall_tau": kendall_tau(first, second), "low": low, "high": high,
        "mean_abs_diff": float(abs(first - second).mean()),
        "self_kendall_tau_loss": kendall_tau(-losses[0].to_numpy(), -losses[1].to_numpy()),
        "acc_min": float(table[TRUTH].min()), "acc_max": float(table[TRUTH].max()),
        "seconds_per_training": float(trained.train_seconds.mean()), "trained_now": len(trained) - had,
        "seconds": time.time() - start, "load": os.getloadavg(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    journal = Path(args.journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    with journal.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(f"truth: {len(table)} networks x {p.rankcheck.seeds} seeds, self Kendall tau {row['self_kendall_tau']:.3f} "
          f"[{low:.3f}, {high:.3f}], mean |seed 0 - seed 1| {row['mean_abs_diff']:.4f}, accuracy "
          f"{row['acc_min']:.4f}-{row['acc_max']:.4f}, {row['seconds_per_training']:.0f}s per training")
    return row


if __name__ == "__main__":
    main()

"""Why do supernet scores rank the rank check's networks poorly? Three levers, measured.

Needs a finished `dvc repro rankcheck/dvc.yaml` (its table of networks trained
from scratch, results/rankcheck.csv) and the prepared data. Run from the project
folder:

    python bench/supernet_ranking.py                        # all three studies
    python bench/supernet_ranking.py --supernets 8x5,8x20   # CxE: channels x epochs

1. Supernet training (`--supernets`): trains a supernet per setting with the
   supernet stage's recipe (uniform single path per step, SGD with one-cycle
   learning rate), scores the rank check's networks with it exactly as the
   sample stage does (`fitnas.scoring.SupernetScorer`), and reports Kendall
   tau against their stand-alone accuracy, with a bootstrap 95% interval.
2. Sample count (`--sample-sizes`): fits the pipeline's predictor on the first
   n rows of results/samples.csv and reports the tau of its predictions for the
   rank check's networks.
3. The ground truth's own noise (`--truth-seeds`): the rank check's networks
   with other seeds (from the committed truth table, results/truth.csv, trained
   where it lacks them: seed 1 is the rank check's own) against seed 0, the tau
   between two seeds' stand-alone accuracies, the ceiling for any ranking.

Writes bench/results/supernet_ranking.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fitnas import checkpoints, config, spaces
from fitnas.data import splits
from fitnas.data.batches import Batches
from fitnas.metrics import bootstrap_kendall_tau, kendall_tau
from fitnas.pipeline import RANKCHECK, SAMPLES, SUPERNET, TRAIN, TRUTH_TABLE, VAL, final_costs, read_samples
from fitnas.predictors import from_settings
from fitnas.rankcheck import TRUTH, training_key, truth_results
from fitnas.scoring import SupernetScorer
from fitnas.distributed import pick_device
from fitnas.train import seed_everything, sgd_one_cycle, single_path, train_epoch


def train_supernet(p: config.Params, space, channels: int, epochs: int, device) -> dict:
    """A supernet trained with the supernet stage's recipe; returns the checkpoint dict SupernetScorer reads."""
    cfg = p.supernet
    seed_everything(p.seed)
    train = splits.load_split(TRAIN)
    shape = space.network_shape(cfg.model_copy(update={"channels": channels}), train.images.shape[1], len(train.classes))
    net = space.build_supernet(shape).to(device)
    batches = Batches(train, cfg.batch_size, shuffle=True, seed=p.seed, device=device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, epochs * len(batches))
    for epoch in range(1, epochs + 1):
        batches.set_epoch(epoch - 1)  # as the supernet stage: its batch order and its paths

        def sample_path(step: int, epoch: int = epoch) -> None:
            net.set_arch(single_path(space, p.seed, epoch, step))

        loss, acc = train_epoch(net, batches, optimizer, scheduler, sample_path, desc=f"supernet C={channels} epoch {epoch}/{epochs}")
        print(f"  C={channels} epoch {epoch}/{epochs}: train loss {loss:.4f} acc {acc:.4f}", flush=True)
    return {"shape": vars(shape), "model": net.state_dict()}


def tau_with_interval(scores, truth, resamples: int, seed: int) -> dict[str, float]:
    low, high = bootstrap_kendall_tau(np.asarray(scores), np.asarray(truth), resamples, seed)
    return {"kendall_tau": kendall_tau(np.asarray(scores), np.asarray(truth)), "low": low, "high": high}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--supernets", default="8x5,8x20", help="CxE settings: channels x epochs, comma-separated")
    parser.add_argument("--sample-sizes", default="50,100,200", help="rows of results/samples.csv the predictor is fitted on")
    parser.add_argument("--truth-seeds", type=int, default=1, help="extra training seeds for the ground truth (0 skips)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)

    p = config.load(args.params)
    space = spaces.get(p.space)
    device = pick_device(p.device)
    if not RANKCHECK.is_file():
        raise SystemExit(f"bench: {RANKCHECK} not found; run `dvc repro rankcheck/dvc.yaml` first")
    table = pd.read_csv(RANKCHECK)
    truth = table[TRUTH].to_numpy()
    archs = [space.parse(a) for a in table.arch]
    resamples, start = p.rankcheck.bootstrap, time.time()
    report: dict = {"networks": len(table), "params": args.params, "device": str(device)}

    report["supernets"] = []
    for setting in filter(None, args.supernets.split(",")):
        channels, epochs = (int(v) for v in setting.lower().split("x"))
        began = time.time()
        saved = train_supernet(p, space, channels, epochs, device)
        trained = time.time() - began
        scorer = SupernetScorer(p, space, device, splits.load_split(TRAIN), splits.load_split(VAL), saved, Path("(benchmark supernet)"))
        scores = [scorer.score(arch)[1] for arch in archs]
        row = {"channels": channels, "epochs": epochs, "train_seconds": trained,
               **tau_with_interval(scores, truth, resamples, p.seed)}
        report["supernets"].append(row)
        print(f"supernet C={channels} E={epochs}: tau {row['kendall_tau']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
              f" (trained {trained:.0f}s)", flush=True)

    report["sample_sizes"] = []
    samples = read_samples(SAMPLES, space)
    costs = final_costs(p, space)
    for n in (int(v) for v in args.sample_sizes.split(",") if v.strip()):
        rows = samples.iloc[:n]
        predictor = from_settings(p.predictor.kind, p.predictor, space, costs.params, p.seed)
        predictor.fit([space.parse(a) for a in rows.arch], rows.supernet_acc.to_numpy())
        row = {"n": len(rows), **tau_with_interval(predictor.query(archs), truth, resamples, p.seed)}
        report["sample_sizes"].append(row)
        print(f"{p.predictor.kind} fitted on {len(rows)} samples: tau {row['kendall_tau']:+.3f} "
              f"[{row['low']:+.3f}, {row['high']:+.3f}]", flush=True)

    report["truth_seeds"] = []
    # Trained at the rank check's shape: the default supernet's.
    shape = space.NetworkShape(**checkpoints.load(SUPERNET, "supernet")["shape"])
    train_split, val_split = splits.load_split(TRAIN), splits.load_split(VAL)
    # Seed 0 against each other seed of the committed truth (the rank check trains seeds 0 and 1 already).
    first = table[f"{TRUTH}_seed0"].to_numpy() if f"{TRUTH}_seed0" in table else truth
    key = training_key(p, shape, space, [TRAIN, VAL])
    for extra in range(1, args.truth_seeds + 1):
        retrained, _ = truth_results(p, space, shape, list(table.arch), device, TRUTH_TABLE, train_split, val_split, key,
                                     seeds=[extra])
        again = retrained[TRUTH].to_numpy()
        row = {"seed": p.seed + extra, "mean_abs_diff": float(np.abs(again - first).mean()),
               **tau_with_interval(again, first, resamples, p.seed)}
        report["truth_seeds"].append(row)
        print(f"ground truth, seed {p.seed} vs {p.seed + extra}: tau {row['kendall_tau']:+.3f} "
              f"[{row['low']:+.3f}, {row['high']:+.3f}], mean |diff| {row['mean_abs_diff']:.4f}", flush=True)

    report["seconds"] = time.time() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "supernet_ranking.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Supernet ranking on the rank check's {len(table)} networks", "",
             "| study | setting | Kendall tau | 95% interval |", "| --- | --- | ---: | --- |"]
    for row in report["supernets"]:
        lines.append(f"| supernet scores | C={row['channels']}, {row['epochs']} epochs ({row['train_seconds']:.0f}s) | "
                     f"{row['kendall_tau']:.3f} | {row['low']:.3f} to {row['high']:.3f} |")
    for row in report["sample_sizes"]:
        lines.append(f"| {p.predictor.kind} predictions | fitted on {row['n']} samples | "
                     f"{row['kendall_tau']:.3f} | {row['low']:.3f} to {row['high']:.3f} |")
    for row in report["truth_seeds"]:
        lines.append(f"| stand-alone, seed {p.seed} vs {row['seed']} | mean abs. difference {row['mean_abs_diff']:.4f} | "
                     f"{row['kendall_tau']:.3f} | {row['low']:.3f} to {row['high']:.3f} |")
    (out / "supernet_ranking.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"bench: {report['seconds']:.0f}s; wrote {out}/supernet_ranking.json and .md")
    return report


if __name__ == "__main__":
    main()

"""Which supernet ranks the rank check's networks best? Each lever trained by the supernet stage itself, measured.

Needs a finished rank check (results/rankcheck.csv: the networks trained alone and their
accuracy) and the prepared data. Run from the project folder:

    python bench/supernet_levers.py                                   # every variant below
    python bench/supernet_levers.py --variants base,fair,ensemble3    # some of them
    python bench/supernet_levers.py --variant lr05=supernet.lr=0.05   # one of your own (NAME=KEY=VALUE[;KEY=VALUE])

Each variant is params.yaml with a few `supernet.*` keys changed. Its supernet is trained by
`stages/supernet.py` in a folder of its own under `--work` (the project's prepared data linked
in, tracking off, one torch thread as `threads` says), so the bench measures exactly what
`dvc exp run -S ...` would train, and an interrupted variant resumes from its own checkpoint.
Its scores of the rank check's networks (`fitnas.scoring.SupernetScorer`, as the sample stage
scores) are ranked against their stand-alone accuracy: Kendall tau with a bootstrap 95%
interval, Spearman rho, and the training seconds. Every finished variant is a line of
`OUT/supernet_levers.runs.jsonl` (keyed by its settings and the truth), so a re-run measures
only the rest; `OUT/supernet_levers.json` and `.md` hold the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

# name -> overrides of params.yaml (dotted keys). The levers of Yu et al. (ICLR 2021), FairNAS,
# few-shot NAS and a seed ensemble; `base` is the default supernet. Two of Yu et al.'s are the
# default already and have no variant: BatchNorm without affine weights (both spaces' supernets)
# and no path dropout (single-path sampling drops nothing); their third, BatchNorm statistics of
# the sub-network itself, is `sample.bn_batches` (the bn* variants score the base supernet).
VARIANTS: dict[str, dict[str, object]] = {
    "base": {},
    "bn1": {"sample.bn_batches": 1},
    "bn16": {"sample.bn_batches": 16},
    "lr0.05": {"supernet.lr": 0.05},
    "lr0.2": {"supernet.lr": 0.2},
    "wd0": {"supernet.weight_decay": 0.0},
    "epochs10": {"supernet.epochs": 10},
    "cells2": {"supernet.cells": 2},
    "wide16": {"supernet.channels": 16},
    "ensemble3": {"supernet.ensemble": 3},
    "fewshot_e2": {"supernet.few_shot_slot": 2, "supernet.few_shot_epochs": 2},
    "fair": {"supernet.sampling": "fair"},
    # No lever: another supernet of the default recipe (seed 1), how far two of them differ; and the
    # two levers that moved most, with that seed and together.
    "seed1": {"seed": 1},
    "wd0_seed1": {"seed": 1, "supernet.weight_decay": 0.0},
    "epochs10_seed1": {"seed": 1, "supernet.epochs": 10},
    "wd0_epochs10": {"supernet.weight_decay": 0.0, "supernet.epochs": 10},
    "fewshot_e2_seed1": {"seed": 1, "supernet.few_shot_slot": 2, "supernet.few_shot_epochs": 2},
}


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """NAME=KEY=VALUE[;KEY=VALUE...] -> (NAME, {KEY: VALUE}), VALUE read as YAML."""
    name, _, rest = text.partition("=")
    if not name or not rest:
        raise SystemExit(f"bench: --variant {text!r}: write NAME=KEY=VALUE[;KEY=VALUE], e.g. lr05=supernet.lr=0.05")
    overrides = {}
    for item in rest.split(";"):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bench: --variant {text!r}: {item!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def with_overrides(params: dict, overrides: dict[str, object]) -> dict:
    out = json.loads(json.dumps(params))
    for key, value in overrides.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def code_digest():
    """The code a supernet's training and scoring run, hashed (every fitnas module and the stage)."""
    digest = hashlib.sha1()
    for path in sorted((ROOT / "src" / "fitnas").rglob("*.py")) + [ROOT / "stages" / "supernet.py"]:
        digest.update(path.read_bytes())
    return digest


# What a supernet's training reads of params.yaml, and what its scoring adds (`sample.*`); the
# rest (anchors, the fit, the search ...) changes neither, so it keys nothing here.
TRAINING = ("seed", "device", "threads", "data", "space", "supernet")
SCORING = ("bn_batches", "bn_batch_size", "val_limit", "batch_size")


def supernet_key(params: dict) -> str:
    """What a variant's trained supernet depends on, hashed: variants that differ only in how it is
    scored share one training."""
    digest = code_digest()
    digest.update(json.dumps({k: params.get(k) for k in TRAINING}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def variant_key(params: dict, truth: pd.DataFrame) -> str:
    """What a variant's result depends on: its supernet, its scoring and the truth it is judged by."""
    digest = hashlib.sha1(supernet_key(params).encode())
    digest.update(json.dumps({k: params["sample"].get(k) for k in SCORING}, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(truth, index=False).values.tobytes())
    return digest.hexdigest()[:16]


def train_variant(folder: Path, params: dict, prepared: Path) -> float:
    """The supernet stage run in `folder` with these params; its training seconds (from metrics/supernet.json).

    A folder whose supernet finished is not trained again (another variant of the same supernet)."""
    finished = folder / "metrics" / "supernet.json"
    if finished.is_file() and (folder / "models" / "supernet.pt").is_file():
        return float(json.loads(finished.read_text())["seconds"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    link = folder / "data" / "prepared"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(prepared.resolve())
    env = dict(os.environ, FITNAS_TRACKING="off")
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "supernet.py")], cwd=folder, env=env)
    if result.returncode != 0:
        raise SystemExit(f"bench: the supernet stage failed in {folder} (exit {result.returncode}); see above")
    return float(json.loads((folder / "metrics" / "supernet.json").read_text())["seconds"])


def score_variant(folder: Path, params: dict, archs: list[str]) -> list[float]:
    """The variant supernet's scores of `archs`, as the sample stage scores (the index-th network, the index-th shuffle)."""
    from fitnas import config, scoring, spaces
    from fitnas.distributed import pick_device, torch_threads

    p = config.Params.model_validate(params)
    space = spaces.get(p.space)
    device = pick_device(p.device)
    with torch_threads(p.threads):
        scorer = scoring.from_files(p, space, device, folder / "models" / "supernet.pt",
                                    folder / "data" / "prepared" / "train.pt", folder / "data" / "prepared" / "val.pt")
        return [scorer.score(space.parse(arch), i)[1] for i, arch in enumerate(archs)]


def paired_gain(scores: np.ndarray, base: np.ndarray, truth: np.ndarray, n: int, seed: int) -> tuple[float, float, float]:
    """Kendall tau of `scores` minus that of `base`, both against `truth`, with a 95% interval from
    resampling the networks (the same resample for both: the noise of which networks were drawn
    cancels, which the two separate intervals cannot show)."""
    from fitnas.metrics import kendall_tau

    rng = np.random.default_rng(seed)
    gains = np.empty(n)
    for i in range(n):
        idx = rng.integers(0, len(truth), len(truth))
        gains[i] = kendall_tau(scores[idx], truth[idx]) - kendall_tau(base[idx], truth[idx])
    low, high = np.percentile(gains, [2.5, 97.5])
    return kendall_tau(scores, truth) - kendall_tau(base, truth), float(low), float(high)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--truth", default="results/rankcheck.csv", help="the rank check's table (arch, standalone_acc)")
    parser.add_argument("--prepared", default="data/prepared", help="the prepared data folder")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE[;KEY=VALUE]: one more variant")
    parser.add_argument("--work", default=".fitnas/levers", help="folders the variants' supernets train in")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% interval")
    args = parser.parse_args(argv)

    from fitnas.metrics import bootstrap_kendall_tau, kendall_tau, spearman_rho
    from fitnas.rankcheck import TRUTH

    chosen = {}
    for name in filter(None, (v.strip() for v in args.variants.split(","))):
        if name not in VARIANTS:
            raise SystemExit(f"bench: unknown variant {name!r}; choose from {', '.join(VARIANTS)} or add one with --variant")
        chosen[name] = VARIANTS[name]
    chosen.update(parse_variant(text) for text in args.variant)
    truth_path = Path(args.truth)
    if not truth_path.is_file():
        raise SystemExit(f"bench: {truth_path} not found; run `dvc repro rankcheck/dvc.yaml` first")
    truth = pd.read_csv(truth_path)
    if not {"arch", TRUTH} <= set(truth.columns):
        raise SystemExit(f"bench: {truth_path} lacks columns arch and {TRUTH}; is it the rank check's table?")
    truth = truth[["arch", TRUTH]]
    base = yaml.safe_load(Path(args.params).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "supernet_levers.runs.jsonl"
    done = {}
    if journal.is_file():
        for line in journal.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row

    rows, y = [], truth[TRUTH].to_numpy()
    for name, overrides in chosen.items():
        params = with_overrides(base, overrides)
        key = variant_key(params, truth)
        folder = Path(args.work) / done.get(key, {}).get("supernet", f"supernet-{supernet_key(params)}")
        if key in done and ("scores" in done[key] or not (folder / "models" / "supernet.pt").is_file()):
            row = done[key] | {"name": name}
            print(f"{name}: from {journal}", flush=True)
        elif key in done:  # a row of an earlier version, without its scores: the same supernet scores again
            row = done[key] | {"name": name, "scores": score_variant(folder, params, list(truth.arch))}
            again = kendall_tau(np.array(row["scores"]), y)
            if abs(again - row["kendall_tau"]) > 1e-9:
                raise SystemExit(f"bench: {name}: the recomputed scores of {folder} rank at "
                                 f"{again:+.4f}, not the journal's {row['kendall_tau']:+.4f}: "
                                 f"scoring is not deterministic here; delete its journal line to measure it again")
            with journal.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name}: from {journal}, its scores recomputed", flush=True)
        else:
            print(f"{name}: training the supernet in {folder} ({overrides or 'the default'})", flush=True)
            seconds = train_variant(folder, params, Path(args.prepared))
            scores = np.array(score_variant(folder, params, list(truth.arch)))
            low, high = bootstrap_kendall_tau(scores, y, args.bootstrap, 0)
            row = {"name": name, "key": key, "overrides": overrides, "networks": len(truth),
                   "kendall_tau": kendall_tau(scores, y), "low": low, "high": high,
                   "spearman_rho": spearman_rho(scores, y), "train_seconds": seconds, "supernet": folder.name,
                   "scores": [float(v) for v in scores],
                   "threads": params.get("threads", 1), "torch_threads_seen": torch.get_num_threads()}
            with journal.open("a") as f:
                f.write(json.dumps(row) + "\n")
        rows.append(row)
        print(f"{name}: Kendall tau {row['kendall_tau']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]  "
              f"trained in {row['train_seconds']:.0f}s", flush=True)

    base_row = next((r for r in rows if r["name"] == "base" and "scores" in r), None)
    for r in rows:
        if base_row is not None and "scores" in r and r is not base_row:
            r["gain"], r["gain_low"], r["gain_high"] = paired_gain(np.array(r["scores"]), np.array(base_row["scores"]), y,
                                                                   args.bootstrap, 0)
    report = {"truth": str(truth_path), "networks": len(truth), "variants": rows}
    (out / "supernet_levers.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Supernet levers on the rank check's {len(truth)} networks", "",
             "| variant | overrides | Kendall tau | 95% interval | gain over base [95%, paired] | Spearman rho | training (s) |",
             "| --- | --- | ---: | --- | --- | ---: | ---: |"]
    for r in rows:
        shown = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(default)"
        gain = f"{r['gain']:+.3f} [{r['gain_low']:+.3f}, {r['gain_high']:+.3f}]" if "gain" in r else ""
        lines.append(f"| {r['name']} | {shown} | {r['kendall_tau']:.3f} | {r['low']:.3f} to {r['high']:.3f} | {gain} "
                     f"| {r['spearman_rho']:.3f} | {r['train_seconds']:.0f} |")
    (out / "supernet_levers.md").write_text("\n".join(lines) + "\n")
    print(f"bench: wrote {out / 'supernet_levers.json'} and .md", flush=True)
    return report


if __name__ == "__main__":
    main()

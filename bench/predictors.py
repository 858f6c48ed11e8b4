"""Predictor benchmark on NAS-Bench-201: how well does each predictor rank the whole space?

For each training size N and seed, every predictor is fitted on N cells drawn
uniformly from the 15,625 and judged against the ground truth of all 15,625
(Kendall tau, Spearman rho, precision at the top 1% and 5%, fit time, time to
predict the whole space). The noise study fits on the truth plus Gaussian
noise scaled so that the noisy values alone rank the space with Kendall tau
0.60, as a supernet's scores would, and judges against the clean truth.

Predictors are built exactly as the pipeline's fit stage builds them: from
the `predictor` section of the config schema (its defaults, i.e. params.yaml's),
through `fitnas.predictors.from_settings`.

    python bench/predictors.py ../shared/data/nb201/cifar10.csv
    python bench/predictors.py TABLE --sizes 156 --seeds 2 --predictors gcn,rf   # a quick look

Writes bench/results/predictors.json (every run and the means), predictors.md
(the tables) and predictors.png (tau vs N). Every finished run is also appended
to predictors.runs.jsonl at once; `--resume` skips the runs found there, so an
interrupted benchmark goes on where it stopped. Runs go seed by seed, every N
and the noise study per seed, so a stopped run has every column at fewer seeds.

`--jobs` runs that many fits at once, each in its own process on one thread
(default: one per CPU core): small graph networks use a second core better as
a second fit than as a second thread of the same one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd

from fitnas.config import Predictor as PredictorSettings
from fitnas.metrics import kendall_tau, precision_at_top, spearman_rho
from fitnas.predictors import KINDS, from_settings
from fitnas.spaces import nb201

# The benchmark's own network (C=16, N=5 cells per stage, 32x32 CIFAR-10): our
# counter reproduces its published parameter counts exactly (bench/nb201_classes.py).
CIFAR = nb201.NetworkShape(channels=16, cells=5, in_channels=3, num_classes=10)
TRUTH = "test_acc_200ep"
# Published Kendall tau on NAS-Bench-201 CIFAR-10 with 156 training architectures (about 1%).
PUBLISHED_156 = {"GATES": 0.733, "GATES + DELE": 0.824}


def load_table(path: str) -> tuple[list[nb201.Arch], np.ndarray]:
    """The cells and their ground-truth accuracy; a clear error when the table is not what we expect."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        sys.exit(f"bench: cannot read {path}: {err}. Pass the NAS-Bench-201 table (../shared/data/nb201/cifar10.csv).")
    missing = {"arch_str", TRUTH} - set(table.columns)
    if missing:
        sys.exit(f"bench: {path} lacks the column(s) {sorted(missing)}; it needs arch_str and {TRUTH}.")
    return [nb201.parse(text) for text in table.arch_str], table[TRUTH].to_numpy(dtype=float)


def noise_scale(truth: np.ndarray, target_tau: float, seed: int) -> float:
    """The Gaussian noise std at which truth + noise ranks the table with Kendall tau `target_tau` (bisection)."""
    unit = np.random.default_rng(seed).standard_normal(len(truth))
    low, high = 0.0, 100.0 * float(truth.std())
    for _ in range(40):
        mid = (low + high) / 2
        if kendall_tau(truth + mid * unit, truth) > target_tau:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def judge(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "kendall_tau": kendall_tau(pred, truth),
        "spearman_rho": spearman_rho(pred, truth),
        "precision_top1": precision_at_top(pred, truth, 0.01),
        "precision_top5": precision_at_top(pred, truth, 0.05),
    }


def one_run(kind: str, settings: PredictorSettings, archs: list, truth: np.ndarray, y: np.ndarray,
            n: int, seed: int, params_fn) -> dict:
    """Fit one predictor on n cells drawn with `seed` (scores y), judge it on every cell against truth."""
    chosen = np.random.default_rng(seed).choice(len(archs), n, replace=False)
    predictor = from_settings(kind, settings, nb201.SPACE, params_fn, seed)
    start = time.perf_counter()
    predictor.fit([archs[i] for i in chosen], y[chosen])
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pred = predictor.query(archs)
    query_seconds = time.perf_counter() - start
    return {"predictor": kind, "n": n, "seed": seed, **judge(pred, truth),
            "fit_seconds": fit_seconds, "query_seconds": query_seconds}


def noisy_scores(truth: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The noise study's training targets for one seed: the truth blurred as a supernet would blur it."""
    return truth + sigma * np.random.default_rng([seed, 777]).standard_normal(len(truth))


# Each worker process loads the table once and keeps it here.
_WORKER: dict = {}


def _start_worker(table: str, settings: dict) -> None:
    import torch

    torch.set_num_threads(1)
    _load_worker_state(table, settings)


def _load_worker_state(table: str, settings: dict) -> None:
    archs, truth = load_table(table)
    nb201.distinct()  # the isomorphism classes, built once per process, outside every fit time
    _WORKER.update(archs=archs, truth=truth, params_fn=nb201.cost_model(CIFAR, 32).params,
                   settings=PredictorSettings(**settings))


def _run_task(task: tuple[str, int, int, str, float | None]) -> dict:
    study, n, seed, kind, sigma = task
    w = _WORKER
    y = noisy_scores(w["truth"], sigma, seed) if study == "noise" else w["truth"]
    return {"study": study, **one_run(kind, w["settings"], w["archs"], w["truth"], y, n, seed, w["params_fn"])}


def read_journal(path: Path, settings: dict) -> list[dict]:
    """Runs finished earlier with the same predictor settings (others are dropped: they measured something else)."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in run.items() if k != "settings"} for run in runs if run.get("settings") == settings]


def summarise(runs: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(runs)
    metrics = ["kendall_tau", "spearman_rho", "precision_top1", "precision_top5", "fit_seconds", "query_seconds"]
    grouped = frame.groupby(["study", "predictor", "n"], sort=False)
    summary = grouped[metrics].mean().join(grouped["kendall_tau"].std(ddof=0).rename("kendall_tau_std"))
    return summary.join(grouped.size().rename("seeds")).reset_index()


def markdown(summary: pd.DataFrame, noisy_tau: float | None) -> str:
    lines = []
    for study in ("size", "noise"):
        part = summary[summary.study == study]
        if part.empty:  # --noise-n 0 skips the noise study: no noisy tau to print either
            continue
        title = ("Training size (clean ground truth)" if study == "size" else
                 f"Noise study (fitted on noisy values whose own tau is {noisy_tau:.3f}, judged on the truth)")
        lines += [f"### {title}", "",
                  "| predictor | N | Kendall tau | Spearman rho | P@top-1% | P@top-5% | fit (s) | predict 15,625 (s) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in part.itertuples():
            lines.append(f"| {row.predictor} | {row.n} | {row.kendall_tau:.3f} ± {row.kendall_tau_std:.3f} | "
                         f"{row.spearman_rho:.3f} | {row.precision_top1:.3f} | {row.precision_top5:.3f} | "
                         f"{row.fit_seconds:.1f} | {row.query_seconds:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, noisy_tau: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    sizes = summary[summary.study == "size"]
    for i, (kind, part) in enumerate(sizes.groupby("predictor", sort=False)):
        color = f"C{i}"
        ax.errorbar(part.n, part.kendall_tau, yerr=part.kendall_tau_std, marker="o", capsize=3, color=color, label=kind)
        noise = summary[(summary.study == "noise") & (summary.predictor == kind)]
        for row in noise.itertuples():
            ax.errorbar([row.n * 1.06], [row.kendall_tau], yerr=[row.kendall_tau_std], marker="s", mfc="none",
                        capsize=3, color=color, linestyle="none")
    if noisy_tau is not None:
        ax.axhline(noisy_tau, color="gray", linestyle=":", label=f"noisy scores alone ({noisy_tau:.2f})")
    for j, (name, tau) in enumerate(PUBLISHED_156.items()):
        ax.plot([156], [tau], marker="*", markersize=11, color="gray", alpha=0.5 + 0.5 * j, linestyle="none",
                label=f"{name} (published, N=156)")
    ax.set_xscale("log")
    ax.set(xlabel="training architectures N (log scale)", ylabel="Kendall tau over all 15,625 cells",
           title="NAS-Bench-201 ranking: filled = clean truth, hollow = noise study (N=1000)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="NAS-Bench-201 table (../shared/data/nb201/cifar10.csv)")
    parser.add_argument("--sizes", default="50,156,500,1000", help="training sizes, comma-separated")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per size (0..seeds-1)")
    # The multi-fidelity fusion fitted on one signal is the truth-only network with cross-validated
    # epochs; it is measured where it fuses, by bench/multifidelity.py, so it is not a default row here.
    single = [k for k in KINDS if k != "multifidelity"]
    parser.add_argument("--predictors", default=",".join(single), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--noise-n", type=int, default=1000, help="training size of the noise study (0 skips it)")
    parser.add_argument("--noise-tau", type=float, default=0.60, help="Kendall tau of the noisy values alone")
    parser.add_argument("--epochs", type=int, default=None, help="override predictor.epochs (quick runs)")
    parser.add_argument("--ensemble", type=int, default=None, help="override predictor.ensemble (quick runs)")
    parser.add_argument("--out", default="bench/results", help="folder for predictors.json/.md/.png")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="fits at once, one process and one thread each (default: one per CPU core)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs of predictors.runs.jsonl made with the same settings; run only the rest")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    kinds = [k.strip() for k in args.predictors.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        sys.exit(f"bench: unknown predictor(s) {sorted(unknown)}; choose from {', '.join(KINDS)}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    overrides = {k: v for k, v in (("epochs", args.epochs), ("ensemble", args.ensemble)) if v is not None}
    settings = PredictorSettings(**overrides)

    archs, truth = load_table(args.table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sigma = noisy_tau = None
    if args.noise_n > 0:
        sigma = noise_scale(truth, args.noise_tau, seed=12345)
        print(f"bench: noise std {sigma:.3f} accuracy points gives Kendall tau {args.noise_tau:.2f}", flush=True)
    plan = [(study, n, seed) for seed in range(args.seeds)
            for study, n in [("size", n) for n in sizes] + ([("noise", args.noise_n)] if sigma else [])]
    journal = out / "predictors.runs.jsonl"
    runs = read_journal(journal, settings.model_dump()) if args.resume else []
    if not args.resume:
        journal.unlink(missing_ok=True)
    done = {(r["study"], r["n"], r["seed"], r["predictor"]) for r in runs}
    if done:
        print(f"bench: resuming with {len(done)} runs from {journal}", flush=True)
    noisy_taus = [kendall_tau(noisy_scores(truth, sigma, seed), truth) for study, _, seed in plan if study == "noise"]
    if noisy_taus:
        noisy_tau = float(np.mean(noisy_taus))
    tasks = [(study, n, seed, kind, sigma) for study, n, seed in plan for kind in kinds if (study, n, seed, kind) not in done]
    start = time.time()

    def record(run: dict) -> None:
        runs.append(run)
        with journal.open("a") as file:  # at once: an interrupted benchmark keeps every finished run
            file.write(json.dumps({**run, "settings": settings.model_dump()}) + "\n")
        print(f"bench [{len(runs) - len(done)}/{len(tasks)}] {run['study']:5s} N={run['n']:<5d} seed={run['seed']} "
              f"{run['predictor']:6s} tau {run['kendall_tau']:.3f}  P@1% {run['precision_top1']:.3f}  "
              f"fit {run['fit_seconds']:.1f}s  predict {run['query_seconds']:.2f}s  "
              f"({time.time() - start:.0f}s elapsed)", flush=True)

    jobs = max(1, min(args.jobs, len(tasks)))
    print(f"bench: {len(tasks)} fits, {jobs} at a time", flush=True)
    if jobs == 1:  # in this process, on torch's threads as they are set
        _load_worker_state(args.table, settings.model_dump())
        for task in tasks:
            record(_run_task(task))
    else:
        with ProcessPoolExecutor(jobs, initializer=_start_worker, initargs=(args.table, settings.model_dump())) as pool:
            # Submitted in plan order, at most `jobs` ahead: the seed-major order survives an interruption.
            pending, queue = set(), list(tasks)
            while queue or pending:
                while queue and len(pending) < jobs:
                    pending.add(pool.submit(_run_task, queue.pop(0)))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result())
    order = {(study, n, seed): i for i, (study, n, seed) in enumerate(plan)}
    runs.sort(key=lambda r: (order.get((r["study"], r["n"], r["seed"]), len(order)), kinds.index(r["predictor"]) if r["predictor"] in kinds else 0))

    summary = summarise(runs)
    report = {
        "table": str(args.table),
        "cells": len(archs),
        "settings": settings.model_dump(),
        "noise": {"target_tau": args.noise_tau, "std": sigma, "noisy_tau": noisy_tau, "n": args.noise_n} if sigma else None,
        "published_tau_at_156": PUBLISHED_156,
        "seconds": time.time() - start,
        "summary": summary.to_dict("records"),
        "runs": runs,
    }
    (out / "predictors.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(summary, noisy_tau)
    (out / "predictors.md").write_text(table)
    plot(summary, noisy_tau, out / "predictors.png")
    print(table)
    print(f"bench: {time.time() - start:.0f}s; wrote {out}/predictors.json, predictors.md, predictors.png")
    return report


if __name__ == "__main__":
    main()

"""Multi-fidelity benchmark on NAS-Bench-201: many cheap scores plus K real trainings.

For each seed, `--low-n` random cells get their low fidelity (`val_acc_12ep`,
the 12-epoch accuracy), and K *other* cells their truth (`test_acc_200ep`); free
signals (FLOPs, params, and synflow computed data-free by fitnas) are known for
every cell. Every method is judged against the truth of every cell of the
table (Kendall tau, Spearman rho, precision at the top 1% and 5%).

Rows: `raw_low` (the 12-epoch values of every cell), `params`, `flops`,
`synflow` (rankings of their own); `gcn_low` (the pipeline's GCN on the low
fidelity alone), `gcn_truth` (on the K truths alone), `blend` (a rank average
of the two, its weight chosen by cross-validation on the K truths); the
fusions of `fitnas.multifidelity.MultiFidelityPredictor`: `finetune_head`,
`finetune_all` (the low-fidelity GCN fine-tuned on the truths, readout only /
every weight), `finetune` (the better of the two by cross-validation, or their
mix), `stack_nofree` (fine-tuned experts and the truth-only GCN stacked), and
`multifidelity`, the default: everything, free signals included, stacked with
weights chosen by cross-validation on the K truths.

    python bench/multifidelity.py ../shared/data/nb201/cifar10.csv
    python bench/multifidelity.py TABLE --k 25 --seeds 2 --low-n 500     # a quick look

Writes DIR/multifidelity.json (`summary`: one row per method and K), .md and
.png (tau vs K). Every finished task is appended to
DIR/multifidelity.runs.jsonl at once; `--resume` keeps those made with the same
settings. Synflow values are kept in DIR/multifidelity.synflow.csv (they depend
only on the cell and the network shape) and pre-trained low-fidelity GCNs in
DIR/multifidelity.cache/ (not committed: weights), so a resumed study re-fits
nothing it has; beside them each (seed, K) fit's components (k{seed}_{K}.npz),
which bench/multifidelity_weightings.py re-weighs without re-fitting.
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
import torch

from fitnas.config import Predictor as PredictorSettings
from fitnas.metrics import kendall_tau, precision_at_top, spearman_rho
from fitnas.predictors.multifidelity import TRUTH, MultiFidelityPredictor, _quantile_map, simplex_weights
from fitnas.predictors import from_settings, gcn_state, load_gcn
from fitnas.spaces import nb201
from fitnas.zerocost import score_archs

CIFAR = nb201.NetworkShape(channels=16, cells=5, in_channels=3, num_classes=10)
TRUTH_COL, LOW_COL = "test_acc_200ep", "val_acc_12ep"
COLUMNS = ("arch_str", TRUTH_COL, LOW_COL, "flops_M", "params_M")
LOW = "val12"  # the low signal's name inside the predictor
SYNFLOW_CHUNK = 250  # cells per synflow task: a journal line every ~30 s
FUSION_ROWS = ("finetune_head", "finetune_all", "finetune", "stack_nofree", "multifidelity")
FIXED_ROWS = ("raw_low", "params", "flops", "synflow")


def load_table(path: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        sys.exit(f"bench: cannot read {path}: {err}. Pass the NAS-Bench-201 table (../shared/data/nb201/cifar10.csv).")
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        sys.exit(f"bench: {path} lacks the column(s) {sorted(missing)}; it needs {', '.join(COLUMNS)}.")
    return table


def judge(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "kendall_tau": kendall_tau(pred, truth),
        "spearman_rho": spearman_rho(pred, truth),
        "precision_top1": precision_at_top(pred, truth, 0.01),
        "precision_top5": precision_at_top(pred, truth, 0.05),
    }


def split(n_cells: int, low_n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The low-fidelity cells and the K truth cells of one seed: disjoint, and the K nested across K."""
    order = np.random.default_rng(seed).permutation(n_cells)
    if low_n + k > n_cells:
        sys.exit(f"bench: --low-n {low_n} plus K={k} exceeds the table's {n_cells} cells")
    return order[:low_n], order[low_n : low_n + k]


def mf_options(settings: PredictorSettings, quick_epochs: int | None) -> dict:
    """The predictor's settings: the pipeline's GCN recipe; tiny epoch grids for quick runs."""
    options = dict(hidden=settings.hidden, layers=settings.layers, epochs=settings.epochs, lr=settings.lr,
                   weight_decay=settings.weight_decay, batch_size=settings.batch_size,
                   hinge_weight=settings.hinge_weight, ensemble=settings.ensemble, validation=settings.validation)
    if quick_epochs is not None:
        grid = tuple(sorted({max(1, quick_epochs // 2), quick_epochs}))
        options.update(tune_epochs={"head": grid, "all": grid}, truth_epochs=grid)
    return options


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable") / max(1, len(values) - 1)


# ----------------------------------------------------------------------------
# Worker side: each process loads the table once.

_W: dict = {}


def _start_worker(table: str, config: dict) -> None:
    torch.set_num_threads(1)
    _load(table, config)


def _load(table: str, config: dict) -> None:
    frame = load_table(table)
    archs = [nb201.parse(s) for s in frame.arch_str]
    costs = nb201.cost_model(CIFAR, 32)
    _W.update(
        archs=archs,
        keys=[nb201.canonical(a) for a in archs],
        truth=frame[TRUTH_COL].to_numpy(float),
        low=frame[LOW_COL].to_numpy(float),
        params_fn=lambda a: costs.params(nb201.canonical(a)),
        flops_fn=lambda a: costs.flops(nb201.canonical(a)),
        config=config,
        settings=PredictorSettings(**config["settings"]),
    )


def _synflow_shape(config: dict) -> tuple[nb201.NetworkShape, int]:
    c, n, hw = config["synflow_shape"]
    return nb201.NetworkShape(channels=c, cells=n, in_channels=3, num_classes=10), hw


def _task_synflow(chunk: list[str]) -> dict:
    """Data-free synflow of some canonical cells (strings), at the configured network shape."""
    shape, hw = _synflow_shape(_W["config"])
    archs = [nb201.parse(s) for s in chunk]
    start = time.perf_counter()
    values = score_archs(archs, lambda a: nb201.build(a, shape), torch.zeros(1, 3, hw, hw),
                         torch.zeros(1, dtype=torch.long), proxies=("synflow",))["synflow"]
    return {"task": "synflow", "cells": chunk, "synflow": [float(v) for v in values],
            "seconds": time.perf_counter() - start}


def _task_low(seed: int, cache: str) -> dict:
    """The pipeline's GCN on the low fidelity of --low-n cells: the gcn_low row and the predictor's expert."""
    w, config = _W, _W["config"]
    low_idx, _ = split(len(w["archs"]), config["low_n"], 0, seed)
    # Without the early-stopping probes: on 1,000 low-fidelity scores they choose all 200 epochs
    # anyway (seeds 0 and 1), so the fit is the same at 60% of the cost.
    recipe = PredictorSettings(**{**config["settings"], "validation": 0.0})
    gcn = from_settings("gcn", recipe, nb201, w["params_fn"], seed)
    start = time.perf_counter()
    gcn.fit([w["archs"][i] for i in low_idx], w["low"][low_idx])
    seconds = time.perf_counter() - start
    torch.save(gcn_state(gcn), cache)
    return {"task": "low", "method": "gcn_low", "k": 0, "seed": seed, **judge(gcn.query(w["archs"]), w["truth"]),
            "fit_seconds": seconds}


def _task_k(seed: int, k: int, cache: str, synflow: dict[str, float] | None) -> dict:
    """Every method that sees the K truths of one seed; returns one row per method."""
    w, config = _W, _W["config"]
    archs, truth = w["archs"], w["truth"]
    low_idx, k_idx = split(len(archs), config["low_n"], k, seed)
    k_archs, k_y = [archs[i] for i in k_idx], truth[k_idx]
    rows = []

    start = time.perf_counter()
    gcn_truth = from_settings("gcn", w["settings"], nb201, w["params_fn"], seed).fit(k_archs, k_y)
    truth_pred = gcn_truth.query(archs)
    rows.append({"method": "gcn_truth", **judge(truth_pred, truth), "fit_seconds": time.perf_counter() - start})

    expert = load_gcn(torch.load(cache, weights_only=True), nb201)
    free = {"params": w["params_fn"], "flops": w["flops_fn"]}
    if synflow is not None:
        free["synflow"] = lambda a: synflow[nb201.to_str(nb201.canonical(a))]
    mf = MultiFidelityPredictor(nb201, seed=seed, keep_all=True, **mf_options(w["settings"], config["quick_epochs"]))
    low_archs, low_values = [archs[i] for i in low_idx], w["low"][low_idx]
    mf.use_expert(LOW, expert, low_archs, low_values)
    start = time.perf_counter()
    mf.fit(k_archs, k_y, low={LOW: (low_archs, low_values)}, free=free)
    mf_seconds = time.perf_counter() - start
    head, every = f"{LOW}:head", f"{LOW}:all"
    variants = {
        "finetune_head": {head: 1.0},
        "finetune_all": {every: 1.0},
        "finetune": mf.choose_weights([head, every]),
        "stack_nofree": mf.choose_weights([head, every, TRUTH]),
        "multifidelity": dict(zip(mf.components, (float(x) for x in mf.weights))),
    }
    for name, weights in variants.items():
        rows.append({"method": name, **judge(mf.query_with(weights, archs), truth), "weights": weights,
                     "fit_seconds": mf_seconds})
    rows[-1]["report"] = mf.report
    # Every component on every cell and on the truths out of fold, for studying other weightings
    # offline (weights: beside the cache, not committed).
    keys = [nb201.canonical(a) for a in archs]
    np.savez_compressed(Path(cache).with_name(f"k{seed}_{k}.npz"), k_idx=k_idx, y=k_y,
                        names=np.array(mf.components),
                        oof=np.column_stack([mf.oof[n] for n in mf.components]),
                        cells=np.column_stack([_quantile_map(mf.references[n], mf._component(n, keys))
                                               for n in mf.components]))

    # The plain blend: gcn_low never saw the K truths, the truth-only GCN's out-of-fold values come
    # from the predictor's cross-validation; their rank average's weight is chosen on the K truths.
    low_pred = expert.query(archs)
    (w_low, w_truth), _ = simplex_weights(np.column_stack([low_pred[k_idx], mf.oof[TRUTH]]), k_y)
    blend = w_low * ranks(low_pred) + w_truth * ranks(truth_pred)
    rows.append({"method": "blend", **judge(blend, truth), "weights": {"gcn_low": w_low, "gcn_truth": w_truth},
                 "fit_seconds": 0.0})
    return {"task": "k", "k": k, "seed": seed, "rows": rows}


def _run(task: tuple) -> dict:
    kind, *args = task
    return {"synflow": _task_synflow, "low": _task_low, "k": _task_k}[kind](*args)


# ----------------------------------------------------------------------------
# Journal, summary, report


def read_journal(path: Path, config: dict) -> list[dict]:
    """Tasks finished earlier with the same configuration (others measured something else)."""
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e.get("config") == config]


def read_synflow(path: Path, shape: list[int]) -> dict[str, float]:
    if not path.is_file():
        return {}
    frame = pd.read_csv(path)
    frame = frame[frame["shape"] == "x".join(map(str, shape))]
    return dict(zip(frame.cell, frame.synflow.astype(float)))


def append_synflow(path: Path, shape: list[int], cells: list[str], values: list[float]) -> None:
    new = not path.is_file()
    with path.open("a") as file:
        if new:
            file.write("shape,cell,synflow\n")
        for cell, value in zip(cells, values):
            file.write(f"{'x'.join(map(str, shape))},{cell},{value!r}\n")


def summarise(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    metrics = ["kendall_tau", "spearman_rho", "precision_top1", "precision_top5", "fit_seconds"]
    grouped = frame.groupby(["method", "k"], sort=False)
    summary = grouped[metrics].mean().rename(columns={m: f"{m}_mean" for m in metrics})
    summary = summary.join(grouped["kendall_tau"].std(ddof=0).rename("kendall_tau_std"))
    summary = summary.join(grouped.size().rename("seeds")).reset_index()
    return summary


ORDER = ("raw_low", "params", "flops", "synflow", "gcn_low", "gcn_truth", "blend") + FUSION_ROWS


def markdown(summary: pd.DataFrame, ks: list[int]) -> str:
    lines = ["### Kendall tau over every cell of the table (mean ± std over seeds)", "",
             "| method | " + " | ".join(f"K={k}" for k in ks) + " |", "| --- |" + " ---: |" * len(ks)]
    for method in [m for m in ORDER if m in set(summary.method)]:
        cells = []
        for k in ks:
            row = summary[(summary.method == method) & (summary.k == k)]
            cells.append("" if row.empty else f"{row.kendall_tau_mean.iloc[0]:.3f} ± {row.kendall_tau_std.iloc[0]:.3f}")
        name = f"**{method}**" if method == "multifidelity" else method
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "### Every metric", "",
              "| method | K | seeds | Kendall tau | Spearman rho | P@top-1% | P@top-5% | fit (s) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in summary.itertuples():
        lines.append(f"| {row.method} | {row.k} | {row.seeds} | {row.kendall_tau_mean:.3f} ± {row.kendall_tau_std:.3f} | "
                     f"{row.spearman_rho_mean:.3f} | {row.precision_top1_mean:.3f} | {row.precision_top5_mean:.3f} | "
                     f"{row.fit_seconds_mean:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, method in enumerate(m for m in ORDER if m in set(summary.method)):
        part = summary[summary.method == method].sort_values("k")
        style = dict(linewidth=2.5) if method == "multifidelity" else dict(linewidth=1, alpha=0.8)
        dashed = "--" if method in FIXED_ROWS or method == "gcn_low" else "-"
        ax.errorbar(part.k, part.kendall_tau_mean, yerr=part.kendall_tau_std, marker="o", capsize=3,
                    linestyle=dashed, color="black" if method == "multifidelity" else plt.cm.tab20(i % 20), label=method, **style)
    ax.set_xscale("log")
    ax.set(xlabel="true trainings K (log scale)", ylabel="Kendall tau over every cell",
           title="NAS-Bench-201: low fidelity (12 epochs) on many cells + K truths")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="NAS-Bench-201 table with arch_str, test_acc_200ep, val_acc_12ep, flops_M, params_M")
    parser.add_argument("--k", default="10,25,50,156", help="numbers of true trainings, comma-separated")
    parser.add_argument("--low-n", type=int, default=1000, help="cells with a low-fidelity score per seed")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..seeds-1")
    parser.add_argument("--out", default="bench/results", help="folder for multifidelity.json/.md/.png")
    parser.add_argument("--synflow-shape", default="16,1,8",
                        help="channels,cells,input size of the network synflow is computed on ('none': no synflow)")
    parser.add_argument("--epochs", type=int, default=None, help="override predictor.epochs and the epoch grids (quick runs)")
    parser.add_argument("--ensemble", type=int, default=None, help="override predictor.ensemble (quick runs)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="tasks at once, one process and one thread each (default: one per CPU core)")
    parser.add_argument("--resume", action="store_true", help="keep the tasks of the journal made with the same settings")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    overrides = {k: v for k, v in (("epochs", args.epochs), ("ensemble", args.ensemble)) if v is not None}
    settings = PredictorSettings(**overrides)
    synflow_shape = None if args.synflow_shape == "none" else [int(x) for x in args.synflow_shape.split(",")]
    config = {"settings": settings.model_dump(), "low_n": args.low_n, "quick_epochs": args.epochs,
              "synflow_shape": synflow_shape}
    table = load_table(args.table)
    truth = table[TRUTH_COL].to_numpy(float)
    archs = [nb201.parse(s) for s in table.arch_str]
    for k in ks:
        split(len(archs), args.low_n, k, 0)  # a clear error before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "multifidelity.cache"
    cache_dir.mkdir(exist_ok=True)
    journal = out / "multifidelity.runs.jsonl"
    synflow_file = out / "multifidelity.synflow.csv"
    if not args.resume:
        journal.unlink(missing_ok=True)
    entries = read_journal(journal, config) if args.resume else []

    # What is left to do.
    synflow = read_synflow(synflow_file, synflow_shape) if synflow_shape else {}
    canon = sorted({nb201.to_str(nb201.canonical(a)) for a in archs})
    todo_cells = [c for c in canon if c not in synflow] if synflow_shape else []
    low_done = {e["seed"] for e in entries if e["task"] == "low" and (cache_dir / f"low{e['seed']}.pt").is_file()}
    k_done = {(e["seed"], e["k"]) for e in entries if e["task"] == "k"}
    entries = [e for e in entries if e["task"] != "low" or e["seed"] in low_done]
    tasks: list[tuple] = [("low", s, str(cache_dir / f"low{s}.pt")) for s in range(args.seeds) if s not in low_done]
    tasks += [("synflow", todo_cells[i : i + SYNFLOW_CHUNK]) for i in range(0, len(todo_cells), SYNFLOW_CHUNK)]
    pending_k = [(s, k) for s in range(args.seeds) for k in sorted(ks, reverse=True) if (s, k) not in k_done]
    if entries:
        print(f"bench: resuming with {len(entries)} finished tasks from {journal}", flush=True)
    print(f"bench: {len(tasks) + len(pending_k)} tasks ({len(todo_cells)} synflow cells), {args.jobs} at a time",
          flush=True)
    start = time.time()

    def record(result: dict) -> None:
        if result["task"] == "synflow":
            append_synflow(synflow_file, synflow_shape, result["cells"], result["synflow"])
            synflow.update(zip(result["cells"], result["synflow"]))
            print(f"bench: synflow {len(synflow)}/{len(canon)} cells ({time.time() - start:.0f}s)", flush=True)
            return
        entries.append(result)
        with journal.open("a") as file:  # at once: an interrupted study keeps every finished task
            file.write(json.dumps({**result, "config": config}) + "\n")
        if result["task"] == "low":
            low_done.add(result["seed"])
            print(f"bench: seed {result['seed']} gcn_low tau {result['kendall_tau']:.3f} "
                  f"fit {result['fit_seconds']:.0f}s ({time.time() - start:.0f}s)", flush=True)
        else:
            taus = " ".join(f"{r['method']} {r['kendall_tau']:.3f}" for r in result["rows"])
            print(f"bench: seed {result['seed']} K={result['k']}: {taus} ({time.time() - start:.0f}s)", flush=True)

    def ready_k() -> tuple | None:
        # A K task needs its seed's low-fidelity GCN and, with synflow, every cell's synflow.
        if synflow_shape and len(synflow) < len(canon):
            return None
        for i, (s, k) in enumerate(pending_k):
            if s in low_done:
                pending_k.pop(i)
                return ("k", s, k, str(cache_dir / f"low{s}.pt"), dict(synflow) if synflow_shape else None)
        return None

    jobs = max(1, args.jobs)
    if jobs == 1:
        _load(args.table, config)
        for task in tasks:
            record(_run(task))
        while pending_k:
            record(_run(ready_k()))
    else:
        with ProcessPoolExecutor(jobs, initializer=_start_worker, initargs=(args.table, config)) as pool:
            running: set = set()
            while tasks or pending_k or running:
                while len(running) < jobs:
                    task = tasks.pop(0) if tasks else ready_k()
                    if task is None:
                        break
                    running.add(pool.submit(_run, task))
                if not running:
                    raise RuntimeError("bench: tasks wait on one another")  # cannot happen: lows come first
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result())

    # Rows: the fixed rankings (the same at every K and seed), then the fitted ones.
    rows = []
    costs = nb201.cost_model(CIFAR, 32)
    fixed = {"raw_low": table[LOW_COL].to_numpy(float),
             "params": np.array([costs.params(nb201.canonical(a)) for a in archs]),
             "flops": np.array([costs.flops(nb201.canonical(a)) for a in archs])}
    if synflow_shape:
        fixed["synflow"] = np.array([synflow[nb201.to_str(nb201.canonical(a))] for a in archs])
    fixed_scores = {name: judge(values, truth) for name, values in fixed.items()}
    lows = {e["seed"]: e for e in entries if e["task"] == "low"}
    for k in ks:
        for seed in range(args.seeds):
            for name, score in fixed_scores.items():
                rows.append({"method": name, "k": k, "seed": seed, **score, "fit_seconds": 0.0})
            if seed in lows:
                rows.append({**{m: v for m, v in lows[seed].items() if m not in ("task", "config")}, "k": k})
    for e in sorted((e for e in entries if e["task"] == "k"), key=lambda e: (e["seed"], e["k"])):
        rows += [{**r, "k": e["k"], "seed": e["seed"]} for r in e["rows"]]
    summary = summarise(rows)
    summary["method"] = pd.Categorical(summary.method, [m for m in ORDER if m in set(summary.method)], ordered=True)
    summary = summary.sort_values(["method", "k"]).reset_index(drop=True)
    summary["method"] = summary.method.astype(str)
    report = {
        "table": str(args.table),
        "cells": len(archs),
        "config": config,
        "seconds_this_run": time.time() - start,
        "summary": summary.to_dict("records"),
        "runs": rows,
    }
    (out / "multifidelity.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(summary, ks)
    (out / "multifidelity.md").write_text(text)
    plot(summary, out / "multifidelity.png")
    print(text)
    print(f"bench: {time.time() - start:.0f}s; wrote {out}/multifidelity.json, .md, .png")
    return report


if __name__ == "__main__":
    main()

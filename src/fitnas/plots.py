"""The pictures a person looks at: training curves, predicted vs measured, the Pareto front, the rank check."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt
import pandas as pd


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(history: pd.DataFrame, path: Path, title: str) -> Path:
    """history: one row per epoch with train_loss, train_acc and optionally val_loss, val_acc."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "val"):
        if f"{split}_loss" in history:
            ax_loss.plot(history["epoch"], history[f"{split}_loss"], marker="o", label=split)
            ax_acc.plot(history["epoch"], history[f"{split}_acc"], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def predicted_vs_measured(holdout: pd.DataFrame, metrics: dict[str, dict], path: Path) -> Path:
    """holdout: measured_acc plus one predicted column per predictor ('pred_<name>')."""
    names = [c.removeprefix("pred_") for c in holdout.columns if c.startswith("pred_")]
    # At most two panels a row: a wide strip would not fit a page or `dvc plots show`.
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        ax.scatter(holdout["measured_acc"], holdout[f"pred_{name}"], s=12, alpha=0.7)
        tau = metrics.get(name, {}).get("kendall_tau", float("nan"))
        ax.set(title=f"{name}  (Kendall tau {tau:.3f})", xlabel="supernet accuracy (measured)", ylabel="predicted")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def pareto(
    table: pd.DataFrame,
    front: pd.DataFrame,
    chosen: pd.Series,
    path: Path,
    budget_flops: float | None,
    latency_front: pd.DataFrame | None = None,
    budget_latency: float | None = None,
    label: str = "all distinct networks",
) -> Path:
    """Predicted accuracy against FLOPs, and against latency when the table has it (latency_front given)."""
    panels = [("flops_M", front, budget_flops, "FLOPs (M multiply-accumulates)", "MFLOPs")]
    if latency_front is not None and "latency_ms" in table:
        panels.append(("latency_ms", latency_front, budget_latency, "latency (ms, latency table)", "ms"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (column, line, budget, xlabel, unit) in zip(axes[0], panels):
        ax.scatter(table[column], table["predicted_acc"], s=4, alpha=0.25, color="grey", label=label)
        ax.plot(line[column], line["predicted_acc"], marker="o", markersize=3, color="tab:blue", label="Pareto front")
        ax.scatter([chosen[column]], [chosen["predicted_acc"]], s=160, marker="*", color="tab:red", zorder=5, label="chosen")
        if budget is not None:
            ax.axvline(budget, linestyle="--", color="tab:red", alpha=0.6, label=f"budget {budget} {unit}")
        ax.set(xlabel=xlabel, ylabel="predicted accuracy", title=f"Predicted accuracy vs {xlabel.split(' (')[0]}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    return _save(fig, path)


def rank_check(table: pd.DataFrame, report: dict[str, float], titles: dict[str, str], path: Path) -> Path:
    """One panel per ranker (a column of table, named in titles) against stand-alone accuracy."""
    cols = min(3, len(titles))
    rows = -(-len(titles) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.75 * rows), squeeze=False)
    for ax in axes.flat[len(titles):]:
        ax.set_visible(False)
    for ax, (column, title) in zip(axes.flat, titles.items()):
        ax.scatter(table[column], table["standalone_acc"], s=16, alpha=0.75)
        tau, low, high = (report[f"{column}.kendall_tau{end}"] for end in ("", "_low", "_high"))
        ax.set(title=f"{title}\nKendall tau {tau:.2f}  (95% CI {low:.2f} to {high:.2f})", xlabel=column,
               ylabel="stand-alone accuracy (validation)")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def latency_check(checked: pd.DataFrame, path: Path, device: str) -> Path:
    """Whole networks' measured latency against the latency table's sums."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(checked["measured_ms"], checked["table_ms"], s=24)
    if len(checked):
        low = min(checked["measured_ms"].min(), checked["table_ms"].min())
        high = max(checked["measured_ms"].max(), checked["table_ms"].max())
        ax.plot([low, high], [low, high], linestyle="--", color="grey", label="equal")
        ax.legend(loc="upper left")
        error = checked["error_pct"].abs().mean()
        ax.set_title(f"latency table vs measured on {device}\nmean |error| {error:.1f}% over {len(checked)} networks")
    ax.set(xlabel="measured end to end (ms)", ylabel="sum of the table's blocks (ms)")
    ax.grid(alpha=0.3)
    return _save(fig, path)

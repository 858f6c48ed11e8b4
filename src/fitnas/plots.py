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


def pareto(table: pd.DataFrame, front: pd.DataFrame, chosen: pd.Series, path: Path, budget_flops: float | None) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(table["flops_M"], table["predicted_acc"], s=4, alpha=0.25, color="grey", label="all distinct networks")
    ax.plot(front["flops_M"], front["predicted_acc"], marker="o", markersize=3, color="tab:blue", label="Pareto front")
    ax.scatter([chosen["flops_M"]], [chosen["predicted_acc"]], s=160, marker="*", color="tab:red", zorder=5, label="chosen")
    if budget_flops is not None:
        ax.axvline(budget_flops, linestyle="--", color="tab:red", alpha=0.6, label=f"budget {budget_flops} MFLOPs")
    ax.set(xlabel="FLOPs (M multiply-accumulates)", ylabel="predicted accuracy", title="Predicted accuracy vs FLOPs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def rank_check(table: pd.DataFrame, report: dict[str, float], titles: dict[str, str], path: Path) -> Path:
    """One panel per ranker (a column of table, named in titles) against stand-alone accuracy."""
    fig, axes = plt.subplots(2, 2, figsize=(8.5, 7.5))
    for ax, (column, title) in zip(axes.flat, titles.items()):
        ax.scatter(table[column], table["standalone_acc"], s=16, alpha=0.75)
        tau, low, high = (report[f"{column}.kendall_tau{end}"] for end in ("", "_low", "_high"))
        ax.set(title=f"{title}\nKendall tau {tau:.2f}  (95% CI {low:.2f} to {high:.2f})", xlabel=column,
               ylabel="stand-alone accuracy (validation)")
        ax.grid(alpha=0.3)
    return _save(fig, path)

"""The experiments side by side: `dvc exp show`'s rows, cut down to the headline columns and the params that differ.

`dvc exp show` lists every param, metric and dependency of every stage (over 200 columns
here), and DVC has no setting for which to show. `fitnas experiments` reads the same
data (`dvc exp show --json`) and keeps what a person compares runs by: test accuracy,
FLOPs, params, latency, the fit's and the rank check's Kendall tau, and every param whose
value is not the same in all rows, so the change that made an experiment is beside its result.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd

# (metrics file, key, column): the headline, in this order; a column no row has is left out.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("metrics/final.json", "test_acc", "test_acc"),
    ("metrics/final.json", "flops_M", "flops_M"),
    ("metrics/final.json", "params_M", "params_M"),
    ("metrics/final.json", "latency_ms", "latency_ms"),
    ("metrics/final.json", "measured_torch_ms", "torch_ms"),
    ("metrics/final.json", "measured_onnx_ms", "onnx_ms"),
    ("metrics/fit.json", "{kind}.kendall_tau", "fit_tau"),
    ("metrics/fit.json", "multifidelity.cv_kendall_tau", "fusion_cv_tau"),
    ("metrics/rankcheck.json", "predicted_acc.kendall_tau", "truth_tau"),
)
PARAMS_FILE = "params.yaml"


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: json.dumps(tree) if isinstance(tree, list) else tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _rows(entries: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, data) of the workspace, each baseline commit and each experiment on it, in `dvc exp show`'s order."""
    for entry in entries:
        data = entry.get("data") or {}
        rev = entry.get("rev", "")
        yield (entry.get("name") or (rev if rev == "workspace" else rev[:7])), data
        for experiment in entry.get("experiments") or []:
            for run in experiment.get("revs") or []:
                name = run.get("name") or experiment.get("name")
                yield f"{run.get('rev', '')[:7]} [{name}]" if name else run.get("rev", "")[:7], run.get("data") or {}


def _file_data(section: dict[str, Any], path: str) -> dict[str, Any]:
    return _flat(((section or {}).get(path) or {}).get("data") or {})


def headline(entries: list[dict[str, Any]], predictor_kind: str) -> pd.DataFrame:
    """One row per experiment of `dvc exp show --json`: its headline metrics and the params that differ between rows."""
    records, params = [], []
    for label, data in _rows(entries):
        timestamp = data.get("timestamp")
        created = datetime.datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "-"
        record = {"Experiment": label, "Created": created}
        for path, key, column in HEADLINE:
            record[column] = _file_data(data.get("metrics"), path).get(key.format(kind=predictor_kind))
        records.append(record)
        params.append(_file_data(data.get("params"), PARAMS_FILE))
    table = pd.DataFrame(records, columns=["Experiment", "Created", *(column for _, _, column in HEADLINE)])
    table = table.dropna(axis="columns", how="all")
    settings = pd.DataFrame(params, index=table.index)
    changed = [name for name in settings.columns if settings[name].astype(str).nunique(dropna=False) > 1]
    return pd.concat([table, settings[changed]], axis="columns")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown, a missing value shown as `-` (as `dvc exp show --md` does)."""
    cells = [[_cell(v) for v in row] for row in table.itertuples(index=False)]
    header = [str(c) for c in table.columns]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in cells)])


def dvc_experiments(options: Iterable[str] = ()) -> list[dict[str, Any]]:
    """`dvc exp show --json` of the project in the current folder (with `options`, e.g. --all-commits).

    Raises RuntimeError with DVC's last line when it fails (not a DVC project, no commit yet).
    """
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", *options]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"`dvc exp show` failed ({reason}); run it from the project folder (the one with dvc.yaml)")
    return json.loads(result.stdout or "[]")

"""Check fitnas's notion of "the same network" against NAS-Bench-201's trained accuracies.

Cells that fitnas maps to one canonical form should train to the same accuracy up to seed noise;
random pairs should not. Also checks the FLOPs counter on all 15,625 cells.

    python bench/nb201_classes.py ../shared/data/nb201/cifar10.csv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fitnas.spaces import nb201

CIFAR = nb201.NetworkShape(channels=16, cells=5, in_channels=3, num_classes=10)


def main(table_path: str, out_dir: str = "bench/results") -> dict:
    table = pd.read_csv(table_path)
    table["canonical"] = [nb201.to_str(nb201.canonical(nb201.parse(a))) for a in table.arch_str]
    groups = table.groupby("canonical").test_acc_200ep
    sizes, spread = groups.size(), groups.max() - groups.min()
    shared = spread[sizes > 1]
    rng = np.random.default_rng(0)
    a, b = rng.choice(table.test_acc_200ep.to_numpy(), (2, 5000))
    benchmark_costs = nb201.cost_model(CIFAR, 32, elementwise=True)
    macs = nb201.cost_model(CIFAR, 32)
    archs = [nb201.parse(s) for s in table.arch_str]
    flops_err = np.abs(np.array([benchmark_costs.flops(x) for x in archs]) - table.flops_M.to_numpy())
    params_err = np.abs(np.array([macs.params(x) for x in archs]) - table.params_M.to_numpy())
    report = {
        "cells": len(table),
        "distinct_networks": int(len(sizes)),
        "classes_with_several_cells": int(len(shared)),
        "within_class_acc_range_median": float(shared.median()),
        "within_class_acc_range_p90": float(shared.quantile(0.9)),
        "within_class_acc_range_max": float(shared.max()),
        "random_pair_acc_diff_median": float(np.median(np.abs(a - b))),
        "flops_benchmark_convention_max_abs_error_M": float(flops_err.max()),
        "params_max_abs_error_M": float(params_err.max()),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, "nb201_classes.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key:45s} {value:.4f}" if isinstance(value, float) else f"{key:45s} {value}")
    return report


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Stacks that mix two fine-tuning recipes: components from two dumps of the same splits.

    python bench/multifidelity_combos.py DUMP_HINGE1 bench/results/multifidelity.cache ../shared/data/nb201/cifar10.csv

DUMP_HINGE1 is what `bench/multifidelity_variants.py hinge1.0 ... DUMP` saved; the second folder the
default benchmark's dumps (hinge 0.25). Folds depend only on the seed and the K cells, so the
out-of-fold columns of the two line up.
"""
import glob
import sys

import numpy as np
import pandas as pd

from fitnas.metrics import kendall_tau
from fitnas.predictors.multifidelity import simplex_weights, _ranks01
if len(sys.argv) != 4:
    sys.exit(__doc__)
truth = pd.read_csv(sys.argv[3]).test_acc_200ep.to_numpy(float)
res = {}
for f in sorted(glob.glob(sys.argv[1] + "/k*_*.npz")):
    tail = f.split("/")[-1]
    a, b = np.load(f), np.load(sys.argv[2] + "/" + tail)
    seed, k = map(int, tail[1:-4].split("_"))
    assert (a["y"] == b["y"]).all()
    na, nb = list(a["names"]), list(b["names"])
    comp = {}
    for src, names, tag in ((a, na, "h1"), (b, nb, "h025")):
        for i, n in enumerate(names):
            comp[f"{n}@{tag}"] = (src["oof"][:, i], src["cells"][:, i])
    y = a["y"]
    def run(ns):
        X = np.column_stack([comp[n][0] for n in ns])
        w = simplex_weights(X, y)[0] if len(ns) > 1 else np.ones(1)
        return kendall_tau(sum(wi * comp[n][1] for n, wi in zip(ns, w)), truth)
    def fixed(ws):
        return kendall_tau(sum(wi * comp[n][1] for n, wi in ws.items()), truth)
    H1, A1, H0, A0 = "val12:head@h1", "val12:all@h1", "val12:head@h025", "val12:all@h025"
    T, P, F, S = "truth@h025", "params@h025", "flops@h025", "synflow@h025"
    r = {
        "mf_h1head": run([H1, A0, T, P, F, S]),
        "finetune_h1head": run([H1, A0]),
        "mix_h1head": fixed({H1: .5, A0: .5}),
        "stacknofree_h1head": run([H1, A0, T]),
        "mf_h1head_params": run([H1, A0, T, P]),
        "mf_h1both": run([H1, A1, T, P, F, S]),
        "mf_h025": run([H0, A0, T, P, F, S]),
        "mf_4experts": run([H1, A1, H0, A0, P, F, S]),
    }
    print(seed, k, " ".join(f"{m} {v:.3f}" for m, v in r.items()), flush=True)
    for m, v in r.items():
        res.setdefault((k, m), []).append(v)
for (k, m), v in sorted(res.items()):
    print(f"{k:4d} {m:22s} {np.mean(v):.3f} ± {np.std(v):.3f} n={len(v)}")

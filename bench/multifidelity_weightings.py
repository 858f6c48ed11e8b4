"""Other weightings of the multi-fidelity fusion's components, from the fits the benchmark saved.

`bench/multifidelity.py` saves, for every (seed, K), each component's out-of-fold values on the
K truths and its quantiles on every cell (DIR/multifidelity.cache/k{seed}_{K}.npz). This re-weighs
them without re-fitting anything: a fixed equal mix of the head and all fine-tunings, the mix as one
column stacked with the free signals or params, weights averaged over 20 bootstrap resamples
of the K truths ("bag20"), and non-negative least squares of the truths' ranks on the components'
out-of-fold ranks ("nnls", Breiman's stacked regression, instead of the grid's best Kendall tau),
"auto", the mix unless the stack, its weights chosen inside the cross-validation (nested), ranks
the truths better, and "mix_or_free", the same with the mix stacked with the free signals only.
Every weight is still chosen on the K truths only. Re-weighing is exact: the "multifidelity" row
recomputed here equals the benchmark's.

    python bench/multifidelity_weightings.py bench/results/multifidelity.cache ../shared/data/nb201/cifar10.csv
"""
from __future__ import annotations

import glob
import sys

import numpy as np
import pandas as pd

from fitnas.metrics import kendall_tau
from fitnas.predictors.base import RankNormalizer
from fitnas.predictors.multifidelity import MultiFidelityPredictor, _ranks01, simplex_weights
from fitnas.spaces import nb201

HEAD, ALL, TRUTH = "val12:head", "val12:all", "truth"


def bagged(cols: np.ndarray, y: np.ndarray, bags: int, seed: int) -> np.ndarray:
    """The stack's weights averaged over `bags` bootstrap resamples of the truths."""
    rng = np.random.default_rng(seed)
    return np.mean([simplex_weights(cols[idx], y[idx])[0]
                    for idx in (rng.integers(0, len(y), len(y)) for _ in range(bags))], axis=0)


def nnls_weights(cols: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights >= 0 (summing to 1) of the columns' ranks, least squares against y's ranks, with an intercept."""
    from scipy.optimize import nnls

    ranks = np.column_stack([_ranks01(c) for c in cols.T])
    w = nnls(np.column_stack([ranks, np.ones(len(y))]), _ranks01(y))[0][:-1]
    if w.sum() <= 0:  # nothing agrees with y: the best column alone
        w = np.eye(len(w))[int(np.argmax([kendall_tau(r, y) for r in ranks.T]))]
    return w / w.sum()


def nested_kendall_tau(columns: np.ndarray, y: np.ndarray, fold: np.ndarray) -> float:
    """Kendall tau of the stack when its weights never see the truths they are judged on.

    `columns` are out-of-fold values [n, components]. For each fold the weights are chosen
    (`simplex_weights`) on the other folds' values and applied to this fold's ranks; the pieces, put
    together, are judged against y. The grid's best tau on all n values is a maximum over the grid,
    an optimistic figure; this one is not, so it can be set against a fusion that chooses nothing.
    """
    ranks = np.column_stack([_ranks01(c) for c in columns.T])
    out = np.zeros(len(y))
    for f in np.unique(fold):
        train, held = fold != f, fold == f
        if train.sum() < 2:
            return -np.inf
        w, _ = simplex_weights(columns[train], y[train])
        out[held] = ranks[held] @ w
    return float(kendall_tau(out, y))


def weigh(path: str, truth: np.ndarray, keys: list) -> tuple[tuple[int, int], dict[str, float]]:
    """(seed, K) of one saved fit and the Kendall tau over every cell of each weighting of it."""
    d = np.load(path)
    names = list(d["names"])
    oof, cells, y = d["oof"], d["cells"], d["y"]
    seed, k = map(int, path.split("/k")[-1][:-4].split("_"))
    col = {n: i for i, n in enumerate(names)}
    free = [n for n in names if n not in (HEAD, ALL, TRUTH)]

    normalizer = RankNormalizer().fit(y)

    def score(weights):  # what MultiFidelityPredictor.query_with returns: back on the truths' scale
        total = sum(w * cells[:, col[n]] for n, w in weights.items() if w) / sum(weights.values())
        return kendall_tau(normalizer.inverse(total), truth)

    def cv(ns, bags=0):
        X = oof[:, [col[n] for n in ns]]
        return dict(zip(ns, bagged(X, y, bags, seed) if bags else simplex_weights(X, y)[0]))

    # the mix as one column: the rank average of the head and all fine-tunings
    oof_mix = (_ranks01(oof[:, col[HEAD]]) + _ranks01(oof[:, col[ALL]])) / 2

    def cv_mix(ns, bags=0):
        X = np.column_stack([oof_mix] + [oof[:, col[n]] for n in ns])
        w = bagged(X, y, bags, seed) if bags else simplex_weights(X, y)[0]
        return {HEAD: w[0] / 2, ALL: w[0] / 2, **dict(zip(ns, w[1:]))}

    # "auto": the mix or the stack, the stack's weights chosen inside the
    # cross-validation (nested), so its tau is as honest as the mix's, which chooses nothing.
    fold = MultiFidelityPredictor(nb201, seed=seed)._fold_ids([keys[i] for i in d["k_idx"]])  # the fit's own folds
    mix_tau = kendall_tau(oof_mix, y)
    auto = cv(names) if nested_kendall_tau(oof, y, fold) > mix_tau else {HEAD: .5, ALL: .5}
    # "mix_or_free": the same choice between the mix and the mix stacked with the free signals only
    with_free = np.column_stack([oof_mix] + [oof[:, col[n]] for n in free])
    mix_or_free = cv_mix(free) if nested_kendall_tau(with_free, y, fold) > mix_tau else {HEAD: .5, ALL: .5}

    return (seed, k), {
        "multifidelity": score(cv(names)),  # the benchmark's own row, recomputed: a check
        "auto": score(auto),
        "mix_or_free": score(mix_or_free),
        "finetune": score(cv([HEAD, ALL])),
        "mix": score({HEAD: .5, ALL: .5}),
        "mix_truth_free": score(cv_mix([TRUTH] + free)),
        "mix_free": score(cv_mix(free)),
        "mix_params": score(cv_mix(["params"])),
        "mf_bag20": score(cv(names, 20)),
        "mix_truth_free_bag20": score(cv_mix([TRUTH] + free, 20)),
        "mix_free_bag20": score(cv_mix(free, 20)),
        "finetune_bag20": score(cv([HEAD, ALL], 20)),
        "nnls": score(dict(zip(names, nnls_weights(oof, y)))),
    }


def main(argv: list[str]) -> dict[tuple[int, int], dict[str, float]]:
    if len(argv) != 2:
        sys.exit(__doc__)
    table = pd.read_csv(argv[1])
    truth = table.test_acc_200ep.to_numpy(float)
    keys = [nb201.canonical(nb201.parse(a)) for a in table.arch_str]
    results = dict(weigh(f, truth, keys) for f in sorted(glob.glob(argv[0] + "/k*_*.npz")))
    for (seed, k), taus in sorted(results.items()):
        print(seed, k, " ".join(f"{m} {v:.3f}" for m, v in taus.items()), flush=True)
    print()
    for k in sorted({k for _, k in results}):
        for m in next(iter(results.values())):
            v = [taus[m] for (s, kk), taus in results.items() if kk == k]
            print(f"{k:4d} {m:24s} {np.mean(v):.3f} ± {np.std(v):.3f} n={len(v)}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

"""Prototype: the multi-fidelity fit with another fine-tuning recipe, on the benchmark's splits.

Reads the low-fidelity GCNs a run of bench/multifidelity.py cached (OUT/multifidelity.cache/low{seed}.pt)
and fits the predictor again per seed and K with VARIANT: `hinge1.0` (the fine-tunings' pairwise hinge
weight 1.0 instead of the pipeline's 0.25; the truth-only network keeps 0.25), `members6` (six
fine-tuned members, two per pre-trained network; `members3` is the default fit) or `cvmembers3` (the
cross-validation's out-of-fold values from three members per fold, as many as the final fit averages,
instead of one) or `rehearseL` (the every-weight fine-tuning keeps fitting the low fidelity through a second
readout head, weighted L against the truths: rehearsal against forgetting what the 1,000 cells taught;
`rehearseL@LR` at another learning rate). With DUMP it saves the components as the benchmark does, for
bench/multifidelity_weightings.py. SEEDS (environment, default 0,1,2,3,4) picks the seeds; a seed
whose low-fidelity GCN is not in the cache is pre-trained first, as the benchmark does.

    python bench/multifidelity_variants.py hinge1.0 10,25,50,156 bench/results [DUMP]
    SEEDS=5,6,7,8,9 python bench/multifidelity_variants.py cvmembers3 10,25,50,156 /tmp/mfdev
"""
import os, sys, time
import numpy as np, pandas as pd, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import multifidelity as B
from fitnas.predictors.multifidelity import MultiFidelityPredictor, TRUTH
from fitnas.predictors.base import ranking_loss
from fitnas.predictors import load_gcn
from fitnas.config import Predictor as PS
from fitnas.spaces import nb201

if len(sys.argv) < 4 or not sys.argv[1].startswith(("hinge", "members", "cvmembers", "rehearse")):
    sys.exit(__doc__)
variant, ks, out = sys.argv[1], [int(k) for k in sys.argv[2].split(",")], sys.argv[3]
torch.set_num_threads(1)
cfg = {"settings": PS().model_dump(), "low_n": 1000, "quick_epochs": None, "synflow_shape": [16, 1, 8]}
B._load(sys.argv[5] if len(sys.argv) > 5 else "../shared/data/nb201/cifar10.csv", cfg)
W = B._W
synflow = B.read_synflow(B.Path(out) / "multifidelity.synflow.csv", [16, 1, 8])

def features(model, graphs):
    """GCNModel.forward up to its head: the readout's inputs."""
    mask = graphs.mask.unsqueeze(-1)
    x = model.embed(graphs.x) * mask
    for layer in model.layers:
        x = layer(x, graphs.adj, graphs.mask)
    mean = x.sum(1) / mask.sum(1)
    return torch.cat([mean, x[torch.arange(len(x)), graphs.output], graphs.paths], dim=1)

class V(MultiFidelityPredictor):
    tune_hinge = None
    cv_members = 1
    rehearse = 0.0  # weight of the low-fidelity loss while every weight fine-tunes
    low_graphs = low_targets = None
    def _start(self, name, member):
        if name == TRUTH:
            return super()._start(name, member)
        import copy
        sig, _ = self._split(name)
        ms = self.experts[sig].models
        return copy.deepcopy(ms[member % len(ms)]).to(self.device)
    def _train(self, name, member, graphs, targets, checkpoints, probe=None):
        if probe is not None and self.cv_members > 1:  # out of fold: the mean of cv_members members
            runs = [self._train_one(name, m, graphs, targets, checkpoints, probe) for m in range(self.cv_members)]
            return runs[0][0], [sum(outs) / len(runs) for outs in zip(*(r[1] for r in runs))]
        return self._train_one(name, member, graphs, targets, checkpoints, probe)
    def _train_one(self, name, member, graphs, targets, checkpoints, probe=None):
        if self.rehearse and name != TRUTH and self._split(name)[1] == "all":
            return self._train_rehearse(name, member, graphs, targets, checkpoints, probe)
        if self.tune_hinge is None or name == TRUTH:
            return super()._train(name, member, graphs, targets, checkpoints, probe)
        old = self.gcn["hinge_weight"]; self.gcn["hinge_weight"] = self.tune_hinge
        try:
            return super()._train(name, member, graphs, targets, checkpoints, probe)
        finally:
            self.gcn["hinge_weight"] = old

    def _train_rehearse(self, name, member, graphs, targets, checkpoints, probe=None):
        import copy
        model = self._start(name, member)
        low_head = copy.deepcopy(model.head)  # the expert's own readout keeps predicting the low fidelity
        params = list(model.parameters()) + list(low_head.parameters())
        opt = torch.optim.Adam(params, lr=self.tune_lr["all"], weight_decay=self.gcn["weight_decay"])
        shuffle = torch.Generator().manual_seed(self.seed * 1000 + member)
        outputs, batch, h = [], self.gcn["batch_size"], self.gcn["hinge_weight"]
        for epoch in range(1, max(checkpoints) + 1):
            model.train(); low_head.train()
            order = torch.randperm(len(targets), generator=shuffle)
            for start in range(0, len(targets), batch):
                chosen = order[start:start + batch]
                rehearsed = torch.randint(len(self.low_targets), (batch,), generator=shuffle)
                loss = ranking_loss(model(graphs[chosen]), targets[chosen], h)
                low_out = low_head(features(model, self.low_graphs[rehearsed])).squeeze(-1)
                loss = loss + self.rehearse * ranking_loss(low_out, self.low_targets[rehearsed], h)
                opt.zero_grad(); loss.backward(); opt.step()
            if probe is not None and epoch in checkpoints:
                model.eval()
                with torch.no_grad():
                    outputs.append(model(probe).numpy())
        model.eval()
        return model, outputs

res = {}
seeds = [int(s) for s in os.environ.get("SEEDS", "0,1,2,3,4").split(",")]
for seed in seeds:
    cache = B.Path(f"{out}/multifidelity.cache/low{seed}.pt")
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        t = time.time()
        low_row = B._task_low(seed, str(cache))
        print(variant, seed, f"pre-trained gcn_low tau {low_row['kendall_tau']:.3f} in {time.time() - t:.0f}s", flush=True)
    for k in ks:
        low_idx, k_idx = B.split(len(W["archs"]), 1000, k, seed)
        archs, truth = W["archs"], W["truth"]
        expert = load_gcn(torch.load(cache, weights_only=True), nb201)
        opts = B.mf_options(W["settings"], None)
        if variant.startswith("members"):
            opts["ensemble"] = int(variant[7:])
        mf = V(nb201, seed=seed, keep_all=True, **opts)
        if variant.startswith("hinge"):
            mf.tune_hinge = float(variant[5:])
        if variant.startswith("cvmembers"):
            mf.cv_members = int(variant[9:])
        low = (list(archs[i] for i in low_idx), W["low"][low_idx])
        if variant.startswith("rehearse"):
            from fitnas.predictors.base import RankNormalizer
            weight, _, lr = variant[8:].partition("@")
            mf.rehearse = float(weight)
            if lr:
                mf.tune_lr["all"] = float(lr)
            mf.low_graphs = mf._graphs([nb201.canonical(a) for a in low[0]])
            mf.low_targets = torch.tensor(RankNormalizer().fit(low[1]).transform(low[1]), dtype=torch.float32)
        mf.use_expert(B.LOW, expert, *low)
        free = {"params": W["params_fn"], "flops": W["flops_fn"],
                "synflow": lambda a: synflow[nb201.to_str(nb201.canonical(a))]}
        t = time.time()
        mf.fit([archs[i] for i in k_idx], truth[k_idx], low={B.LOW: low}, free=free)
        H, A = "val12:head", "val12:all"
        r = {"head": {H: 1.0}, "all": {A: 1.0}, "mix": {H: .5, A: .5},
             "finetune": mf.choose_weights([H, A]), "mf": dict(zip(mf.components, mf.weights)),
             "mix_params": None}
        # mix_params: the mix as one column, weighed against params by CV
        from fitnas.predictors.multifidelity import _ranks01, simplex_weights
        col = np.column_stack([(_ranks01(mf.oof[H]) + _ranks01(mf.oof[A])) / 2, mf.oof["params"]])
        w, _ = simplex_weights(col, truth[k_idx])
        r["mix_params"] = {H: w[0] / 2, A: w[0] / 2, "params": w[1]}
        if len(sys.argv) > 4:
            keys = [nb201.canonical(a) for a in archs]
            from fitnas.predictors.multifidelity import _quantile_map
            np.savez_compressed(f"{sys.argv[4]}/k{seed}_{k}.npz", k_idx=k_idx, y=truth[k_idx], names=np.array(mf.components),
                oof=np.column_stack([mf.oof[n] for n in mf.components]),
                cells=np.column_stack([_quantile_map(mf.references[n], mf._component(n, keys)) for n in mf.components]))
        taus = {m: B.kendall_tau(mf.query_with(wt, archs), truth) for m, wt in r.items()}
        print(variant, seed, k, f"{time.time()-t:.0f}s", " ".join(f"{m} {v:.3f}" for m, v in taus.items()), flush=True)
        for m, v in taus.items():
            res.setdefault((m, k), []).append(v)
for (m, k), v in sorted(res.items(), key=lambda x: (x[0][1], x[0][0])):
    print(f"SUMMARY {variant} {k:4d} {m:12s} {np.mean(v):.3f} ± {np.std(v):.3f}")

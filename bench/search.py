"""Search benchmark on the paper's large space: progressive segment search vs evolution, same budgets.

The space is the ImageNet profile's (profiles/mobilenet-imagenet.yaml): 21
layers, 7 choices (6 where a stage starts), ~2.2e15 networks (the paper's
"7^21"), costs counted at 224x224. Every method searches the same fitted graph
network (the pipeline's default predictor settings) under the same hardware
budgets, on one CPU thread as the search stage runs:

* progressive: the search stage's default (segments of 7, 6 super-cells, 2 contexts);
* evolution: Once-for-All's settings (population 100, 100 generations), and a
  longer run (500 generations), over several seeds;
* random: as many feasible random networks as evolution scores, the floor.

The graph network is fitted on 300 architectures whose score a hidden "teacher"
gives: a per-layer effect, neighbouring-layer interactions, a FLOPs term and
noise. Each method's best network is reported with its predicted score (what
the search optimises) and its teacher score (how good it really is, here
known). With `--predictor models/predictor.pt --profile params.yaml` it searches
the pipeline's own fitted predictor instead (no teacher then).

    python bench/search.py            # ~10 min on 2 CPU cores
    python bench/search.py --quick    # one budget, one seed: ~2 min

Writes bench/results/search.json and search.md (--quick: search-quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

from fitnas import chainsearch, checkpoints, config, predictors, spaces
from fitnas.config import Predictor as PredictorSettings
from fitnas.pathscore import PathGCN
from fitnas.predictors import from_settings, gcn_state, load_gcn
from fitnas.search import Budget

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


class Teacher:
    """A hidden score over the space: per-layer effects, neighbour interactions, a FLOPs term."""

    def __init__(self, space, flops, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.space, self.flops = space, flops
        ops = len(space.OPS)
        self.unary = rng.normal(0, 1.0, (space.num_layers, ops))
        self.pair = rng.normal(0, 0.5, (space.num_layers - 1, ops, ops))
        self.flops_weight = 6.0

    def __call__(self, archs: np.ndarray) -> np.ndarray:
        archs = np.asarray(archs)
        layers = np.arange(archs.shape[1])
        value = self.unary[layers, archs].sum(1)
        value += self.pair[layers[:-1], archs[:, :-1], archs[:, 1:]].sum(1)
        return value + self.flops_weight * np.log(self.flops.batch(archs))


def fitted_scorer(space, tables, samples: int, seed: int, cache: Path | None = None, settings: PredictorSettings | None = None):
    """The GCN fitted on teacher scores (loaded from `cache` when it holds one, saved there otherwise).

    settings: the profile's `predictor` section (the ImageNet profile's are the pipeline's defaults).
    """
    teacher = Teacher(space, tables["flops"], seed)
    if cache is not None and cache.is_file():
        print(f"bench: GCN from {cache}", flush=True)
        return PathGCN(load_gcn(checkpoints.load(cache, "bench", weights="members"), space), space), teacher
    rng = random.Random(seed)
    archs = space.sample(samples, rng)
    noise = np.random.default_rng(seed).normal(0, 1.0, samples)
    y = teacher(np.array(archs)) + noise
    settings = settings or PredictorSettings()
    start = time.time()
    predictor = from_settings("gcn", settings, space, lambda a: 0.0, seed).fit(archs, y)
    print(f"bench: GCN fitted on {samples} teacher-scored networks in {time.time() - start:.0f}s "
          f"({predictor.fitted_epochs} epochs, ensemble {settings.ensemble})", flush=True)
    if cache is not None:
        torch.save(gcn_state(predictor), cache)
    return PathGCN(predictor, space), teacher


def run_method(name: str, space, scorer, tables, budget: Budget, seed: int, search, teacher) -> dict:
    if name == "progressive":
        result = chainsearch.progressive(space, scorer, tables, budget, search.segment, search.super_cells,
                                         search.contexts, seed)
    elif name.startswith("evolution"):
        generations = int(name.split("-")[1]) if "-" in name else search.evolution.generations
        e = search.evolution
        result = chainsearch.evolution(space, scorer, tables, budget, e.population, generations, e.parents,
                                       e.mutation_prob, e.mutation_share, seed)
    else:  # random: as many feasible networks as evolution scores
        start, before = time.time(), scorer.evaluations
        e = search.evolution
        count = e.population + e.generations * (e.population - max(2, round(e.parents * e.population)))
        sampler = chainsearch._Sampler(space, tables, budget.limits(), np.random.default_rng(seed))
        archs = sampler.constrained(sampler.random, count)
        result = chainsearch.SearchResult(chainsearch._frame(space, archs, scorer.score(archs), scorer, tables),
                                          time.time() - start, scorer.evaluations - before, "random")
    best = result.candidates.iloc[0]
    row = {
        "method": name,
        "budget": budget.describe(),
        "seed": seed,
        "seconds": result.seconds,
        "evaluations": result.evaluations,
        "predicted": float(best.score),
        "flops_M": float(best.flops_M),
        "params_M": float(best.params_M),
        "arch": best.arch,
    }
    if teacher is not None:
        row["teacher"] = float(teacher(np.array([space.parse(best.arch)]))[0])
    print(f"bench: {name:>14} {row['budget']:>32} seed {seed}: {row['seconds']:6.1f}s  {row['evaluations']:>10,} scored  "
          f"predicted {row['predicted']:.4f}  {row['flops_M']:.1f} MFLOPs"
          + (f"  teacher {row['teacher']:.2f}" if teacher is not None else ""), flush=True)
    return row


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["budget"], r["method"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for budget, method in keys:
        group = [r for r in rows if r["budget"] == budget and r["method"] == method]
        entry = {"budget": budget, "method": method, "runs": len(group)}
        for field in ("seconds", "evaluations", "predicted", "teacher", "flops_M"):
            values = [r[field] for r in group if field in r]
            if values:
                entry[field] = float(np.mean(values))
                entry[f"{field}_std"] = float(np.std(values))
        out.append(entry)
    return out


def markdown(summary: list[dict], meta: dict) -> str:
    lines = [
        f"# Search benchmark ({meta['date']})",
        "",
        f"Space: {meta['space']}; predictor: {meta['predictor']}; {meta['machine']}.",
        "",
        "| budget | method | runs | time (s) | networks scored | best predicted | best teacher | MFLOPs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in summary:
        teacher = f"{e['teacher']:.2f} ± {e['teacher_std']:.2f}" if "teacher" in e else "-"
        lines.append(
            f"| {e['budget']} | {e['method']} | {e['runs']} | {e['seconds']:.1f} | {e['evaluations']:,.0f} | "
            f"{e['predicted']:.4f} ± {e['predicted_std']:.4f} | {teacher} | {e['flops_M']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", "--params", dest="profile", default=str(ROOT / "profiles/mobilenet-imagenet.yaml"),
                        help="params file whose space to search")
    parser.add_argument("--predictor", help="a fitted predictor (models/predictor.pt) instead of the teacher-fitted one")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=300, help="teacher-scored networks the GCN is fitted on")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for evolution and random search")
    parser.add_argument("--quick", action="store_true", help="one budget, one seed, no long evolution")
    parser.add_argument("--cache", type=Path, help="keep the teacher-fitted GCN here and reuse it on the next run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for search.json/.md (--quick: search-quick.*)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # as the search stage runs
    p = config.load(args.profile)
    space = spaces.get(p.space)
    shape = space.network_shape(p.final, 3, 1000)
    tables = chainsearch.cost_tables(space.cost_model(shape, args.input_size))
    if args.predictor:
        scorer = predictors.scorer_for(predictors.load_file(Path(args.predictor), space, tables["params"]), space)
        teacher, predictor_note = None, args.predictor
    else:
        scorer, teacher = fitted_scorer(space, tables, args.samples, 0, args.cache, p.predictor)
        predictor_note = f"GCN (the profile's predictor settings) fitted on {args.samples} teacher-scored networks"

    budgets = [Budget(flops=400)] if args.quick else [Budget(flops=400), Budget(flops=250), Budget(flops=500, params=4.0)]
    methods = ["progressive", "evolution", "random"] + ([] if args.quick else ["evolution-500"])
    seeds = 1 if args.quick else args.seeds
    rows = []
    for budget in budgets:
        for method in methods:
            for seed in range(1 if method == "progressive" else seeds):
                rows.append(run_method(method, space, scorer, tables, budget, seed, p.search, teacher))
    summary = summarise(rows)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "space": f"{space.num_layers} layers, {len(space.OPS)} ops, {space.size:.3g} networks, costs at {args.input_size}x{args.input_size}",
        "predictor": predictor_note,
        "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch threads 1, "
                   f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared)",
        "search_settings": p.search.model_dump(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "search-quick" if args.quick else "search"  # a quick look never overwrites the full study
    report = {"meta": meta, "summary": summary, "runs": rows}
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))
    return report


if __name__ == "__main__":
    main()

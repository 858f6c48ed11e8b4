"""Between sample and fit: train a few sampled networks alone (anchors), the real evidence the fit fuses with the cheap scores.

The first `anchors.n` connected samples are trained from scratch with the rank check's recipe
(`rankcheck.*`: the truth's, so the fit learns the accuracy every ranking is judged on), `anchors.seeds`
times each, at the supernet's shape. Every training goes into the committed truth table
(results/truth.csv) under the recipe's key, so a fresh clone trains none of them again. Under
torchrun the trainings are shared out across the ranks, as the rank check's are. With `anchors.n: 0`
the stage writes an empty table and the fit stays the supernet-only fit of the paper.
"""

import time

import pandas as pd

from fitnas import config, distributed, spaces
from fitnas.data.splits import load_split
from fitnas.pipeline import (
    ANCHORS, METRICS, SAMPLES, TRAIN, TRUTH_TABLE, VAL, friendly_errors, read_samples, start_stage, write_json,
)
from fitnas.rankcheck import TRUTH, pick_anchors, training_key, truth_results
from fitnas.tracking import stage_run
from fitnas.train import seed_everything


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    with distributed.session(p.distributed, p.device) as world:
        anchors(p, params_path, world)


def anchors(p: config.Params, params_path: str, world: distributed.World) -> None:
    cfg = p.anchors
    seed_everything(p.seed)
    space = spaces.get(p.space)
    start = time.time()
    picked = pick_anchors(space, list(read_samples(SAMPLES, space).arch), cfg.n) if cfg.n else []
    seeds = list(range(cfg.seeds))
    trained, had = pd.DataFrame(columns=["arch", "seed", TRUTH, "train_seconds"]), 0
    if picked:
        train_split, val_split = load_split(TRAIN), load_split(VAL)
        shape = space.network_shape(p.supernet, train_split.images.shape[1], len(train_split.classes))
        key = training_key(p, shape, space, [TRAIN, VAL])
        trained, had = truth_results(p, space, shape, picked, world.device, TRUTH_TABLE, train_split, val_split,
                                     key, world, seeds=seeds, label="anchors")
    if not world.is_main:
        return

    accuracy = trained.groupby("arch", sort=False)[TRUTH].mean().reindex(picked)
    table = pd.DataFrame({"arch": picked, "accuracy": accuracy.to_numpy(dtype=float)})
    ANCHORS.parent.mkdir(parents=True, exist_ok=True)
    tmp = ANCHORS.with_name(ANCHORS.name + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(ANCHORS)
    seconds = time.time() - start
    summary = {
        "anchors": len(table), "seeds": cfg.seeds, "trainings": len(trained), "from_table": had,
        "seconds": seconds, "processes": world.size, "threads": p.threads,
        **({"seconds_per_training": float(trained.train_seconds.mean()), "accuracy_min": float(table.accuracy.min()),
            "accuracy_max": float(table.accuracy.max())} if len(table) else {}),
    }
    write_json(METRICS / "anchors.json", summary)
    if len(table):
        print(f"anchors: {len(table)} networks trained alone ({len(trained) - had} now, {had} from {TRUTH_TABLE}), "
              f"accuracy {table.accuracy.min():.4f}-{table.accuracy.max():.4f}; the fit fuses them", flush=True)
    else:
        print("anchors: anchors.n is 0, none trained; the fit is the supernet-only fit", flush=True)
    with stage_run("anchors", p, params_path) as run:
        run.log_params({f"anchors.{k}": v for k, v in cfg.model_dump().items()})
        run.log_metrics(summary)
        run.log_artifact(ANCHORS)


if __name__ == "__main__":
    main()

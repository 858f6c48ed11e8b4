"""Stage 3: score n distinct sub-networks with weights inherited from the supernet.

Under torchrun the networks are shared out across the ranks and rank 0 gathers and writes the rows;
each network is scored exactly as a single process would score it.
"""

import random
import time

import pandas as pd

from fitnas import config, distributed, scoring, spaces, zerocost
from fitnas.data.splits import load_split
from fitnas.pipeline import METRICS, SAMPLES, SUPERNET, TRAIN, VAL, final_costs, friendly_errors, start_stage, write_json
from fitnas.tracking import stage_run
from fitnas.train import progress, seed_everything


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    with distributed.session(p.distributed, p.device) as world:
        sample(p, params_path, world)


def sample(p: config.Params, params_path: str, world: distributed.World) -> None:
    cfg = p.sample
    seed_everything(p.seed)
    space = spaces.get(p.space)
    scorer = scoring.from_files(p, space, world.device, SUPERNET, TRAIN, VAL)
    costs = final_costs(p, space)
    # Zero-cost proxies at the supernet's shape: the networks the scores describe, untrained.
    inputs, targets = zerocost.proxy_batch(load_split(TRAIN), cfg.proxy_batch, p.seed, world.device)
    build = lambda arch: space.build(arch, scorer.shape).to(world.device)  # noqa: E731

    archs = space.sample(cfg.n, random.Random(p.seed + 2))
    mine = world.shard(list(enumerate(archs)))
    rows = []
    start = time.time()
    work = progress(mine, "scoring sub-networks", total=len(mine)) if world.is_main else mine
    for index, arch in work:
        loss, acc = scorer.score(arch, index)
        proxies = zerocost.score_archs([arch], build, inputs, targets, tuple(cfg.proxies), p.seed)
        rows.append(
            dict(index=index, arch=space.to_str(arch), supernet_acc=acc, supernet_loss=loss,
                 flops_M=round(costs.flops(arch), 6), params_M=round(costs.params(arch), 6),
                 **{name: float(values[0]) for name, values in proxies.items()})
        )
    gathered = world.gather(rows)
    if not world.is_main:
        return
    seconds = time.time() - start
    table = pd.DataFrame([row for part in gathered for row in part]).sort_values("index").drop(columns="index")
    table = table.reset_index(drop=True)
    SAMPLES.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(SAMPLES, index=False)
    summary = {
        "n": len(table),
        "processes": world.size,
        "threads": p.threads,  # torch's CPU threads: the scores depend on them
        "seconds": seconds,
        "seconds_per_arch": seconds / len(table),
        "supernet_acc_mean": float(table.supernet_acc.mean()),
        "supernet_acc_max": float(table.supernet_acc.max()),
    }
    write_json(METRICS / "sample.json", summary)
    print(f"sample: scored {len(table)} sub-networks in {seconds:.0f}s on {world.size} process(es); "
          f"best supernet acc {summary['supernet_acc_max']:.4f}")
    with stage_run("sample", p, params_path) as run:
        run.log_params({f"sample.{k}": v for k, v in cfg.model_dump().items()})
        run.log_metrics(summary)
        run.log_artifact(SAMPLES)


if __name__ == "__main__":
    main()

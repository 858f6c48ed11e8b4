"""Stage 3: score n distinct sub-networks with weights inherited from the supernet."""

import random
import time

import pandas as pd

from fitnas import config, spaces
from fitnas.pipeline import METRICS, SAMPLES, final_costs, friendly_errors, write_json
from fitnas.scoring import SupernetScorer
from fitnas.tracking import preflight, stage_run
from fitnas.train import pick_device, progress, seed_everything


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = config.load(params_path)
    preflight()  # MLflow unreachable: fail now, before any work
    cfg = p.sample
    seed_everything(p.seed)
    device = pick_device(p.device)
    space = spaces.get(p.space.name)
    scorer = SupernetScorer(p, space, device)
    costs = final_costs(p, space)

    archs = space.sample(cfg.n, random.Random(p.seed + 2))
    rows = []
    start = time.time()
    for arch in progress(archs, "scoring sub-networks"):
        loss, acc = scorer.score(arch)
        rows.append(
            dict(arch=space.to_str(arch), supernet_acc=acc, supernet_loss=loss, flops_M=round(costs.flops(arch), 6), params_M=round(costs.params(arch), 6))
        )
    seconds = time.time() - start
    table = pd.DataFrame(rows)
    SAMPLES.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(SAMPLES, index=False)
    summary = {
        "n": len(table),
        "seconds": seconds,
        "seconds_per_arch": seconds / len(table),
        "supernet_acc_mean": float(table.supernet_acc.mean()),
        "supernet_acc_max": float(table.supernet_acc.max()),
    }
    write_json(METRICS / "sample.json", summary)
    print(f"sample: scored {len(table)} sub-networks in {seconds:.0f}s; best supernet acc {summary['supernet_acc_max']:.4f}")
    with stage_run("sample", p, params_path) as run:
        run.log_params({f"sample.{k}": v for k, v in cfg.model_dump().items()})
        run.log_metrics(summary)
        run.log_artifact(SAMPLES)


if __name__ == "__main__":
    main()

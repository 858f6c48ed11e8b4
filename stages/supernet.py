"""Stage 2: train the weight-sharing supernet with uniform single-path sampling (SPOS)."""

import random
import time

import pandas as pd

from fitnas import config, data, plots, spaces
from fitnas.pipeline import METRICS, PLOTS, SUPERNET, TRAIN, VAL, friendly_errors, write_json
from fitnas.tracking import preflight, stage_run
from fitnas.train import (
    evaluate,
    pick_device,
    recalibrate_batchnorm,
    save_atomic,
    seed_everything,
    sgd_one_cycle,
    train_epoch,
)


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = config.load(params_path)
    preflight()  # MLflow unreachable: fail now, before any work
    cfg = p.supernet
    seed_everything(p.seed)
    device = pick_device(p.device)
    space = spaces.get(p.space.name)
    train, val = data.load_split(TRAIN), data.load_split(VAL)
    shape = space.NetworkShape(cfg.channels, cfg.cells, train.images.shape[1], len(train.classes))
    net = space.build_supernet(shape).to(device)
    batches = data.Batches(train, cfg.batch_size, shuffle=True, seed=p.seed, device=device)
    val_batches = data.Batches(data.subset(val, 2000, p.seed), 500, shuffle=False, seed=p.seed, device=device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))
    path_rng = random.Random(p.seed)
    # A few fixed networks followed through training: how well sub-networks inherit weights.
    probes = space.sample(3, random.Random(p.seed + 3))
    calibration = data.Batches(train, cfg.batch_size, shuffle=True, seed=p.seed + 1, device=device)

    def sample_path() -> None:
        # A fresh uniformly random cell every step: every op on every edge is trained equally.
        net.set_arch(space.random_cell(path_rng))

    history = []
    start = time.time()
    with stage_run("supernet", p, params_path) as run:
        run.log_params({f"supernet.{k}": v for k, v in cfg.model_dump().items()} | {"device": str(device)})
        for epoch in range(1, cfg.epochs + 1):
            train_loss, train_acc = train_epoch(
                net, batches, optimizer, scheduler, sample_path, desc=f"supernet epoch {epoch}/{cfg.epochs}"
            )
            val_loss, val_acc = _probe(net, probes, calibration, val_batches)
            row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc)
            history.append(row)
            print(
                f"supernet epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}"
                f" | sub-network val acc {val_acc:.4f}  ({time.time() - start:.0f}s)",
                flush=True,
            )
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            save_atomic(
                {
                    "space": space.NAME,
                    "shape": vars(shape),
                    "epoch": epoch,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
                SUPERNET,
            )
        frame = pd.DataFrame(history)
        METRICS.mkdir(exist_ok=True)
        frame.to_csv(METRICS / "supernet_history.csv", index=False)
        summary = {"epochs": cfg.epochs, "train_loss": train_loss, "train_acc": train_acc, "seconds": time.time() - start}
        write_json(METRICS / "supernet.json", summary)
        run.log_metrics({"supernet_seconds": summary["seconds"]})
        run.log_artifact(plots.training_curves(frame, PLOTS / "supernet_curves.png", "supernet"))


def _probe(net, probes, calibration, val_batches) -> tuple[float, float]:
    """Mean validation loss and accuracy of the probe networks, BatchNorm recalibrated as sample does."""
    scores = []
    for arch in probes:
        net.set_arch(arch)
        recalibrate_batchnorm(net, calibration, 2)
        scores.append(evaluate(net, val_batches))
    net.train()
    return sum(s[0] for s in scores) / len(scores), sum(s[1] for s in scores) / len(scores)


if __name__ == "__main__":
    main()

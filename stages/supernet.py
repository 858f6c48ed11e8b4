"""Stage 2: train the weight-sharing supernet with uniform single-path sampling (SPOS).

One process (`python stages/supernet.py`) or several under torchrun (README: Scaling out). A run that
is stopped (SIGTERM, Ctrl-C) or killed resumes from its last checkpoint when started again.
"""

import random
import time
from pathlib import Path

import pandas as pd

from fitnas import checkpoints, config, data, distributed, plots, spaces, train as train_module
from fitnas.pipeline import METRICS, PLOTS, SUPERNET, TRAIN, VAL, friendly_errors, start_stage, write_json
from fitnas.tracking import stage_run
from fitnas.train import (
    EpochState,
    StopRequest,
    evaluate,
    recalibrate_batchnorm,
    resumable_epoch,
    seed_everything,
    sgd_one_cycle,
    train_epoch,
)


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    with distributed.session(p.distributed, p.device) as world:
        train_supernet(p, params_path, world)


def resume_key(p: config.Params, space) -> str:
    """What the trained supernet depends on: its params, the data and the training code."""
    code = [Path(__file__), Path(train_module.__file__), Path(data.__file__), Path(distributed.__file__), spaces.source_file(space)]
    settings = {"seed": p.seed, "space": p.space.model_dump(), "supernet": p.supernet.model_dump()}
    return checkpoints.resume_key("supernet", settings, [TRAIN, VAL, *code])


def train_supernet(p: config.Params, params_path: str, world: distributed.World) -> None:
    cfg = p.supernet
    device = world.device
    seed_everything(p.seed)
    space = spaces.get(p.space)
    train, val = data.load_split(TRAIN), data.load_split(VAL)
    shape = space.network_shape(cfg, train.images.shape[1], len(train.classes))
    net = space.build_supernet(shape).to(device)
    batches = data.Batches(train, cfg.batch_size, shuffle=True, seed=p.seed, device=device)
    val_batches = data.Batches(data.subset(val, 2000, p.seed), 500, shuffle=False, seed=p.seed, device=device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))
    # A few fixed networks followed through training: how well sub-networks inherit weights.
    probes = space.sample(3, random.Random(p.seed + 3))
    calibration = data.Batches(train, cfg.batch_size, shuffle=True, seed=p.seed + 1, device=device)

    resume = checkpoints.Resume("supernet", resume_key(p, space))
    history: list[dict] = []
    done, partial, seconds_before = 0, EpochState(), 0.0
    saved = world.share(resume.load() if world.is_main else None)
    if saved is not None:
        checkpoints.restore_training(saved, net, optimizer, scheduler)
        history, done, partial, seconds_before = saved["history"], saved["epoch"], EpochState(**saved["partial"]), saved["seconds"]
        calibration.set_epoch(saved["calibration_epoch"])
        if world.is_main:
            where = f", {partial.steps} steps into epoch {done + 1}" if partial.steps else ""
            print(f"supernet: resuming from {resume.path}: {done} of {cfg.epochs} epochs done{where}", flush=True)
    start = time.time()

    def save(epochs_done: int, state: EpochState) -> None:
        if world.is_main:
            resume.save(
                checkpoints.training_state(net, optimizer, scheduler)
                | {"epoch": epochs_done, "partial": vars(state), "history": history,
                   "calibration_epoch": calibration.epoch, "seconds": seconds_before + time.time() - start}
            )

    with stage_run("supernet", p, params_path, enabled=world.is_main) as run, StopRequest() as stop:
        run.log_params({f"supernet.{k}": v for k, v in cfg.model_dump().items()} | {"device": str(device), "processes": world.size})
        for row in history:  # epochs done before a resume: the curve stays whole in this run
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        for epoch in range(done + 1, cfg.epochs + 1):
            batches.set_epoch(epoch - 1)

            def sample_path(step: int, epoch: int = epoch) -> None:
                # A fresh uniformly random cell every step, the same on every rank: a function of
                # (seed, epoch, step) alone, so a resumed run draws exactly the paths it would have.
                net.set_arch(space.random_cell(random.Random(f"{p.seed}/{epoch}/{step}")))

            train_loss, train_acc = resumable_epoch(
                lambda: train_epoch(
                    net, batches, optimizer, scheduler, sample_path, desc=f"supernet epoch {epoch}/{cfg.epochs}",
                    world=world, stop=stop, state=partial,
                ),
                epoch=epoch, save_before=lambda: save(epoch - 1, partial), checkpoint=resume.path,
                lr_setting=f"supernet.lr is {cfg.lr}", world=world,
            )
            partial = EpochState()
            if world.is_main:
                val_loss, val_acc = _probe(net, probes, calibration, val_batches)
                row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc)
                history.append(row)
                print(
                    f"supernet epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}"
                    f" | sub-network val acc {val_acc:.4f}  ({seconds_before + time.time() - start:.0f}s)",
                    flush=True,
                )
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            save(epoch, partial)

        if world.is_main:
            model_out = {"space": space.NAME, "shape": vars(shape), "epoch": cfg.epochs, "model": net.state_dict()}
            train_module.save_atomic(model_out, SUPERNET)
            frame = pd.DataFrame(history)
            METRICS.mkdir(exist_ok=True)
            frame.to_csv(METRICS / "supernet_history.csv", index=False)
            last = history[-1]
            seconds = seconds_before + time.time() - start
            summary = {"epochs": cfg.epochs, "threads": p.threads, "train_loss": last["train_loss"], "train_acc": last["train_acc"], "seconds": seconds}
            write_json(METRICS / "supernet.json", summary)
            run.log_metrics({"supernet_seconds": seconds})
            run.log_artifact(plots.training_curves(frame, PLOTS / "supernet_curves.png", "supernet"))
            resume.clear()


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

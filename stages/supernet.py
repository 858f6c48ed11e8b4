"""Stage 2: train the weight-sharing supernet with uniform single-path sampling (SPOS).

One process (`python stages/supernet.py`) or several under torchrun (README: Scaling out). A run that
is stopped (SIGTERM, Ctrl-C) or killed resumes from its last checkpoint when started again.
"""

import random
from pathlib import Path

import pandas as pd

from fitnas import checkpoints, config, deps, distributed, plots, spaces, train as train_module
from fitnas.data import splits
from fitnas.data.batches import Batches
from fitnas.pipeline import METRICS, PLOTS, SUPERNET, TRAIN, VAL, friendly_errors, start_stage, write_json
from fitnas.tracking import stage_run
from fitnas.train import (
    ResumableTraining,
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


def resume_key(p: config.Params, space, member: int = 0) -> str:
    """What one trained supernet depends on: its params, the data, the training code and its place in the ensemble."""
    code = deps.closure([Path(__file__)])  # every fitnas module this stage runs
    settings = {"seed": p.seed, "space": p.space.model_dump(), "supernet": p.supernet.model_dump()}
    if member:
        settings["member"] = member  # member 0's key is the single supernet's, as before ensembles existed
    return checkpoints.resume_key("supernet", settings, [TRAIN, VAL, *code])


def member_seed(seed: int, member: int) -> int:
    """The seed of the ensemble's member-th supernet: its initial weights, batch order and paths (member 0: `seed`)."""
    return seed + 1000 * member


def train_supernet(p: config.Params, params_path: str, world: distributed.World) -> None:
    cfg = p.supernet
    space = spaces.get(p.space)
    train, val = splits.load_split(TRAIN), splits.load_split(VAL)
    shape = space.network_shape(cfg, train.images.shape[1], len(train.classes))
    resumes = [checkpoints.Resume("supernet" if k == 0 else f"supernet{k}", resume_key(p, space, k))
               for k in range(cfg.ensemble)]
    with stage_run("supernet", p, params_path, enabled=world.is_main) as run, StopRequest() as stop:
        run.log_params({f"supernet.{k}": v for k, v in cfg.model_dump().items()} | {"device": str(world.device), "processes": world.size})
        # Each member is trained whole before the next; a finished member's last resume checkpoint
        # holds its final weights, so a stopped ensemble restarts at the member it was training.
        members, histories, seconds = [], [], 0.0
        for member, resume in enumerate(resumes):
            net, history, member_seconds = train_member(p, space, shape, train, val, world, resume, member, run, stop)
            members.append(net.state_dict())
            histories.append(history)
            seconds += member_seconds

        if world.is_main:
            model_out = {"space": space.NAME, "shape": vars(shape), "epoch": cfg.epochs, "model": members[0]}
            if cfg.ensemble > 1:
                model_out["members"] = members[1:]  # scored beside "model", each score the mean of all
            train_module.save_atomic(model_out, SUPERNET)
            frame = pd.DataFrame(histories[0])
            if cfg.ensemble > 1:
                frame = pd.concat([pd.DataFrame(h).assign(member=k) for k, h in enumerate(histories)], ignore_index=True)
            METRICS.mkdir(exist_ok=True)
            frame.to_csv(METRICS / "supernet_history.csv", index=False)
            last = histories[0][-1]
            summary = {"epochs": cfg.epochs, "threads": p.threads, "train_loss": last["train_loss"], "train_acc": last["train_acc"],
                       "seconds": seconds, "ensemble": cfg.ensemble}
            write_json(METRICS / "supernet.json", summary)
            run.log_metrics({"supernet_seconds": seconds})
            run.log_artifact(plots.training_curves(pd.DataFrame(histories[0]), PLOTS / "supernet_curves.png", "supernet"))
            for resume in resumes:
                resume.clear()


def train_member(p: config.Params, space, shape, train, val, world: distributed.World, resume: checkpoints.Resume,
                 member: int, run, stop: StopRequest):
    """One supernet of the ensemble trained (or resumed) to the end: its network, epoch history and seconds."""
    cfg = p.supernet
    device = world.device
    seed = member_seed(p.seed, member)
    seed_everything(seed)
    net = space.build_supernet(shape).to(device)
    batches = Batches(train, cfg.batch_size, shuffle=True, seed=seed, device=device)
    val_batches = Batches(splits.subset(val, 2000, p.seed), 500, shuffle=False, seed=p.seed, device=device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))
    # A few fixed networks followed through training: how well sub-networks inherit weights.
    probes = space.sample(3, random.Random(p.seed + 3))
    calibration = Batches(train, cfg.batch_size, shuffle=True, seed=seed + 1, device=device)
    label = "supernet" if cfg.ensemble == 1 else f"supernet {member + 1}/{cfg.ensemble}"
    step_offset = member * cfg.epochs  # MLflow steps: the members' curves one after another

    state = ResumableTraining(resume, world, net, optimizer, scheduler)
    history, done, partial = state.history, state.done, state.partial
    if state.saved is not None:
        calibration.set_epoch(state.saved["calibration_epoch"])
        if world.is_main:
            print(state.resumed(label, cfg.epochs), flush=True)

    def save(epochs_done: int, partial: EpochState) -> None:
        state.save(epochs_done, partial, calibration_epoch=calibration.epoch)

    if member == 0:
        for row in history:  # epochs done before a resume: the curve stays whole in this run
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    for epoch in range(done + 1, cfg.epochs + 1):
        batches.set_epoch(epoch - 1)

        def sample_path(step: int, epoch: int = epoch) -> None:
            net.set_arch(train_module.single_path(space, seed, epoch, step))

        def fair(step: int, epoch: int = epoch) -> list:
            return train_module.fair_paths(space, seed, epoch, step)

        uniform = cfg.sampling == "uniform"
        train_loss, train_acc = resumable_epoch(
            lambda: train_epoch(
                net, batches, optimizer, scheduler, sample_path if uniform else None, desc=f"{label} epoch {epoch}/{cfg.epochs}",
                world=world, stop=stop, state=partial, paths=None if uniform else fair,
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
                f"{label} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}"
                f" | sub-network val acc {val_acc:.4f}  ({state.seconds():.0f}s)",
                flush=True,
            )
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=step_offset + epoch)
        save(epoch, partial)
    return net, history, state.seconds()


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

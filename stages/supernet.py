"""Stage 2: train the weight-sharing supernet with uniform single-path sampling (SPOS).

One process (`python stages/supernet.py`) or several under torchrun (README: Scaling out). A run that
is stopped (SIGTERM, Ctrl-C) or killed resumes from its last checkpoint when started again.
"""

import random
from pathlib import Path

import pandas as pd

from fitnas import checkpoints, config, deps, distributed, plots, spaces, train as train_module
from fitnas.data import splits
from fitnas.errors import ConfigError
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
    if cfg.few_shot_slot is not None and cfg.few_shot_slot >= space.num_slots:
        raise ConfigError(f"supernet.few_shot_slot = {cfg.few_shot_slot}, but space {space.NAME!r} has slots "
                          f"0-{space.num_slots - 1}; pick one of them or set it to null")
    resumes = [checkpoints.Resume("supernet" if k == 0 else f"supernet{k}", resume_key(p, space, k))
               for k in range(cfg.ensemble)]
    with stage_run("supernet", p, params_path, enabled=world.is_main) as run, StopRequest() as stop:
        run.log_params({f"supernet.{k}": v for k, v in cfg.model_dump().items()} | {"device": str(world.device), "processes": world.size})
        # Each member is trained whole before the next; a finished member's last resume checkpoint
        # holds its final weights, so a stopped ensemble restarts at the member it was training.
        members, histories, shots, seconds = [], [], [], 0.0
        for member, resume in enumerate(resumes):
            seed = member_seed(p.seed, member)
            label = "supernet" if cfg.ensemble == 1 else f"supernet {member + 1}/{cfg.ensemble}"
            net, history, member_seconds = train_member(p, space, shape, train, val, world, resume, run, stop,
                                                         seed=seed, label=label, epochs=cfg.epochs, log_from=member * cfg.epochs)
            members.append(net.state_dict())
            histories.append(history)
            seconds += member_seconds
            if cfg.few_shot_slot is not None:
                shots.append(few_shot(p, space, shape, train, val, world, run, stop, member, net.state_dict(), label))
                seconds += sum(shot_seconds for _, shot_seconds in shots[-1])

        if world.is_main:
            model_out = {"space": space.NAME, "shape": vars(shape), "epoch": cfg.epochs, "model": members[0]}
            if cfg.ensemble > 1:
                model_out["members"] = members[1:]  # scored beside "model", each score the mean of all
            if shots:
                # Few-shot: each network is scored by the sub-supernets of its op on the split slot.
                model_out["few_shot"] = {"slot": cfg.few_shot_slot, "ops": list(space.choices[cfg.few_shot_slot]),
                                         "models": [[weights for weights, _ in member] for member in shots]}
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
            checkpoints.Resume("supernetshot", "").clear()


def few_shot(p: config.Params, space, shape, train, val, world: distributed.World, run, stop: StopRequest,
             member: int, base: dict, label: str) -> list[tuple[dict, float]]:
    """Few-shot NAS (Zhao et al., ICML 2021): one sub-supernet per op of `supernet.few_shot_slot`, each
    starting from the trained supernet and trained `few_shot_epochs` more on the paths that take that op.
    Their (weights, seconds), in the order of the slot's choices."""
    cfg = p.supernet
    slot, out = cfg.few_shot_slot, []
    for op in space.choices[slot]:
        seed = member_seed(p.seed, member) + 100 * (op + 1)
        resume = checkpoints.Resume("supernetshot", f"{resume_key(p, space, member)}-{slot}-{op}")
        net, _, seconds = train_member(p, space, shape, train, val, world, resume, run, stop, seed=seed,
                                       label=f"{label} shot {space.OPS[op]}",
                                       epochs=cfg.few_shot_epochs, start_from=base, fixed=(slot, op), log_from=None)
        out.append((net.state_dict(), seconds))
    return out


def train_member(p: config.Params, space, shape, train, val, world: distributed.World, resume: checkpoints.Resume,
                 run, stop: StopRequest, *, seed: int, label: str, epochs: int, log_from: int | None,
                 start_from: dict | None = None, fixed: tuple[int, int] | None = None):
    """One supernet trained (or resumed) to the end: its network, epoch history and seconds.

    `start_from`: weights to begin with (a few-shot split) instead of a fresh initialisation;
    `fixed` = (slot, op): every path takes op at slot. `log_from`: MLflow's first step (None: not logged).
    """
    cfg = p.supernet
    device = world.device
    seed_everything(seed)
    net = space.build_supernet(shape).to(device)
    if start_from is not None:
        net.load_state_dict(start_from)
    batches = Batches(train, cfg.batch_size, shuffle=True, seed=seed, device=device)
    val_batches = Batches(splits.subset(val, 2000, p.seed), 500, shuffle=False, seed=p.seed, device=device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, epochs * len(batches))
    # A few fixed networks followed through training: how well sub-networks inherit weights.
    probes = [_fix(arch, fixed) for arch in space.sample(3, random.Random(p.seed + 3))]
    calibration = Batches(train, cfg.batch_size, shuffle=True, seed=seed + 1, device=device)

    state = ResumableTraining(resume, world, net, optimizer, scheduler)
    history, done, partial = state.history, state.done, state.partial
    if state.saved is not None:
        calibration.set_epoch(state.saved["calibration_epoch"])
        if world.is_main:
            print(state.resumed(label, epochs), flush=True)

    def save(epochs_done: int, partial: EpochState) -> None:
        state.save(epochs_done, partial, calibration_epoch=calibration.epoch)

    if log_from is not None:
        for row in history:  # epochs done before a resume: the curve stays whole in this run
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=log_from + row["epoch"])
    for epoch in range(done + 1, epochs + 1):
        batches.set_epoch(epoch - 1)

        def sample_path(step: int, epoch: int = epoch) -> None:
            net.set_arch(_fix(train_module.single_path(space, seed, epoch, step), fixed))

        def fair(step: int, epoch: int = epoch) -> list:
            return [_fix(arch, fixed) for arch in train_module.fair_paths(space, seed, epoch, step)]

        uniform = cfg.sampling == "uniform"
        train_loss, train_acc = resumable_epoch(
            lambda: train_epoch(
                net, batches, optimizer, scheduler, sample_path if uniform else None, desc=f"{label} epoch {epoch}/{epochs}",
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
                f"{label} epoch {epoch}/{epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}"
                f" | sub-network val acc {val_acc:.4f}  ({state.seconds():.0f}s)",
                flush=True,
            )
            if log_from is not None:
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=log_from + epoch)
        save(epoch, partial)
    return net, history, state.seconds()


def _fix(arch: tuple[int, ...], fixed: tuple[int, int] | None) -> tuple[int, ...]:
    """The path with op `fixed[1]` at slot `fixed[0]` (a few-shot sub-supernet's), or as it is."""
    if fixed is None:
        return arch
    slot, op = fixed
    return (*arch[:slot], op, *arch[slot + 1 :])


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

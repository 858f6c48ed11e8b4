"""Stage 6: train the chosen architecture from scratch and test it once."""

import time

import pandas as pd

from fitnas import config, data, plots, spaces
from fitnas.costs import count_flops, count_params
from fitnas.pipeline import CHOICE, FINAL_MODEL, METRICS, PLOTS, TEST, TRAIN, VAL, final_shape, friendly_errors, write_json
from fitnas.pipeline import read_choice
from fitnas.tracking import preflight, stage_run
from fitnas.train import evaluate, pick_device, save_atomic, seed_everything, sgd_one_cycle, train_epoch


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = config.load(params_path)
    preflight()  # MLflow unreachable: fail now, before any work
    cfg = p.retrain
    seed_everything(p.seed)
    device = pick_device(p.device)
    space = spaces.get(p.space.name)
    choice = read_choice(CHOICE)
    arch = space.canonical(space.parse(choice["arch"]))
    shape, size = final_shape(p, space)
    net = space.build(arch, shape)
    flops_M = count_flops(net, (shape.in_channels, size, size)) / 1e6
    params_M = count_params(net) / 1e6
    net.to(device)

    train, val = data.load_split(TRAIN), data.load_split(VAL)
    batches = data.Batches(train, cfg.batch_size, shuffle=True, seed=p.seed, device=device, augment=cfg.augment)
    val_batches = data.Batches(val, 1000, shuffle=False, seed=p.seed, device=device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))
    print(f"retrain: {choice['arch']}  {flops_M:.2f} MFLOPs, {params_M:.4f} M params, {cfg.epochs} epochs on {device}")

    history = []
    start = time.time()
    with stage_run("retrain", p, params_path) as run:
        run.log_params({f"retrain.{k}": v for k, v in cfg.model_dump().items()} | {"arch": choice["arch"]})
        for epoch in range(1, cfg.epochs + 1):
            train_loss, train_acc = train_epoch(
                net, batches, optimizer, scheduler, label_smoothing=cfg.label_smoothing,
                desc=f"retrain epoch {epoch}/{cfg.epochs}",
            )
            val_loss, val_acc = evaluate(net, val_batches)
            row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc)
            history.append(row)
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            print(f"retrain epoch {epoch}/{cfg.epochs}: train acc {train_acc:.4f} | val acc {val_acc:.4f}  "
                  f"({time.time() - start:.0f}s)", flush=True)
            save_atomic({"space": space.NAME, "arch": space.to_str(arch), "shape": vars(shape), "epoch": epoch,
                         "model": net.state_dict()}, FINAL_MODEL)

        # The test set is read here, once, after all choices are made.
        test_loss, test_acc = evaluate(net, data.Batches(data.load_split(TEST), 1000, shuffle=False, seed=0, device=device))
        final = {
            "arch": space.to_str(arch),
            "test_acc": test_acc,
            "test_loss": test_loss,
            "flops_M": flops_M,
            "params_M": params_M,
            "predicted_acc": choice["predicted_acc"],
            "budget_flops": p.budget.flops,
            "budget_params": p.budget.params,
            "train_seconds": time.time() - start,
        }
        write_json(METRICS / "final.json", final)
        frame = pd.DataFrame(history)
        frame.to_csv(METRICS / "retrain_history.csv", index=False)
        curves = plots.training_curves(frame, PLOTS / "retrain_curves.png", "retrain")
        print(f"retrain: test accuracy {test_acc:.4f}")
        run.log_metrics({k: v for k, v in final.items() if isinstance(v, float)}, to_parent=True)
        run.set_tags({"final_arch": final["arch"]}, to_parent=True)
        run.log_artifact(curves)
        run.log_artifact(FINAL_MODEL)
        run.log_artifact(METRICS / "final.json")


if __name__ == "__main__":
    main()

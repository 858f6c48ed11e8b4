"""Stage 6: train the chosen architecture from scratch and test it once.

One process or several under torchrun, like the supernet; a stopped or killed run resumes from its
last checkpoint when started again.
"""

import json
import warnings
from pathlib import Path

import pandas as pd

from fitnas import checkpoints, config, deps, distributed, export, plots, serving, spaces, train as train_module

from fitnas.data import sources, splits

from fitnas.data.batches import Batches
from fitnas.costs import count_flops, count_params
from fitnas.pipeline import CHOICE, FINAL_MODEL, FINAL_ONNX, METRICS, PLOTS, TEST, TRAIN, VAL, final_shape, friendly_errors, start_stage, read_choice, write_json
from fitnas.tracking import stage_run
from fitnas.train import EpochState, ResumableTraining, StopRequest, evaluate, resumable_epoch, seed_everything, sgd_one_cycle, train_epoch


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    with distributed.session(p.distributed, p.device) as world:
        retrain(p, params_path, world)


def resume_key(p: config.Params, space) -> str:
    """What the final network depends on: its params, the choice, the data and the training code."""
    code = deps.closure([Path(__file__)])  # every fitnas module this stage runs
    settings = {"seed": p.seed, "space": p.space.model_dump(), "final": p.final.model_dump(), "retrain": p.retrain.model_dump()}
    return checkpoints.resume_key("retrain", settings, [CHOICE, TRAIN, VAL, *code])


def retrain(p: config.Params, params_path: str, world: distributed.World) -> None:
    cfg = p.retrain
    device = world.device
    seed_everything(p.seed)
    space = spaces.get(p.space)
    choice = read_choice(CHOICE)
    arch = space.canonical(space.parse(choice["arch"]))
    shape, size = final_shape(p, space)
    net = space.build(arch, shape)
    flops_M = count_flops(net, (shape.in_channels, size, size)) / 1e6
    params_M = count_params(net) / 1e6
    net.to(device)

    train, val = splits.load_split(TRAIN), splits.load_split(VAL)
    batches = Batches(train, cfg.batch_size, shuffle=True, seed=p.seed, device=device, augment=cfg.augment)
    val_batches = Batches(val, 1000, shuffle=False, seed=p.seed, device=device)
    optimizer, scheduler = sgd_one_cycle(net, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs * len(batches))

    resume = checkpoints.Resume("retrain", resume_key(p, space))
    state = ResumableTraining(resume, world, net, optimizer, scheduler)
    history, done, partial = state.history, state.done, state.partial
    if world.is_main:
        print(f"retrain: {choice['arch']}  {flops_M:.2f} MFLOPs, {params_M:.4f} M params, {cfg.epochs} epochs on {device}"
              + (f" x {world.size} processes" if world.enabled else ""))
        if state.saved is not None:
            print(state.resumed("retrain", cfg.epochs), flush=True)
    save = state.save

    with stage_run("retrain", p, params_path, enabled=world.is_main) as run, StopRequest() as stop:
        run.log_params({f"retrain.{k}": v for k, v in cfg.model_dump().items()} | {"arch": choice["arch"], "processes": world.size})
        for row in history:  # epochs done before a resume: the curve stays whole in this run
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        for epoch in range(done + 1, cfg.epochs + 1):
            batches.set_epoch(epoch - 1)
            train_loss, train_acc = resumable_epoch(
                lambda: train_epoch(
                    net, batches, optimizer, scheduler, label_smoothing=cfg.label_smoothing,
                    desc=f"retrain epoch {epoch}/{cfg.epochs}", world=world, stop=stop, state=partial,
                ),
                epoch=epoch, save_before=lambda: save(epoch - 1, partial), checkpoint=resume.path,
                lr_setting=f"retrain.lr is {cfg.lr}", world=world,
            )
            partial = EpochState()
            if world.is_main:
                val_loss, val_acc = evaluate(net, val_batches)
                row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc)
                history.append(row)
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                print(f"retrain epoch {epoch}/{cfg.epochs}: train acc {train_acc:.4f} | val acc {val_acc:.4f}  "
                      f"({state.seconds():.0f}s)", flush=True)
            save(epoch, partial)

        if not world.is_main:
            return
        train_module.save_atomic(
            {"space": space.NAME, "arch": space.to_str(arch), "shape": vars(shape), "epoch": cfg.epochs, "model": net.state_dict()},
            FINAL_MODEL,
        )
        # The test set is read here, once, after all choices are made.
        test = splits.load_split(TEST)
        test_loss, test_acc = evaluate(net, Batches(test, 1000, shuffle=False, seed=0, device=device))
        meta = serving.metadata(test.classes, test.mean, test.std, shape.in_channels, size,
                                sources.resize_method(p.data.root, p.data.format),
                                arch=space.to_str(arch), space=space.NAME, test_acc=test_acc)
        export.export_onnx(net, (shape.in_channels, size, size), FINAL_ONNX, meta)
        # The whole network timed as the latency stage times its blocks, in PyTorch and in onnxruntime.
        latency = export.measured_latency(net, FINAL_ONNX, (shape.in_channels, size, size), device, p.latency)
        final = {
            "arch": space.to_str(arch),
            "test_acc": test_acc,
            "test_loss": test_loss,
            "flops_M": flops_M,
            "params_M": params_M,
            "predicted_acc": choice["predicted_acc"],
            "budget_flops": p.budget.flops,
            "budget_params": p.budget.params,
            "budget_latency_ms": p.budget.latency_ms,
            "latency_ms": choice.get("latency_ms"),  # the latency table's estimate, when the search had one
            **latency,
            "train_seconds": state.seconds(),
            "threads": p.threads,  # torch's CPU threads: the weights depend on them
        }
        write_json(METRICS / "final.json", final)
        frame = pd.DataFrame(history)
        frame.to_csv(METRICS / "retrain_history.csv", index=False)
        curves = plots.training_curves(frame, PLOTS / "retrain_curves.png", "retrain")
        print(f"retrain: test accuracy {test_acc:.4f}; {FINAL_ONNX} written; whole network {latency['measured_torch_ms']:.3f} ms "
              f"in PyTorch, {latency['measured_onnx_ms']:.3f} ms in onnxruntime (batch {p.latency.batch_size}, "
              f"{p.latency.threads or 'default'} thread(s))")
        # Budgets are params already (budget.*); as metrics they only showed as NaN beside a number.
        run.log_metrics({k: v for k, v in final.items() if isinstance(v, float) and not k.startswith("budget_")}, to_parent=True)
        fitted = METRICS / "fit.json"  # the fit this choice came from; a `dvc exp run` of a budget skips it
        if fitted.is_file():
            tau = f"{p.predictor.kind}.kendall_tau"
            report = json.loads(fitted.read_text())
            if isinstance(report.get(tau), float):
                # So every execution's parent has the headline columns, the fit's tau included.
                run.log_metrics({f"fit.{tau}": report[tau]}, to_parent=True)
        run.set_tags({"final_arch": final["arch"]}, to_parent=True)
        run.log_artifact(curves)
        run.log_artifact(FINAL_MODEL)
        run.log_artifact(FINAL_ONNX)
        run.log_artifact(METRICS / "final.json")
        register(run, p, FINAL_ONNX, meta, test, final)
        resume.clear()


def register(run, p: config.Params, onnx_path: Path, meta: dict, test: splits.Split, final: dict) -> None:
    """The ONNX classifier as a new version of the registered model `mlflow.model_name` (tracking on only)."""
    import mlflow
    import onnxruntime
    from mlflow.models import infer_signature

    example = test.images[:4].numpy()  # real test images, uint8 (N, C, H, W): what the model takes
    with warnings.catch_warnings():
        # MLflow hints that an integer column cannot hold missing values; the label column never does.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, serving.Classifier(onnx_path).predict(example))
    name = p.mlflow.registered_name()
    tags = {"arch": final["arch"], "space": meta["space"], "flops_M": f"{final['flops_M']:.4f}",
            "params_M": f"{final['params_M']:.4f}", "test_acc": f"{final['test_acc']:.4f}",
            "latency_torch_ms": f"{final['measured_torch_ms']:.4f}", "latency_onnx_ms": f"{final['measured_onnx_ms']:.4f}"}
    if final["latency_ms"] is not None:
        tags["latency_table_ms"] = f"{final['latency_ms']:.4f}"
    version = run.register_model(
        name, Path(serving.__file__), {"onnx": str(onnx_path)}, signature, example, meta,
        [f"mlflow=={mlflow.__version__}", f"onnxruntime=={onnxruntime.__version__}", "numpy", "pandas"], tags,
    )
    if version is not None:
        print(f"retrain: registered models:/{name}/{version} (mlflow.pyfunc.load_model loads it without fitnas)")
        print(f"[mlflow] the runs with their headline metrics: {run.ui_link()}")


if __name__ == "__main__":
    main()

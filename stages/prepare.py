"""Stage 1: the dataset (Fashion-MNIST or your own) -> seeded train / validation split and the untouched test set."""

from pathlib import Path

import torch

from fitnas.data import sources
from fitnas.data.splits import Split, save_split, split_train_val, subset
from fitnas.pipeline import METRICS, TEST, TRAIN, VAL, friendly_errors, start_stage, write_json
from fitnas.tracking import stage_run


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = start_stage(params_path)  # params, this checkout's code, threads, the tracking store: before any work
    # Everything is read and checked before anything is written.
    dataset = sources.load_dataset(p.data.root, p.data.format, p.data.image_size, Path(p.data.download_dir))
    _, channels, height, width = dataset.train_x.shape
    print(f"prepare: {dataset.source}: {len(dataset.classes)} classes, {channels} channel(s), {height}x{width} pixels")
    train_x, train_y, val_x, val_y = split_train_val(dataset.train_x, dataset.train_y, p.data.val_size, p.seed)
    # Limits make quick runs; applied here so every later stage sees the same data.
    splits = {
        "train": (TRAIN, train_x, train_y, p.data.train_limit),
        "val": (VAL, val_x, val_y, None),
        "test": (TEST, dataset.test_x, dataset.test_y, p.data.test_limit),
    }
    sizes = {}
    for name, (path, x, y, limit) in splits.items():
        split = Split(torch.from_numpy(x), torch.from_numpy(y).long(), dataset.classes)
        if limit is not None:
            split = subset(split, limit, p.seed)
        save_split(path, split.images, split.labels, dataset.classes, dataset.mean, dataset.std)
        sizes[name] = len(split)
    print(f"prepare: {sizes}")
    write_json(METRICS / "prepare.json", {f"{k}_size": v for k, v in sizes.items()})
    with stage_run("prepare", p, params_path) as run:
        run.log_params({"source": dataset.source, "classes": len(dataset.classes), "channels": channels,
                        "image_size": height, **{f"data.{k}": v for k, v in p.data.model_dump().items()}})
        run.log_metrics({f"{k}_size": v for k, v in sizes.items()})


if __name__ == "__main__":
    main()

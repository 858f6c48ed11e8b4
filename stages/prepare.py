"""Stage 1: Fashion-MNIST -> seeded train / validation split and the untouched test set."""

from pathlib import Path

import torch

from fitnas import config, data
from fitnas.pipeline import METRICS, TEST, TRAIN, VAL, friendly_errors, write_json
from fitnas.tracking import stage_run


@friendly_errors
def main(params_path: str = "params.yaml") -> None:
    p = config.load(params_path)
    folder = data.find_dataset(p.data.root, Path(p.data.download_dir))
    print(f"prepare: Fashion-MNIST from {folder}")
    train_x, train_y, test_x, test_y = data.load_fashion_mnist(folder)
    train_x, train_y, val_x, val_y = data.split_train_val(train_x, train_y, p.data.val_size, p.seed)
    classes = list(data.FASHION_MNIST_CLASSES)
    # Limits make quick runs; applied here so every later stage sees the same data.
    splits = {
        "train": (TRAIN, train_x, train_y, p.data.train_limit),
        "val": (VAL, val_x, val_y, None),
        "test": (TEST, test_x, test_y, p.data.test_limit),
    }
    sizes = {}
    for name, (path, x, y, limit) in splits.items():
        split = data.Split(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long(), classes)
        if limit is not None:
            split = data.subset(split, limit, p.seed)
        data.save_split(path, split.images, split.labels, classes)
        sizes[name] = len(split)
    print(f"prepare: {sizes}")
    write_json(METRICS / "prepare.json", {f"{k}_size": v for k, v in sizes.items()})
    with stage_run("prepare", p, params_path) as run:
        run.log_params({"source": str(folder), **{f"data.{k}": v for k, v in p.data.model_dump().items()}})
        run.log_metrics({f"{k}_size": v for k, v in sizes.items()})


if __name__ == "__main__":
    main()

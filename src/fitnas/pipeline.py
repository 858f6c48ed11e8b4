"""What the stages share: where each artifact lives, and how a stage reports a user's mistake.

dvc.yaml names the same paths; tests check the two agree.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from fitnas.checkpoints import CheckpointError
from fitnas.config import ConfigError
from fitnas.data import DataError
from fitnas.distributed import DistributedError
from fitnas.search import BudgetError
from fitnas.spaces.base import ArchError
from fitnas.train import Interrupted, NonFiniteLoss

PREPARED = Path("data/prepared")
TRAIN, VAL, TEST = PREPARED / "train.pt", PREPARED / "val.pt", PREPARED / "test.pt"
SUPERNET = Path("models/supernet.pt")
FINAL_MODEL = Path("models/final.pt")
SAMPLES = Path("results/samples.csv")
LOOKUP = Path("results/lookup.csv")
HOLDOUT = Path("results/fit_holdout.csv")
CHOICE = Path("results/choice.json")
TOPK = Path("results/topk.csv")
PARETO = Path("results/pareto.csv")
# The rank check (rankcheck/dvc.yaml, off the default path).
RANKCHECK = Path("results/rankcheck.csv")
RANKCHECK_CACHE = Path("results/rankcheck.cache.csv")  # networks trained so far; not a DVC output, so it survives a re-run
METRICS = Path("metrics")
PLOTS = Path("plots")

def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


class SamplesError(ValueError):
    pass


def final_shape(p, space):
    """The network retraining trains (params `final.*` on the prepared data): (shape, input size)."""
    from fitnas import data

    val = data.load_split(VAL)
    shape = space.NetworkShape(p.final.channels, p.final.cells, val.images.shape[1], len(val.classes))
    return shape, val.images.shape[-1]


def final_costs(p, space):
    """FLOPs and params of every cell, counted on networks of the final shape."""
    shape, size = final_shape(p, space)
    return space.cost_model(shape, size)


def read_samples(path: Path, space):
    import pandas as pd

    fix = "re-run `dvc repro sample` to recreate it"
    if not path.is_file():
        raise SamplesError(f"{path} does not exist; {fix}")
    try:
        table = pd.read_csv(path)
    except Exception as err:
        raise SamplesError(f"{path} is unreadable ({err}); {fix}") from None
    needed = {"arch", "supernet_acc", "flops_M", "params_M"}
    if not needed <= set(table.columns):
        raise SamplesError(f"{path} lacks columns {sorted(needed - set(table.columns))}; {fix}")
    if len(table) < 10:
        raise SamplesError(f"{path} has only {len(table)} rows; a fit needs at least 10 (raise sample.n)")
    for text in table.arch:
        space.parse(text)
    return table


def read_lookup(path: Path):
    import pandas as pd

    fix = "run `dvc repro fit` to create it"
    if not path.is_file():
        raise SamplesError(f"lookup table {path} does not exist; {fix}")
    table = pd.read_csv(path)
    needed = {"arch", "predicted_acc", "flops_M", "params_M"}
    if not needed <= set(table.columns):
        raise SamplesError(f"{path} lacks columns {sorted(needed - set(table.columns))}; {fix}")
    return table


USER_ERRORS = (ConfigError, DataError, BudgetError, ArchError, CheckpointError, SamplesError, NonFiniteLoss, DistributedError)


def friendly_errors(main):
    """Turn the errors a user can fix into one clear line and exit status 1, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except Interrupted as err:
            print(f"stopped: {err}", file=sys.stderr)
            sys.exit(err.exit_code)

    return wrapper

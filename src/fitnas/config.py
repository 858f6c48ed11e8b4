"""The one schema of params.yaml, validated when it is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError


class ConfigError(ValueError):
    """params.yaml is missing or does not match the schema; the message names the key and the fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Data(Section):
    root: Optional[str] = None  # folder holding the four Fashion-MNIST IDX files
    download_dir: str = "data/downloads"
    val_size: PositiveInt = 6000
    train_limit: Optional[PositiveInt] = None  # keep only this many training images after the split (quick runs)
    test_limit: Optional[PositiveInt] = None


class Space(Section):
    name: Literal["nb201"] = "nb201"


class Supernet(Section):
    channels: PositiveInt = 8
    cells: PositiveInt = 1
    epochs: PositiveInt = 5
    batch_size: PositiveInt = 256
    lr: PositiveFloat = 0.1
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)


class Sample(Section):
    n: PositiveInt = 200
    bn_batches: PositiveInt = 4  # training batches that recalibrate BatchNorm per sub-network
    bn_batch_size: PositiveInt = 256
    val_limit: Optional[PositiveInt] = 2000  # validation images scored per sub-network
    batch_size: PositiveInt = 500


class Predictor(Section):
    kind: Literal["gcn", "mlp", "rf", "params"] = "gcn"
    baselines: list[Literal["gcn", "mlp", "rf", "params"]] = ["mlp", "rf", "params"]
    holdout: float = Field(0.2, gt=0, lt=1)  # share of samples kept out of the fit to score rankings
    # The graph network's settings; the defaults are what won bench/predictors.py.
    hidden: PositiveInt = 64
    layers: PositiveInt = 4
    epochs: PositiveInt = 200  # at most; early stopping on held-out ranking picks how many
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(1e-3, ge=0)
    hinge_weight: float = Field(0.25, ge=0)  # weight of the pairwise hinge next to the MSE (bench/README.md)
    validation: float = Field(0.2, ge=0, lt=1)  # share held out to choose the epochs; 0: train all epochs
    ensemble: PositiveInt = 3


class Final(Section):
    """The network that retraining trains; its FLOPs and params fill the lookup table."""

    channels: PositiveInt = 16
    cells: PositiveInt = 1


class Search(Section):
    top_k: PositiveInt = 10


class Budget(Section):
    flops: Optional[PositiveFloat] = None  # millions of multiply-accumulates
    params: Optional[PositiveFloat] = None  # millions of parameters


class Retrain(Section):
    epochs: PositiveInt = 3
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: bool = False


class Rankcheck(Section):
    """Ground truth for the ranking: networks trained from scratch (stage `rankcheck`, off the default path)."""

    archs: PositiveInt = Field(30, ge=4)  # distinct networks, spread over the FLOPs range, none of them sampled
    epochs: PositiveInt = 2
    train_limit: Optional[PositiveInt] = 20000  # training images per network
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    bootstrap: PositiveInt = 1000  # resamples for the 95% interval of each Kendall tau


class Mlflow(Section):
    experiment: str = "fitnas"


class Params(Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: Literal["auto", "off"] = "auto"  # auto: join torchrun's process group when launched by torchrun
    data: Data = Data()
    space: Space = Space()
    supernet: Supernet = Supernet()
    sample: Sample = Sample()
    predictor: Predictor = Predictor()
    final: Final = Final()
    search: Search = Search()
    budget: Budget = Budget()
    retrain: Retrain = Retrain()
    rankcheck: Rankcheck = Rankcheck()
    mlflow: Mlflow = Mlflow()


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project folder (the one holding dvc.yaml and params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(path, err)) from None


def _explain(path: Path, err: ValidationError) -> str:
    lines = [f"{path} has {err.error_count()} problem(s):"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; remove it or check its spelling")
        else:
            lines.append(f"  {key}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def flatten(params: Params) -> dict[str, object]:
    """Dotted keys, as MLflow and `dvc exp run -S` name them."""
    out: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            out[prefix] = value

    walk("", params.model_dump())
    return out

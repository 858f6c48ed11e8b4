"""The one schema of params.yaml, validated when it is loaded."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from fitnas.errors import ConfigError


# Strict: YAML's `true` is a bool, not the number 1, and `3.0` epochs is a mistake, not 3. Ints
# still pass where a float is asked for (`dvc exp run -S budget.flops=400`).
StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict()]
PositiveInt = Annotated[int, Strict(), annotated_types.Gt(0)]
PositiveFloat = Annotated[float, Strict(), annotated_types.Gt(0)]


def _not_bool(value: Any) -> Any:
    # A Literal of numbers ignores Strict, and True == 1 in Python.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Stride = Annotated[Literal[1, 2], BeforeValidator(_not_bool)]


class Section(BaseModel):
    # allow_inf_nan=False: `lr: inf` or `.nan` is refused here, not at the first training step.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Data(Section):
    # null: Fashion-MNIST from the Debian package or a download. Else a folder of the four
    # Fashion-MNIST IDX files, an image folder (train/<class>/*, test/<class>/*) or an .npz file.
    root: Optional[str] = None
    format: Literal["auto", "idx", "imagefolder", "npz"] = "auto"  # auto: told apart by what data.root holds
    # resize every image to this many pixels square; null keeps the size. At most 4096: a bigger one would not fit in memory.
    image_size: Optional[Annotated[int, Strict(), annotated_types.Gt(0), annotated_types.Le(4096)]] = None
    download_dir: str = "data/downloads"
    val_size: PositiveInt = 6000
    train_limit: Optional[PositiveInt] = None  # keep only this many training images after the split (quick runs)
    test_limit: Optional[PositiveInt] = None


class Mobilenet(Section):
    """The MobileNet-style chain space's layout (space.name: mobilenet); the defaults suit 28x28 inputs."""

    stem: PositiveInt = 8  # channels of the stem convolution
    stem_stride: Stride = 2
    first: PositiveInt = 8  # channels of the fixed expansion-1 block after the stem
    widths: list[PositiveInt] = [8, 12, 16, 24, 32, 48]  # one per stage
    depths: list[PositiveInt] = [4, 4, 4, 4, 4, 1]  # searchable layers per stage (21 in all)
    strides: list[Stride] = [1, 2, 1, 1, 1, 1]  # of each stage's first layer
    head: PositiveInt = 128  # channels of the 1x1 convolution before pooling
    kernels: list[Annotated[Literal[3, 5, 7], BeforeValidator(_not_bool)]] = [3, 5, 7]
    expansions: list[PositiveInt] = [3, 6]

    @model_validator(mode="after")
    def _one_value_per_stage(self) -> "Mobilenet":
        if not len(self.widths) == len(self.depths) == len(self.strides):
            raise ValueError(
                f"widths, depths and strides need one value per stage; got {len(self.widths)}, "
                f"{len(self.depths)} and {len(self.strides)}"
            )
        if not self.kernels or not self.expansions or not self.widths:
            raise ValueError("widths, kernels and expansions must not be empty")
        return self


class Space(Section):
    name: Literal["nb201", "mobilenet"] = "nb201"
    mobilenet: Mobilenet = Mobilenet()


class Supernet(Section):
    channels: PositiveInt = 8
    cells: PositiveInt = 1
    epochs: PositiveInt = 4  # more did not rank better (bench/README.md, the levers); 4 keep dvc repro within 20 min
    batch_size: PositiveInt = 256
    lr: PositiveFloat = 0.1
    momentum: StrictFloat = Field(0.9, ge=0, lt=1)
    weight_decay: StrictFloat = Field(5e-4, ge=0)
    # uniform: one random path per step (SPOS). fair: FairNAS's strict fairness, every op of every slot
    # once per step (5 paths on nb201, their gradients averaged): 5x the compute of an epoch.
    sampling: Literal["uniform", "fair"] = "uniform"
    # Supernets trained from seeds seed, seed+1000, ...: every score is the mean over them, which
    # averages away what one supernet prefers (the error all its scores share); K times the cost.
    ensemble: PositiveInt = 1
    # Few-shot NAS (Zhao et al.): after training, one sub-supernet per op of this slot (an edge of the
    # NAS-Bench-201 cell, 0-5; a layer of the chain), each trained few_shot_epochs more on its paths only.
    few_shot_slot: Optional[Annotated[int, Strict(), annotated_types.Ge(0)]] = None
    few_shot_epochs: PositiveInt = 2


class Sample(Section):
    n: PositiveInt = 60  # 50 samples ranked as well as 100 or 200 (bench/results/supernet_ranking.md); 60 keep dvc repro within 20 min
    bn_batches: PositiveInt = 4  # training batches that recalibrate BatchNorm per sub-network
    bn_batch_size: PositiveInt = 256
    val_limit: Optional[PositiveInt] = 2000  # validation images scored per sub-network
    batch_size: PositiveInt = 500
    # Zero-cost proxies of each sampled network (fitnas.zerocost; all: synflow, naswot, jacov, grad_norm,
    # snip): more cheap signals the fit fuses when anchors exist, ~0.1 s a network each on 1 thread, plus an
    # expert the fit pre-trains. synflow only by default: jacov got weight 0 in the default's fusion (README).
    proxies: list[Literal["synflow", "naswot", "jacov", "grad_norm", "snip"]] = ["synflow"]
    proxy_batch: PositiveInt = 64  # training images the data-reading proxies see


class Predictor(Section):
    kind: Literal["gcn", "mlp", "rf", "params", "multifidelity"] = "gcn"
    baselines: list[Literal["gcn", "mlp", "rf", "params", "multifidelity"]] = ["mlp", "rf", "params"]
    holdout: StrictFloat = Field(0.2, gt=0, lt=1)  # share of samples kept out of the fit to score rankings
    # The graph network's settings; the defaults are what won bench/predictors.py.
    hidden: PositiveInt = 64
    layers: PositiveInt = 4
    epochs: PositiveInt = 200  # at most; early stopping on held-out ranking picks how many
    lr: PositiveFloat = 1e-3
    weight_decay: StrictFloat = Field(1e-3, ge=0)
    batch_size: PositiveInt = 32  # graphs per step; the MLP baseline trains with the same
    hinge_weight: StrictFloat = Field(0.25, ge=0)  # weight of the pairwise hinge next to the MSE (bench/README.md)
    validation: StrictFloat = Field(0.2, ge=0, lt=1)  # share held out to choose the epochs; 0: train all epochs
    ensemble: PositiveInt = 3


class Final(Section):
    """The network that retraining trains; its FLOPs and params fill the lookup table."""

    channels: PositiveInt = 16
    cells: PositiveInt = 1


class Evolution(Section):
    """Evolutionary search over the whole space (Once-for-All's constraint-aware mutation and crossover)."""

    population: PositiveInt = 100
    generations: PositiveInt = 100
    parents: StrictFloat = Field(0.25, gt=0, le=1)  # share of the population kept as parents each generation
    mutation_prob: StrictFloat = Field(0.1, gt=0, le=1)  # chance that a layer changes in a mutated child
    mutation_share: StrictFloat = Field(0.5, ge=0, le=1)  # share of the children made by mutation (the rest by crossover)


class Search(Section):
    top_k: PositiveInt = 10
    # Spaces too large to enumerate (mobilenet) are searched against the fitted predictor:
    method: Literal["progressive", "evolution"] = "progressive"
    segment: PositiveInt = 7  # layers per segment of the progressive search
    super_cells: PositiveInt = 6  # best partial architectures of a segment kept for the next
    contexts: PositiveInt = 2  # random completions of the later layers each segment is scored in (averaged)
    pareto_points: StrictInt = Field(6, ge=0)  # extra searches at FLOPs budgets spread over the range, for the Pareto front
    evolution: Evolution = Evolution()


UNITS = {"flops": "M FLOPs", "params": "M params", "latency_ms": "ms"}  # of each budget's cost


class Budget(Section):
    """The constraints of a search (params.yaml's `budget`, or `fitnas lookup`'s options); None: unconstrained."""

    flops: Optional[PositiveFloat] = None  # millions of multiply-accumulates
    params: Optional[PositiveFloat] = None  # millions of parameters
    latency_ms: Optional[PositiveFloat] = None  # milliseconds, from the latency table (stage latency)

    def limits(self) -> dict[str, float]:
        """The constrained costs: {"flops" | "params" | "latency_ms": limit}."""
        return {name: value for name, value in self.model_dump().items() if value is not None}

    def describe(self) -> str:
        parts = [f"{name} <= {value} {UNITS[name].removeprefix('M ') if name == 'latency_ms' else 'M'}"
                 for name, value in self.limits().items()]
        return ", ".join(parts) or "unconstrained"


class Latency(Section):
    """The per-block latency table, timed on the device the final network runs on (stage latency)."""

    batch_size: PositiveInt = 1
    warmup: StrictInt = Field(5, ge=0)  # untimed runs before timing each block
    repeats: PositiveInt = 30  # timed runs per block; the median counts
    threads: Optional[PositiveInt] = 1  # CPU threads while timing (null: torch's default)
    calibration_networks: StrictInt = Field(3, ge=0)  # whole networks that fit the table's one scale factor (0: raw sums)
    check_networks: StrictInt = Field(5, ge=0)  # other whole networks timed to check the table's sums


class Retrain(Section):
    epochs: PositiveInt = 2  # keeps dvc repro within 20 min when the choice is the largest network
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: StrictFloat = Field(0.9, ge=0, lt=1)
    weight_decay: StrictFloat = Field(5e-4, ge=0)
    label_smoothing: StrictFloat = Field(0.0, ge=0, lt=1)
    augment: bool = False


class Rankcheck(Section):
    """Ground truth for the ranking: networks trained from scratch (stage `rankcheck`, off the default path)."""

    archs: StrictInt = Field(50, ge=4)  # distinct connected networks drawn at random, none sampled nor an anchor
    # Trainings per network: the truth is their mean, and seeds 0 and 1 measure its agreement with itself.
    seeds: StrictInt = Field(2, ge=2)
    epochs: PositiveInt = 2
    train_limit: Optional[PositiveInt] = 20000  # training images per network
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: StrictFloat = Field(0.9, ge=0, lt=1)
    weight_decay: StrictFloat = Field(5e-4, ge=0)
    bootstrap: PositiveInt = 1000  # resamples for the 95% interval of each Kendall tau
    # The end result: at these fractions of the space's FLOPs range, the search's choice and the
    # largest-FLOPs network under the same budget, both trained with this recipe. []: skip it.
    budgets: list[Annotated[float, Field(gt=0, le=1)]] = [0.25, 0.5, 0.75]


class Anchors(Section):
    """Networks trained alone for the fit (stage `anchors`): the real evidence the cheap scores are fused with.

    They are the first `n` connected samples, trained with the rank check's recipe (`rankcheck.*`, the
    truth's) into its committed table, so the fit learns the accuracy the rankings are judged on.
    """

    n: StrictInt = Field(8, ge=0)  # 0: none, the fit is the supernet-only fit of the paper; 8 win the rank check
    seeds: PositiveInt = 1         # trainings per anchor; its accuracy is their mean

    @field_validator("n")
    @classmethod
    def _enough(cls, n: int) -> int:
        if 0 < n < MIN_ANCHORS:
            raise ValueError(f"is {n}; the fit cross-validates its weights on the anchors and needs at least "
                             f"{MIN_ANCHORS}: set anchors.n to 0 (no anchors) or to {MIN_ANCHORS} or more")
        return n


class Mlflow(Section):
    experiment: str = "fitnas"
    # The registered model retraining adds a version to; null: the experiment's name.
    model_name: Optional[str] = None

    @field_validator("experiment")
    @classmethod
    def _named(cls, name: str) -> str:
        # MLflow refuses an empty name only when the first run is logged, after the stage's work.
        if not name.strip():
            raise ValueError("must not be empty: name the MLflow experiment the runs go to")
        return name

    @field_validator("model_name")
    @classmethod
    def _model_named(cls, name: Optional[str]) -> Optional[str]:
        # Refused here, not when retraining registers the model after its work.
        if name is not None and (not name.strip() or "/" in name or ":" in name):
            raise ValueError("must be null (the experiment's name) or a name without '/' or ':' "
                             "(models:/NAME/VERSION is how it is loaded)")
        return name

    def registered_name(self) -> str:
        """The registered model's name: model_name, else the experiment's."""
        return self.model_name or self.experiment


class Params(Section):
    # numpy and torch take seeds of at most 32 and 64 bits; stages add small offsets to it.
    seed: StrictInt = Field(0, ge=0, lt=2**31)
    # torch's CPU threads in every stage. Results depend on it (sums are split across threads
    # differently), so it is a param: the same value on the same kind of CPU gives the same bits.
    # 1 measured fastest on the 2-core machine this project runs on (README: Measured on the default).
    threads: Annotated[int, Strict(), annotated_types.Gt(0), annotated_types.Le(1024)] = 1  # at most 1024: torch would try to start them
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
    latency: Latency = Latency()
    retrain: Retrain = Retrain()
    rankcheck: Rankcheck = Rankcheck()
    anchors: Anchors = Anchors()
    mlflow: Mlflow = Mlflow()

    @model_validator(mode="after")
    def _consistent(self) -> "Params":
        """Combinations of settings that are each valid alone but cannot work together."""
        problems = []
        if self.data.format in ("idx", "imagefolder", "npz") and self.data.root is None:
            problems.append(
                f"data.format is {self.data.format!r} but data.root is null; point data.root at the dataset "
                f"or set data.format: auto to use Fashion-MNIST from the Debian package or a download"
            )
        kind, baselines = self.predictor.kind, self.predictor.baselines
        if kind in baselines:
            rest = [b for b in baselines if b != kind]
            problems.append(
                f"predictor.kind is {kind!r} and predictor.baselines {baselines} lists it too; a predictor is "
                f"not its own baseline: set predictor.baselines to [{', '.join(rest)}]"
            )
        repeated = sorted({b for b in baselines if baselines.count(b) > 1})
        if repeated:
            problems.append(f"predictor.baselines {baselines} lists {', '.join(repeated)} more than once")
        n = self.sample.n
        held_out = max(2, round(self.predictor.holdout * n))
        if n - held_out < MIN_FIT_SAMPLES:
            problems.append(
                f"sample.n = {n} with predictor.holdout = {self.predictor.holdout} leaves {n - held_out} samples "
                f"to fit on ({held_out} held out); the fit needs at least {MIN_FIT_SAMPLES}: raise sample.n "
                f"or lower predictor.holdout"
            )
        size = _space_size(self.space)
        if n > size:
            problems.append(
                f"sample.n = {n} is more than the {size} distinct networks of space {self.space.name!r}; "
                f"lower sample.n to at most {size}"
            )
        elif n + self.rankcheck.archs > size:
            problems.append(
                f"sample.n + rankcheck.archs = {n} + {self.rankcheck.archs} is more than the {size} distinct "
                f"networks of space {self.space.name!r} (the rank check trains networks that were not sampled); "
                f"lower one of them"
            )
        if self.anchors.n > n:
            problems.append(
                f"anchors.n = {self.anchors.n} is more than sample.n = {n}; the anchors are trained among the "
                f"sampled networks: lower anchors.n or raise sample.n"
            )
        calibration = self.sample.bn_batches * self.sample.bn_batch_size
        if self.data.train_limit is not None and calibration > self.data.train_limit:
            problems.append(
                f"sample.bn_batches x sample.bn_batch_size = {self.sample.bn_batches} x {self.sample.bn_batch_size} "
                f"= {calibration} calibration images, but data.train_limit = {self.data.train_limit} keeps only "
                f"{self.data.train_limit} training images; lower sample.bn_batch_size or sample.bn_batches, "
                f"or raise data.train_limit"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


MIN_FIT_SAMPLES = 10  # fewer sampled networks than this leave nothing to learn a ranking from
# The fewest stand-alone results a fit cross-validates its weights on: below it, a fold holds one or two networks.
MIN_ANCHORS = 8


def _space_size(settings: Space) -> int:
    """Distinct networks in the space the settings describe."""
    from fitnas import spaces  # spaces build torch modules: imported when a params file is checked, not with config

    return spaces.get(settings).size


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project folder (the one holding dvc.yaml and params.yaml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                          f"save it as UTF-8") from None
    except OSError as err:  # a folder, no permission
        raise ConfigError(f"{path} cannot be read ({err.strerror or type(err).__name__})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if raw is None:
        # Defaults would pass here, but DVC needs every key dvc.yaml lists: refuse it before DVC deletes outputs.
        raise ConfigError(f"{path} is empty; restore it (`git checkout {path}`) or copy one from profiles/")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} holds {type(raw).__name__} {_show(raw)[:80]}, not a mapping of keys (seed: 0, data: ...)")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(path, err)) from None


def _explain(path: Path, err: ValidationError) -> str:
    """One line per problem: the key, the value it has, and what it may be."""
    lines = [f"{path} has {err.error_count()} problem(s):"]
    for problem in err.errors():
        loc = problem["loc"]
        key = _dotted(loc) or "(top level)"
        value = problem.get("input")
        kind = problem["type"]
        if kind == "extra_forbidden":
            lines.append(f"  {key}: unknown key (set to {_show(value)}); {_suggest_key(loc)}")
        elif kind == "value_error" and not loc:  # Params._consistent: the message names its keys
            lines.extend(f"  {line}" for line in problem["msg"].removeprefix("Value error, ").splitlines())
        elif kind == "model_type":
            lines.append(f"  {key}: is {_show(value)}, but it is a section of keys: {_section_keys(loc)}")
        else:
            field = _field(loc)
            default = f" (default {_show(field.default)})" if field else ""
            if kind == "literal_error":
                message = f"must be one of {problem['ctx']['expected']}{default}{_suggest_value(value, problem)}"
            else:
                allowed = f"; allowed: {_describe(field.annotation, field.metadata)}" if field else ""
                message = problem["msg"].removeprefix("Value error, ").replace("Input should be", "must be") + allowed + default
            lines.append(f"  {key} = {_show(value)}: {message}")
    # `dvc exp run -S key=bad` leaves the bad value in the file: the way back.
    lines.append(f"  back to the committed values: git checkout {path} && dvc checkout")
    return "\n".join(lines)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The section model that holds the key at `loc`."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _field(loc: tuple):
    keys = tuple(part for part in loc if isinstance(part, str))  # list items: describe the list
    model = _model_at(keys)
    return model.model_fields.get(keys[-1]) if model and keys else None


def _section_keys(loc: tuple) -> str:
    field = _field(loc)
    model = field.annotation if field else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return ", ".join(model.model_fields)
    return "see params.yaml"


def _suggest_key(loc: tuple) -> str:
    model = _model_at(loc)
    if model is None:
        return "remove it"
    allowed = list(model.model_fields)
    where = f"in {_dotted(loc[:-1])}" if len(loc) > 1 else "at the top level"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    guess = f"did you mean {_dotted(loc[:-1] + (close[0],))}? " if close else ""
    return f"{guess}allowed keys {where}: {', '.join(allowed)}"


def _suggest_value(value: Any, problem: dict) -> str:
    """'did you mean' for a misspelt choice."""
    if not isinstance(value, str):
        return ""
    choices = [c.strip(" '") for c in problem["ctx"]["expected"].replace(" or ", ", ").split(",")]
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(annotation: Any, metadata: list | tuple = ()) -> str:
    """A type annotation in words: 'a whole number >= 1', 'null or a number in (0, 1)', ..."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _describe(base, [*extra, *metadata])
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = " or ".join(_describe(a, metadata) for a in args if a is not type(None))
        return f"null or {rest}" if type(None) in args else rest
    if origin is Literal:
        return "one of " + ", ".join(_show(c) for c in typing.get_args(annotation))
    if origin is list:
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    name = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(annotation, str(annotation))
    return name + _bounds(metadata)


def _bounds(metadata) -> str:
    low = high = None
    for m in metadata:
        for attr, strict, is_low in (("gt", True, True), ("ge", False, True), ("lt", True, False), ("le", False, False)):
            bound = getattr(m, attr, None) if isinstance(m, annotated_types.BaseMetadata) else None
            if bound is None:
                continue
            if is_low and (low is None or bound > low[0]):
                low = (bound, strict)
            if not is_low and (high is None or bound < high[0]):
                high = (bound, strict)
    if low and high:
        return f" in {'(' if low[1] else '['}{low[0]}, {high[0]}{')' if high[1] else ']'}"
    if low:
        return f" {'>' if low[1] else '>='} {low[0]}"
    if high:
        return f" {'<' if high[1] else '<='} {high[0]}"
    return ""


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

"""What every predictor shares: the interface, the registry, the training recipe, and the torch training loop.

A predictor (as in NASLib) is `fit` on architectures and their scores, then `query`d for any
architectures. Each predictor class registers itself under its `name` with `@register`, builds
itself from params.yaml's `predictor` section (`from_settings`) and saves and loads itself
(`state` / `from_state`): adding one is a new file in this package and one import in `__init__`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from fitnas.config import Predictor as PredictorSettings
from fitnas.distributed import torch_threads
from fitnas.spaces.base import SearchSpace

Arch = tuple[int, ...]
ProgressFn = Callable[[int, float], None]
ParamsFn = Callable[[Arch], float]  # arch -> millions of parameters (the space's cost model)

# Graphs (or feature rows) per forward pass at query time: large enough that
# the whole NAS-Bench-201 space takes a handful of passes.
QUERY_BATCH = 1024

# Early stopping: random held-out splits whose ranking curves are averaged, and the
# fewest held-out isomorphism classes worth measuring a ranking on.
PROBES = 2
MIN_HELD_OUT = 8


class Predictor(Protocol):
    """The interface every registered predictor follows."""

    name: str

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "Predictor": ...

    def query(self, archs: Sequence[Arch]) -> np.ndarray: ...

    @classmethod
    def from_settings(cls, settings: Any, space: SearchSpace, params_fn: ParamsFn, seed: int,
                      progress: ProgressFn | None = None) -> "Predictor": ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any], space: SearchSpace, params_fn: ParamsFn) -> "Predictor": ...


REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a predictor available by its `name` (params.yaml's predictor.kind)."""
    if cls.name in REGISTRY:
        raise ValueError(f"predictor kind {cls.name!r} is registered twice ({REGISTRY[cls.name].__name__}, {cls.__name__})")
    REGISTRY[cls.name] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """How the neural predictors train: one object instead of the same arguments in every constructor."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    hinge_weight: float
    ensemble: int
    validation: float

    @classmethod
    def from_settings(cls, settings: Any) -> "TrainingRecipe":
        """From params.yaml's `predictor` section (`fitnas.config.Predictor`)."""
        return cls(**{field.name: getattr(settings, field.name) for field in dataclasses.fields(cls)})

    @classmethod
    def default(cls) -> "TrainingRecipe":
        """The schema's defaults: the one place they are written is `fitnas.config.Predictor`."""
        return cls.from_settings(PredictorSettings())


# ----------------------------------------------------------------------------
# Target normalisation and loss, shared by the neural predictors


class RankNormalizer:
    """Maps scores to rank quantiles in [0, 1] for training, and predictions back to scores.

    Ranks because only the order of supernet accuracies is trusted, and a few
    outliers (cells whose output is always zero sit at chance accuracy) would
    otherwise dominate a squared loss. On noisy synthetic NAS-Bench-201
    targets (300 training cells, 3 seeds, two noise levels) rank targets tied
    z-scores for the graph network (Kendall tau within 0.01) and beat them for
    the MLP by 0.03-0.07.
    """

    def fit(self, y: Sequence[float]) -> "RankNormalizer":
        y = np.asarray(y, dtype=float)
        if len(y) < 2:
            raise ValueError(f"need at least 2 scored architectures to fit, got {len(y)}")
        self.sorted_y = np.sort(y)
        return self

    def transform(self, y: Sequence[float]) -> np.ndarray:
        ranks = stats.rankdata(np.asarray(y, dtype=float)) - 1.0  # tied scores share their mean rank
        return ranks / (len(ranks) - 1)

    def inverse(self, q: np.ndarray) -> np.ndarray:
        """Back through the training scores' quantiles (np.quantile), kept strictly increasing.

        Inside [0, 1] this interpolates between the sorted training scores.
        Outside it we extend linearly instead of clipping, and a tiny linear
        term lifts the flat steps that tied training scores create: clipping
        or flat steps would tie distinct predictions and lose their order
        among the best architectures, where the order matters most.
        """
        q = np.asarray(q, dtype=float)
        low, high = self.sorted_y[0], self.sorted_y[-1]
        span = high - low
        out = np.interp(q, np.linspace(0.0, 1.0, len(self.sorted_y)), self.sorted_y)
        out = np.where(q < 0.0, low + q * span, out)
        out = np.where(q > 1.0, high + (q - 1.0) * span, out)
        return out + 1e-6 * span * q


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, hinge_weight: float, margin: float = 0.1) -> torch.Tensor:
    """MSE plus a pairwise hinge that asks better architectures to score at least `margin` higher.

    The hinge looks at every ordered pair within the batch; the MSE keeps the
    predictions on the target scale so they can be mapped back to accuracies.
    """
    loss = nn.functional.mse_loss(pred, target)
    if hinge_weight > 0 and len(pred) > 1:
        better = target.unsqueeze(1) > target.unsqueeze(0)  # better[i, j]: i should outrank j
        if better.any():
            gaps = pred.unsqueeze(1) - pred.unsqueeze(0)
            loss = loss + hinge_weight * torch.relu(margin - gaps[better]).mean()
    return loss


def _auto_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def smooth(curve: Sequence[float], window: int = 9) -> np.ndarray:
    """Centred moving average: a few dozen held-out architectures give a jumpy curve."""
    curve = np.asarray(curve, dtype=float)
    kernel = np.ones(min(window, len(curve)))
    return np.convolve(curve, kernel, mode="same") / np.convolve(np.ones_like(curve), kernel, mode="same")


def pick_epochs(smoothed: Sequence[float], tolerance: float = 0.01) -> int:
    """The last epoch whose (smoothed) held-out score is within `tolerance` of the best.

    The latest near-best epoch rather than the best one because on a plateau
    longer training ranks the unseen space better, while after a real peak
    (noisy scores) the curve falls well below the tolerance and the choice
    stays early.
    """
    smoothed = np.asarray(smoothed, dtype=float)
    near_best = np.flatnonzero(smoothed >= smoothed.max() - tolerance)
    return int(near_best[-1]) + 1


class NeuralPredictor:
    """Training and querying shared by the torch predictors.

    Subclasses say how one canonical architecture is encoded, how encodings
    are batched, and which model to build; the ensemble, the normalisation,
    the loss and the training loop live here once.
    """

    def __init__(
        self,
        space: SearchSpace,
        recipe: TrainingRecipe | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: ProgressFn | None = None,
        **overrides: Any,
    ):
        """`recipe` (default: the schema's, `TrainingRecipe.default()`), with any of its fields overridden by keyword."""
        recipe = dataclasses.replace(recipe or TrainingRecipe.default(), **overrides)
        if recipe.ensemble < 1:
            raise ValueError(f"ensemble must be at least 1, got {recipe.ensemble}")
        if not 0.0 <= recipe.validation < 1.0:
            raise ValueError(f"validation must be in [0, 1), got {recipe.validation}")
        self.space = space
        self.recipe = recipe
        self.seed = seed
        self.device = _auto_device(device)
        self.progress = progress
        self.models: list[nn.Module] = []
        self.normalizer = RankNormalizer()
        self._cache: dict[Arch, Any] = {}

    # The recipe's fields, read where the training loop needs them.
    epochs = property(lambda self: self.recipe.epochs)
    lr = property(lambda self: self.recipe.lr)
    weight_decay = property(lambda self: self.recipe.weight_decay)
    batch_size = property(lambda self: self.recipe.batch_size)
    hinge_weight = property(lambda self: self.recipe.hinge_weight)
    ensemble = property(lambda self: self.recipe.ensemble)
    validation = property(lambda self: self.recipe.validation)

    @classmethod
    def from_settings(cls, settings: Any, space: SearchSpace, params_fn: ParamsFn, seed: int,
                      progress: ProgressFn | None = None) -> "NeuralPredictor":
        return cls(space, TrainingRecipe.from_settings(settings), seed=seed, progress=progress, **cls._model_settings(settings))

    # The model's own settings beyond the recipe: those read from the `predictor` section, and those
    # a saved predictor records to rebuild its networks (constructor keywords and attributes alike).
    MODEL_SETTINGS: tuple[str, ...] = ()
    STATE_KEYS: tuple[str, ...] = ()

    @classmethod
    def _model_settings(cls, settings: Any) -> dict[str, Any]:
        return {key: getattr(settings, key) for key in cls.MODEL_SETTINGS}

    @property
    def total_epochs(self) -> int:
        """The most epochs one fit trains: the early-stopping probes' and every ensemble member's.

        `progress(done, loss)` is called after each of them with `done` counting
        from 1; a fit whose probes choose fewer epochs ends below this total.
        """
        probes = PROBES if self.validation > 0 else 0
        return self.epochs * (self.ensemble + probes)

    # -- what subclasses provide

    def _encode(self, arch: Arch) -> Any:
        raise NotImplementedError

    def _collate(self, items: list[Any]) -> Any:
        raise NotImplementedError

    def _build_model(self) -> nn.Module:
        raise NotImplementedError

    # -- shared machinery

    def _encoded(self, archs: Sequence[Arch]) -> list[Any]:
        # Keyed by canonical arch: isomorphic cells share one encoding, and
        # therefore one prediction.
        items = []
        for arch in archs:
            key = self.space.canonical(tuple(arch))
            if key not in self._cache:
                self._cache[key] = self._encode(key)
            items.append(self._cache[key])
        return items

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "NeuralPredictor":
        if len(archs) != len(y):
            raise ValueError(f"{len(archs)} archs but {len(y)} scores")
        self.normalizer.fit(y)
        keys = [self.space.canonical(tuple(a)) for a in archs]
        items = self._encoded(keys)
        targets = torch.tensor(self.normalizer.transform(y), dtype=torch.float32, device=self.device)
        self.models = []
        self._epochs_done = 0
        # fork_rng: seeding must not disturb the caller's random state. One
        # thread: these models are so small that more threads only add overhead
        # (and thrash when another process holds the other cores).
        with torch.random.fork_rng(devices=self._rng_devices()), torch_threads(1 if self.device.type == "cpu" else None):
            self.fitted_epochs = self._choose_epochs(keys, items, targets) if self.validation > 0 else self.epochs
            everything = list(range(len(items)))
            for member in range(self.ensemble):
                model, _ = self._train_member(items, targets, everything, [], member, self.fitted_epochs)
                self.models.append(model)
        return self

    def _choose_epochs(self, keys: list[Arch], items: list[Any], targets: torch.Tensor) -> int:
        """How long to train: the epoch at which held-out ranking peaks, averaged over PROBES splits.

        This is how the fit adapts to the noise in the scores. On clean
        NAS-Bench-201 accuracies held-out ranking keeps improving for hundreds
        of epochs; on noisy ones it can peak within a few dozen, after which the
        network memorises the noise. Whole isomorphism classes go to one side
        of each split, so the held-out score never rewards memorising an
        encoding seen in training. The ensemble then trains on every sample.
        """
        classes = list(dict.fromkeys(keys))
        count = round(self.validation * len(classes))
        if count < MIN_HELD_OUT or len(classes) - count < 2:
            return self.epochs
        curves = []
        for probe in range(PROBES):
            rng = np.random.default_rng([self.seed, probe])
            held = {classes[i] for i in rng.choice(len(classes), count, replace=False)}
            train = [i for i, k in enumerate(keys) if k not in held]
            held_out = [i for i, k in enumerate(keys) if k in held]
            _, curve = self._train_member(items, targets, train, held_out, self.ensemble + probe, self.epochs)
            curves.append(curve)
        return pick_epochs(smooth(np.mean(curves, axis=0)))

    def _train_member(
        self,
        items: list[Any],
        targets: torch.Tensor,
        train: list[int],
        held_out: list[int],
        member: int,
        epochs: int,
    ) -> tuple[nn.Module, list[float]]:
        """Trains one network on `train`; returns it and its held-out Kendall tau after every epoch."""
        torch.manual_seed(self.seed * 1000 + member)
        model = self._build_model().to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        shuffle = torch.Generator().manual_seed(self.seed * 1000 + member)
        # Collated once: a step then only indexes the batch it needs.
        train_inputs = self._collate([items[i] for i in train]).to(self.device)
        train_targets = targets[train]
        held_inputs = self._collate([items[i] for i in held_out]).to(self.device) if held_out else None
        held_targets = targets[held_out].cpu().numpy()
        curve: list[float] = []
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(train), generator=shuffle).to(self.device)
            total = 0.0
            for start in range(0, len(train), self.batch_size):
                chosen = order[start : start + self.batch_size]
                pred = model(train_inputs[chosen])
                loss = ranking_loss(pred, train_targets[chosen], self.hinge_weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(chosen)
            if held_inputs is not None:
                model.eval()
                with torch.no_grad():
                    score = stats.kendalltau(model(held_inputs).cpu().numpy(), held_targets).statistic
                curve.append(float(score) if np.isfinite(score) else 0.0)
            self._epochs_done += 1
            if self.progress is not None:
                self.progress(self._epochs_done, total / len(train))
        model.eval()
        return model, curve

    @torch.no_grad()
    def query(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted scores, on the scale of the fitted y, for any archs (duplicates and isomorphs welcome)."""
        if not self.models:
            raise RuntimeError(f"{type(self).__name__}.query called before fit")
        keys = [self.space.canonical(tuple(a)) for a in archs]
        unique = list(dict.fromkeys(keys))
        items = self._encoded(unique)
        normalised = np.zeros(len(unique))
        for start in range(0, len(unique), QUERY_BATCH):
            inputs = self._collate(items[start : start + QUERY_BATCH]).to(self.device)
            # Batch once, then run every ensemble member on it.
            mean = sum(model(inputs) for model in self.models) / len(self.models)
            normalised[start : start + QUERY_BATCH] = mean.cpu().numpy()
        scores = dict(zip(unique, self.normalizer.inverse(normalised)))
        return np.array([scores[k] for k in keys], dtype=float)



    # -- saving

    def state(self) -> dict[str, Any]:
        """The fitted ensemble as plain tensors and numbers (loads with torch.load(weights_only=True))."""
        if not self.models:
            raise ValueError(f"{type(self).__name__}.state needs a fitted predictor")
        return {
            "kind": self.name,
            "space": self.space.NAME,
            "fitted_epochs": int(getattr(self, "fitted_epochs", self.epochs)),
            "sorted_y": torch.tensor(self.normalizer.sorted_y, dtype=torch.float64),
            "members": [{k: v.detach().cpu() for k, v in model.state_dict().items()} for model in self.models],
            **{key: getattr(self, key) for key in self.STATE_KEYS},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], space: SearchSpace, params_fn: ParamsFn) -> "NeuralPredictor":
        predictor = cls(space, device="cpu", **{key: state[key] for key in cls.STATE_KEYS})
        predictor.normalizer.sorted_y = state["sorted_y"].numpy()
        predictor.fitted_epochs = state["fitted_epochs"]
        for weights in state["members"]:
            model = predictor._build_model()
            model.load_state_dict(weights)
            predictor.models.append(model.eval())
        return predictor

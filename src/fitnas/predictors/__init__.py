"""Predictors that fit (noisy) accuracies of sampled architectures and rank the whole space.

Every predictor follows the same small interface (as in NASLib): `fit` on architectures and their
scores, then `query` any architectures for predicted scores on the same scale; it builds itself
from params.yaml's `predictor` section and saves and loads itself (`fitnas.predictors.base`).
The graph network (`GCNPredictor`) is the method of the paper; the others are baselines.

Adding a predictor: a new module here with a class decorated `@register` (see README, "Adding a
predictor"), imported below so that it registers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fitnas import checkpoints
from fitnas.errors import CheckpointError

from fitnas.predictors.base import (
    MIN_HELD_OUT,
    PROBES,
    QUERY_BATCH,
    REGISTRY,
    Arch,
    NeuralPredictor,
    ParamsFn,
    Predictor,
    ProgressFn,
    RankNormalizer,
    TrainingRecipe,
    pick_epochs,
    ranking_loss,
    register,
    smooth,
)
# Registration order is the order of KINDS (the benchmark's rows): the paper's predictor first.
from fitnas.predictors.gcn import BiGINLayer, DenseGraphs, GCNModel, GCNPredictor, path_counts  # isort: skip
from fitnas.predictors.mlp import MLPModel, MLPPredictor  # isort: skip
from fitnas.predictors.forest import RandomForestPredictor  # isort: skip
from fitnas.predictors.params import ParamsPredictor  # isort: skip
# Fuses a few true accuracies with cheap signals: the fit stage's choice when anchors exist.
from fitnas.predictors.multifidelity import MultiFidelityPredictor  # isort: skip
from fitnas.predictors.scoring import PredictorScorer, Scorer, scorer_for
from fitnas.spaces.base import SearchSpace

KINDS: tuple[str, ...] = tuple(REGISTRY)


def _cls(kind: str) -> type:
    if kind not in REGISTRY:
        raise ValueError(f"unknown predictor kind {kind!r}; valid kinds: {', '.join(REGISTRY)}")
    return REGISTRY[kind]


def make_predictor(kind: str, space: SearchSpace, params_fn: ParamsFn | None = None, **options: Any) -> Predictor:
    """Build a predictor by name; `options` go to its constructor, `params_fn` only to "params"."""
    cls = _cls(kind)
    if cls is ParamsPredictor:
        if params_fn is None:
            raise ValueError('the "params" predictor needs params_fn (arch -> parameter count)')
        return cls(space, params_fn, **options)
    return cls(space, **options)


def from_settings(kind: str, settings: Any, space: SearchSpace, params_fn: ParamsFn, seed: int,
                  progress: ProgressFn | None = None) -> Predictor:
    """A predictor configured by the `predictor` section of params.yaml (`fitnas.config.Predictor`).

    The one place settings become a predictor: the fit stage and bench/predictors.py both build
    theirs here, so the pipeline runs exactly what the benchmark measured. The MLP trains with the
    graph network's recipe (loss, optimiser, epochs, early stopping, ensemble); only the model differs.
    """
    return _cls(kind).from_settings(settings, space, params_fn, seed, progress)


def state(predictor: Predictor) -> dict[str, Any]:
    """A fitted predictor as plain tensors and numbers (loads with torch.load(weights_only=True))."""
    return predictor.state()


def load(saved: dict[str, Any], space: SearchSpace, params_fn: ParamsFn) -> Predictor:
    """The predictor `state` saved, ready to query; the space must be the one it was fitted on."""
    kind = saved.get("kind")
    if kind not in REGISTRY:
        raise ValueError(f"not a saved predictor (kind {kind!r}; known kinds: {', '.join(REGISTRY)})")
    if saved.get("space") != space.NAME:
        raise ValueError(f"the saved predictor was fitted on space {saved.get('space')!r}, not {space.NAME}: re-run the fit")
    return REGISTRY[kind].from_state(saved, space, params_fn)


def load_file(path: Path, space: SearchSpace, params_fn: ParamsFn) -> Predictor:
    """The predictor saved at `path` (the fit stage's), checked and ready to query."""
    saved = checkpoints.load(path, "fit", space=space.NAME, weights=None)
    try:
        return load(saved, space, params_fn)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path} does not fit this space ({err}); re-run `dvc repro fit` to recreate it") from None


# The graph network by its old names (benchmarks and tests save and load it directly).
def gcn_state(predictor: GCNPredictor) -> dict[str, Any]:
    if not isinstance(predictor, GCNPredictor) or not predictor.models:
        raise ValueError("gcn_state needs a fitted GCNPredictor")
    return predictor.state()


def load_gcn(saved: dict[str, Any], space: SearchSpace) -> GCNPredictor:
    if saved.get("kind") != "gcn":
        raise ValueError(f"not a saved graph network (kind {saved.get('kind')!r})")
    return load(saved, space, params_fn=lambda arch: 0.0)

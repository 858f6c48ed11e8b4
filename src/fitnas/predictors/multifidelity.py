"""A predictor that learns from many cheap scores and a few real trainings.

Low-fidelity signals (a supernet's inherited-weight scores, short-schedule
accuracies, any table column) are measured on many architectures but carry a
*systematic* error: they prefer some ops over others, and averaging more of
them does not remove it. A few stand-alone ("true") accuracies can correct it.
`MultiFidelityPredictor` fuses the two:

1. **Pre-train** one graph network per sampled low-fidelity signal
   (`fitnas.predictors.GCNPredictor`, the pipeline's recipe): an *expert* that
   knows the signal's structure over the whole space.
2. **Fine-tune** each expert on the K truths, two ways: the readout head
   only (`"head"`: the message-passing layers learned from many architectures
   which ops and paths matter; a few truths re-weight that: +0.01 at K=25 on
   NAS-Bench-201) and every weight at a lower learning rate (`"all"`; the two
   tie from K=50 on, bench/README.md). Each way is its own candidate, named
   `signal:head`, `signal:all`.
3. **Stack**: the fine-tuned experts, a graph network trained on the truths
   alone, and any free signals (FLOPs, params, zero-cost proxies: functions of
   the architecture) are combined by a weighted average of their quantiles.
   The epochs of every trained candidate and the weights are chosen by
   cross-validation on the K truths only (out-of-fold predictions, folds of
   whole isomorphism classes), never on anything else. A useless low signal
   gets weight 0 and the result falls back to the truth-only fit.

Same `fit`/`query` interface as `fitnas.predictors`, plus the low-fidelity
data: `fit(archs, y, low={"supernet": (archs, scores)}, free={"params": fn})`.
`state()` / `MultiFidelityPredictor.load(state, space, free)` save and restore
a fitted predictor as plain tensors and numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fitnas.config import MIN_ANCHORS
from fitnas.distributed import torch_threads
from fitnas.metrics import kendall_tau
from fitnas.predictors.base import ParamsFn, ProgressFn, RankNormalizer, TrainingRecipe, ranking_loss, register
from fitnas.predictors.gcn import DenseGraphs, GCNModel, GCNPredictor

Arch = tuple[int, ...]
LowData = Mapping[str, tuple[Sequence[Arch], Sequence[float]]]
FreeSignals = Mapping[str, Callable[[Arch], float]]

TRUTH = "truth"  # the candidate trained on the K truths alone
MIN_TRUTHS = MIN_ANCHORS  # the fewest truths worth cross-validating weights on (config checks anchors.n by it)
TUNES = ("head", "all")
# Fine-tuning learning rates: the head trains at the usual rate from its pre-trained start; every
# weight at once needs a lower one or it forgets what the low fidelity taught (prototype on seeds 0-1).
TUNE_LR = {"head": 1e-3, "all": 3e-4}
TUNE_EPOCHS = {"head": (25, 50, 100, 200), "all": (10, 30, 60, 100)}
FUSIONS = ("stack", "finetune")
# Weight grid of the stack: steps of 1/STEPS on the simplex. Coarse on purpose:
# K out-of-fold predictions cannot resolve finer weights.
STEPS = 10


def _quantile_map(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where values fall among the sorted reference values, in [0, 1] (linear beyond its ends)."""
    ref = np.sort(np.asarray(reference, dtype=float))
    if len(ref) < 2 or ref[0] == ref[-1]:
        return np.full(len(values), 0.5)
    q = np.interp(values, ref, np.linspace(0.0, 1.0, len(ref)))
    span = ref[-1] - ref[0]
    q = np.where(values < ref[0], (values - ref[0]) / span, q)
    return np.where(values > ref[-1], 1.0 + (values - ref[-1]) / span, q)


def _ranks01(values: np.ndarray) -> np.ndarray:
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return order / max(1, len(values) - 1)


def simplex_weights(columns: np.ndarray, y: np.ndarray, steps: int = STEPS) -> tuple[np.ndarray, float]:
    """The weights (>= 0, summing to 1, on a grid of 1/steps) whose weighted rank average best ranks y.

    `columns` is [n, components] of out-of-fold predictions. Kendall tau of
    the weighted sum of each column's ranks against y decides; ties go to the
    first combination found, which puts more weight on earlier columns (order
    the columns by preference: the fine-tuned experts first).
    """
    n, m = columns.shape
    ranks = np.column_stack([_ranks01(columns[:, j]) for j in range(m)])
    best_w, best_tau = None, -np.inf
    for combo in itertools.product(range(steps, -1, -1), repeat=m - 1):
        last = steps - sum(combo)
        if last < 0:
            continue
        w = np.array([*combo, last], dtype=float) / steps
        tau = kendall_tau(ranks @ w, y)
        if tau > best_tau + 1e-12:
            best_w, best_tau = w, tau
    return best_w, float(best_tau)


@register
class MultiFidelityPredictor:
    """Fit on a few truths plus cheap signals on many architectures; query any architectures.

    The graph-network settings (`hidden` ... `validation`) are the pipeline's
    `predictor` section and build the pre-trained experts exactly as the fit
    stage builds its graph network. `tune` lists the ways of fine-tuning
    ("head": the readout only; "all": every weight), each at `tune_lr[mode]`, for a number
    of epochs chosen among `tune_epochs[mode]` by cross-validation; the truth-only
    candidate chooses among `truth_epochs` the same way. `fusion="stack"`
    weighs every candidate and free signal by cross-validation;
    `fusion="finetune"` keeps only the fine-tuned experts (weighted among
    themselves when there are several). `folds` splits of the truths, at most
    one per isomorphism class.
    """

    name = "multifidelity"

    def __init__(
        self,
        space: ModuleType,
        fusion: str = "stack",
        tune: Sequence[str] = TUNES,
        tune_lr: Mapping[str, float] | None = None,
        tune_epochs: Mapping[str, Sequence[int]] | None = None,
        truth_epochs: Sequence[int] = (50, 100, 200),
        folds: int = 5,
        keep_all: bool = False,
        hidden: int = 64,
        layers: int = 4,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        batch_size: int = 32,
        hinge_weight: float = 0.25,
        ensemble: int = 3,
        validation: float = 0.2,
        seed: int = 0,
        device: str | torch.device | None = None,
    ):
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
        tune = (tune,) if isinstance(tune, str) else tuple(tune)
        if not tune or set(tune) - set(TUNES):
            raise ValueError(f"unknown tune {tune!r}; valid: {', '.join(TUNES)}")
        if folds < 2:
            raise ValueError(f"folds must be at least 2, got {folds}")
        self.space = space
        self.fusion, self.tune = fusion, tune
        self.tune_lr = {**TUNE_LR, **(tune_lr or {})}
        self.tune_epochs = {m: tuple(sorted(int(e) for e in grid)) for m, grid in {**TUNE_EPOCHS, **(tune_epochs or {})}.items()}
        self.truth_epochs = tuple(sorted(int(e) for e in truth_epochs))
        self.folds = folds
        self.keep_all = keep_all
        self.gcn = dict(hidden=hidden, layers=layers, epochs=epochs, lr=lr, weight_decay=weight_decay,
                        batch_size=batch_size, hinge_weight=hinge_weight, ensemble=ensemble, validation=validation)
        self.seed = seed
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_node_types = len(space.NODE_TYPES)
        self.experts: dict[str, GCNPredictor] = {}  # pre-trained, one per low signal
        self._expert_keys: dict[str, str] = {}
        self._graph_cache: dict[Arch, tuple[torch.Tensor, torch.Tensor]] = {}
        self.members: dict[str, list[nn.Module]] = {}  # fitted candidates (fine-tuned experts, TRUTH)
        self.free: dict[str, Callable[[Arch], float]] = {}
        self.components: list[str] = []  # stacked columns, in order
        self.oof: dict[str, np.ndarray] = {}  # each component's out-of-fold values on the truths
        self._y: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.references: dict[str, np.ndarray] = {}  # each component's values on the fit's archs
        self.normalizer = RankNormalizer()
        self.report: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Any, space: ModuleType, params_fn: ParamsFn, seed: int,
                      progress: ProgressFn | None = None) -> "MultiFidelityPredictor":
        """Built by the `predictor` section: its experts and truth-only network train with the graph network's recipe.

        `progress` is not reported: the fit is a few short trainings, none long enough to watch.
        """
        recipe = TrainingRecipe.from_settings(settings)
        # `epochs` is the most any network trains: the truth-only network chooses among fractions of it.
        truth_epochs = sorted({max(1, recipe.epochs // 4), max(1, recipe.epochs // 2), recipe.epochs})
        return cls(space, hidden=settings.hidden, layers=settings.layers, seed=seed, truth_epochs=truth_epochs,
                   **dataclasses.asdict(recipe))

    @classmethod
    def from_state(cls, state: dict[str, Any], space: ModuleType, params_fn: ParamsFn) -> "MultiFidelityPredictor":
        """The registry's loader. Of the free signals only params can be supplied again, so the pipeline weighs no other."""
        return cls.load(state, space, free={"params": params_fn})

    # -- encodings

    def _graphs(self, archs: Sequence[Arch]) -> DenseGraphs:
        items = []
        for arch in archs:
            key = self.space.canonical(tuple(arch))
            if key not in self._graph_cache:
                graph = self.space.graph(key)
                x = nn.functional.one_hot(torch.tensor(graph.node_types), self.num_node_types).float()
                adj = torch.zeros(len(graph.node_types), len(graph.node_types))
                for src, dst in graph.edges:
                    adj[dst, src] = 1.0  # as GCNPredictor encodes: adj[i, j] = 1 for data j -> i
                self._graph_cache[key] = (x, adj)
            items.append(self._graph_cache[key])
        return DenseGraphs.collate(items).to(self.device)

    # -- pre-training

    @staticmethod
    def _key(archs: Sequence[Arch], values: Sequence[float]) -> str:
        digest = hashlib.sha256(repr([tuple(a) for a in archs]).encode())
        digest.update(np.asarray(values, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def pretrain(self, low: LowData) -> "MultiFidelityPredictor":
        """Fit one graph-network expert per low-fidelity signal; an expert already fitted on the same data is kept.

        `fit` calls this; calling it first lets several fits (say, for
        several K) share one pre-training.
        """
        for name, (archs, values) in low.items():
            if name == TRUTH:
                raise ValueError(f"low-fidelity signal name {TRUTH!r} is reserved")
            if len(archs) != len(values):
                raise ValueError(f"low signal {name!r}: {len(archs)} archs but {len(values)} values")
            key = self._key(archs, values)
            if self._expert_keys.get(name) == key:
                continue
            expert = GCNPredictor(self.space, seed=self.seed, device=self.device, **self.gcn)
            self.experts[name] = expert.fit(list(archs), list(values))
            self._expert_keys[name] = key
        for name in set(self.experts) - set(low):
            del self.experts[name], self._expert_keys[name]
        return self

    def use_expert(self, name: str, expert: GCNPredictor, archs: Sequence[Arch], values: Sequence[float]) -> None:
        """Take an already fitted graph network as the expert of low signal `name` measured as (archs, values).

        For a benchmark that pre-trains once per low-fidelity sample in another
        process (`fitnas.predictors.gcn_state` / `load_gcn`) and fits many K.
        """
        if not expert.models:
            raise ValueError("use_expert needs a fitted GCNPredictor")
        self.experts[name] = expert
        self._expert_keys[name] = self._key(archs, values)

    # -- training one candidate

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        signal, _, mode = name.rpartition(":")
        return signal, mode

    def _start(self, name: str, member: int) -> nn.Module:
        if name == TRUTH:
            torch.manual_seed(self.seed * 1000 + 500 + member)
            return GCNModel(self.num_node_types, self.gcn["hidden"], self.gcn["layers"]).to(self.device)
        signal, _ = self._split(name)
        return copy.deepcopy(self.experts[signal].models[member]).to(self.device)

    def _trainable(self, name: str, model: nn.Module) -> list[nn.Parameter]:
        if name == TRUTH or self._split(name)[1] == "all":
            return list(model.parameters())
        # The readout: the MLP head of GCNModel, after the message passing.
        return list(model.head.parameters())

    def _train(self, name: str, member: int, graphs: DenseGraphs, targets: torch.Tensor,
               checkpoints: Sequence[int], probe: DenseGraphs | None = None) -> tuple[nn.Module, list[np.ndarray]]:
        """Train one member of candidate `name`; its predictions on `probe` after each checkpoint epoch."""
        model = self._start(name, member)
        lr = self.gcn["lr"] if name == TRUTH else self.tune_lr[self._split(name)[1]]
        optimizer = torch.optim.Adam(self._trainable(name, model), lr=lr, weight_decay=self.gcn["weight_decay"])
        shuffle = torch.Generator().manual_seed(self.seed * 1000 + member)
        outputs, batch = [], self.gcn["batch_size"]
        for epoch in range(1, max(checkpoints) + 1):
            model.train()
            order = torch.randperm(len(targets), generator=shuffle).to(self.device)
            for start in range(0, len(targets), batch):
                chosen = order[start : start + batch]
                loss = ranking_loss(model(graphs[chosen]), targets[chosen], self.gcn["hinge_weight"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if probe is not None and epoch in checkpoints:
                model.eval()
                with torch.no_grad():
                    outputs.append(model(probe).cpu().numpy())
        model.eval()
        return model, outputs

    def _epochs_of(self, name: str) -> tuple[int, ...]:
        return self.truth_epochs if name == TRUTH else self.tune_epochs[self._split(name)[1]]

    # -- fitting

    def _fold_ids(self, keys: list[Arch]) -> np.ndarray:
        classes = list(dict.fromkeys(keys))
        rng = np.random.default_rng([self.seed, 15])
        order = rng.permutation(len(classes))
        folds = min(self.folds, len(classes))
        fold_of = {classes[c]: i % folds for i, c in enumerate(order)}
        return np.array([fold_of[k] for k in keys])

    def fit(self, archs: Sequence[Arch], y: Sequence[float], low: LowData | None = None,
            free: FreeSignals | None = None) -> "MultiFidelityPredictor":
        """Fit on `archs` with true scores `y`, low-fidelity samples `low` and free signals `free`.

        `low` maps a signal's name to (archs, values) measured on (many) other
        architectures; `free` maps a name to a function arch -> value that
        any architecture can be scored with (params, FLOPs, a zero-cost
        proxy). Without `low` the result is the truth-only graph network
        (and the free signals, if cross-validation finds they help).
        """
        if len(archs) != len(y):
            raise ValueError(f"{len(archs)} archs but {len(y)} scores")
        y = np.asarray(y, dtype=float)
        self.normalizer.fit(y)
        self.pretrain(low or {})
        self.free = dict(free or {})
        keys = [self.space.canonical(tuple(a)) for a in archs]
        graphs = self._graphs(keys)
        trained = [f"{signal}:{mode}" for signal in self.experts for mode in self.tune]
        trained += [TRUTH] if self.fusion == "stack" or not self.experts else []
        free_names = list(self.free) if self.fusion == "stack" else []

        # Out-of-fold predictions of every candidate at every checkpoint (one member each: cheap).
        fold = self._fold_ids(keys)
        oof = {name: np.zeros((len(self._epochs_of(name)), len(y))) for name in trained}
        with torch.random.fork_rng(), torch_threads(1 if self.device.type == "cpu" else None):
            for f in range(fold.max() + 1):
                train, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
                if len(train) < 2:
                    continue
                targets = torch.tensor(RankNormalizer().fit(y[train]).transform(y[train]),
                                       dtype=torch.float32, device=self.device)
                for name in trained:
                    _, outs = self._train(name, 0, graphs[torch.as_tensor(train)], targets,
                                          self._epochs_of(name), graphs[torch.as_tensor(held)])
                    for c, out in enumerate(outs):
                        oof[name][c, held] = out
            chosen = {}
            for name in trained:
                taus = [kendall_tau(oof[name][c], y) for c in range(len(self._epochs_of(name)))]
                best = int(np.argmax(taus))
                chosen[name] = (self._epochs_of(name)[best], taus[best], oof[name][best])

            columns = [chosen[name][2] for name in trained]
            columns += [np.array([float(self.free[n](k)) for k in keys]) for n in free_names]
            self.components = trained + free_names
            if len(self.components) == 1:
                self.weights, cv_tau = np.ones(1), chosen[trained[0]][1]
            else:
                self.weights, cv_tau = simplex_weights(np.column_stack(columns), y)

            # Final members on every truth: every trained candidate when `keep_all` (so that
            # `query_with` can weigh any of them), else those that carry weight.
            targets = torch.tensor(self.normalizer.transform(y), dtype=torch.float32, device=self.device)
            self.members = {}
            for name, w in zip(self.components, self.weights):
                if name in chosen and (w > 0 or self.keep_all):
                    epochs = chosen[name][0]
                    self.members[name] = [self._train(name, m, graphs, targets, [epochs])[0]
                                          for m in range(self.gcn["ensemble"])]
        # Each component's quantiles are taken against its values on the truths' archs.
        self.references = {name: self._component(name, keys) for name in self.components
                           if name in self.members or name in self.free}
        self.oof = dict(zip(self.components, columns))
        self._y = y
        self.report = {
            "components": self.components,
            "weights": [float(w) for w in self.weights],
            "cv_kendall_tau": float(cv_tau),
            "epochs": {name: int(chosen[name][0]) for name in chosen},
            "cv_tau_each": {name: float(chosen[name][1]) for name in chosen},
            "truths": int(len(y)),
            "low": {name: len(self.experts[name].normalizer.sorted_y) for name in self.experts},
        }
        return self

    # -- querying

    @torch.no_grad()
    def _component(self, name: str, keys: Sequence[Arch]) -> np.ndarray:
        if name in self.free:
            return np.array([float(self.free[name](k)) for k in keys])
        unique = list(dict.fromkeys(keys))
        out = np.zeros(len(unique))
        for start in range(0, len(unique), 1024):
            graphs = self._graphs(unique[start : start + 1024])
            models = self.members[name]
            out[start : start + 1024] = (sum(m(graphs) for m in models) / len(models)).cpu().numpy()
        values = dict(zip(unique, out))
        return np.array([values[k] for k in keys])

    def query(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted scores, on the scale of the fitted y, for any archs (isomorphic cells get one value)."""
        if self.weights is None:
            raise RuntimeError("MultiFidelityPredictor.query called before fit")
        return self.query_with(dict(zip(self.components, self.weights)), archs)

    def query_with(self, weights: Mapping[str, float], archs: Sequence[Arch]) -> np.ndarray:
        """Like `query`, with other weights for the fitted components (say, one fine-tuned expert alone)."""
        keys = [self.space.canonical(tuple(a)) for a in archs]
        total = np.zeros(len(keys))
        for name, w in weights.items():
            if w == 0:
                continue
            if name not in self.references:
                raise ValueError(f"component {name!r} was not kept; fitted: {sorted(self.references)}")
            total += w * _quantile_map(self.references[name], self._component(name, keys))
        return self.normalizer.inverse(total / sum(weights.values()))

    def choose_weights(self, names: Sequence[str]) -> dict[str, float]:
        """The stack's weights had it weighed only `names`, from the same out-of-fold values (no refit)."""
        if self._y is None:
            raise RuntimeError("choose_weights needs a fitted predictor")
        if len(names) == 1:
            return {names[0]: 1.0}
        w, _ = simplex_weights(np.column_stack([self.oof[n] for n in names]), self._y)
        return dict(zip(names, (float(v) for v in w)))

    # -- saving

    def state(self) -> dict[str, Any]:
        """A fitted predictor as plain tensors and numbers; free signals are saved by name only."""
        if self.weights is None:
            raise ValueError("state() needs a fitted MultiFidelityPredictor")
        return {
            "kind": self.name,
            "space": self.space.NAME,
            "num_node_types": self.num_node_types,
            "hidden": self.gcn["hidden"],
            "layers": self.gcn["layers"],
            "components": list(self.components),
            "weights": torch.tensor(self.weights, dtype=torch.float64),
            "references": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.references.items()},
            "sorted_y": torch.tensor(self.normalizer.sorted_y, dtype=torch.float64),
            "members": {k: [{p: t.detach().cpu() for p, t in m.state_dict().items()} for m in ms]
                        for k, ms in self.members.items()},
            "report": self.report,
        }

    @classmethod
    def load(cls, state: dict[str, Any], space: ModuleType, free: FreeSignals | None = None) -> "MultiFidelityPredictor":
        """The predictor `state()` saved, ready to query; `free` must supply the free signals it weighs."""
        if state.get("kind") != cls.name:
            raise ValueError(f"not a saved multi-fidelity predictor (kind {state.get('kind')!r})")
        if state["space"] != space.NAME or state["num_node_types"] != len(space.NODE_TYPES):
            raise ValueError(f"the saved predictor was fitted on space {state['space']!r}; this is {space.NAME!r}")
        predictor = cls(space, hidden=state["hidden"], layers=state["layers"], device="cpu")
        predictor.components = list(state["components"])
        predictor.weights = state["weights"].numpy()
        predictor.references = {k: v.numpy() for k, v in state["references"].items()}
        predictor.normalizer.sorted_y = state["sorted_y"].numpy()
        predictor.report = dict(state["report"])
        for name, weights in state["members"].items():
            models = []
            for w in weights:
                model = GCNModel(predictor.num_node_types, state["hidden"], state["layers"])
                model.load_state_dict(w)
                models.append(model.eval())
            predictor.members[name] = models
        needed = [n for n in predictor.references if n not in predictor.members]
        missing = [n for n in needed if n not in (free or {})]
        if missing:
            raise ValueError(f"the saved predictor weighs free signal(s) {missing}: pass them as free=")
        predictor.free = {n: (free or {})[n] for n in needed}
        return predictor


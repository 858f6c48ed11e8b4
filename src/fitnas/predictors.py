"""Predictors that fit (noisy) accuracies of sampled architectures and rank the whole space.

Every predictor follows the same small interface (as in NASLib): `fit` on
architectures and their scores, then `query` any architectures for predicted
scores on the same scale. The graph network (`GCNPredictor`) is the method of
the paper; the others are baselines.

Predictors take the search-space module (e.g. `fitnas.spaces.nb201`) as a
constructor argument and only use its `canonical`, `graph`, `onehot` and
`NODE_TYPES`, so another space with the same functions plugs in unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from scipy import stats
from sklearn.ensemble import RandomForestRegressor
from torch import nn
from torch_geometric.nn import DenseGINConv

from fitnas.distributed import torch_threads

Arch = tuple[int, ...]
ProgressFn = Callable[[int, float], None]

# Graphs (or feature rows) per forward pass at query time: large enough that
# the whole NAS-Bench-201 space takes a handful of passes.
QUERY_BATCH = 1024

# Early stopping: random held-out splits whose ranking curves are averaged, and the
# fewest held-out isomorphism classes worth measuring a ranking on.
PROBES = 2
MIN_HELD_OUT = 8


class Predictor(Protocol):
    name: str

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "Predictor": ...

    def query(self, archs: Sequence[Arch]) -> np.ndarray: ...


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


class _NeuralPredictor:
    """Training and querying shared by the torch predictors.

    Subclasses say how one canonical architecture is encoded, how encodings
    are batched, and which model to build; the ensemble, the normalisation,
    the loss and the training loop live here once.
    """

    name = "neural"

    def __init__(
        self,
        space: ModuleType,
        epochs: int,
        lr: float,
        weight_decay: float,
        batch_size: int,
        hinge_weight: float,
        ensemble: int,
        validation: float,
        seed: int,
        device: str | torch.device | None,
        progress: ProgressFn | None,
    ):
        if ensemble < 1:
            raise ValueError(f"ensemble must be at least 1, got {ensemble}")
        if not 0.0 <= validation < 1.0:
            raise ValueError(f"validation must be in [0, 1), got {validation}")
        self.space = space
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.hinge_weight = hinge_weight
        self.ensemble = ensemble
        self.validation = validation
        self.seed = seed
        self.device = _auto_device(device)
        self.progress = progress
        self.models: list[nn.Module] = []
        self.normalizer = RankNormalizer()
        self._cache: dict[Arch, Any] = {}

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

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "_NeuralPredictor":
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


# ----------------------------------------------------------------------------
# Graph network


@dataclass(frozen=True)
class DenseGraphs:
    """Small graphs padded to one node count, as the dense graph network reads them.

    Cells have a handful of nodes, so padded tensors cost nothing and turn
    message passing into batched matrix products: on 2 CPU cores a training
    step is several times faster than sparse scatter over a collated
    `torch_geometric.data.Batch`. Indexing selects graphs, so a training set is
    collated once and each step takes its rows.
    """

    x: torch.Tensor  # [graphs, nodes, node types]: one-hot node types, zero rows for padding
    adj: torch.Tensor  # [graphs, nodes, nodes]: adj[g, i, j] = 1 when data flows from node j to node i
    mask: torch.Tensor  # [graphs, nodes]: 1 for real nodes
    output: torch.Tensor  # [graphs]: index of each graph's output node
    paths: torch.Tensor  # [graphs, node types]: log(1 + input-to-output paths through nodes of each type)

    @staticmethod
    def collate(graphs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> "DenseGraphs":
        """From (one-hot node types [n, T], adjacency [n, n]) pairs of any sizes."""
        size = max(x.shape[0] for x, _ in graphs)
        x = torch.zeros(len(graphs), size, graphs[0][0].shape[1])
        adj = torch.zeros(len(graphs), size, size)
        mask = torch.zeros(len(graphs), size)
        for g, (types, edges) in enumerate(graphs):
            n = types.shape[0]
            x[g, :n], adj[g, :n, :n], mask[g, :n] = types, edges, 1.0
        output = mask.sum(1).long() - 1  # the output node is each graph's last
        return DenseGraphs(x, adj, mask, output, path_counts(x, adj, output))

    def __getitem__(self, index: torch.Tensor) -> "DenseGraphs":
        return DenseGraphs(self.x[index], self.adj[index], self.mask[index], self.output[index], self.paths[index])

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device) -> "DenseGraphs":
        return DenseGraphs(*(t.to(device) for t in (self.x, self.adj, self.mask, self.output, self.paths)))


def path_counts(x: torch.Tensor, adj: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """log(1 + number of input-to-output paths through the nodes of each type), per graph.

    Node 0 is the input. Paths from the input reach node i by summing over its
    predecessors (adj[i, j] = 1 for j -> i); n rounds cover any DAG of n nodes.
    """
    graphs, size, _ = x.shape
    rows = torch.arange(graphs)
    start = torch.zeros(graphs, size)
    start[:, 0] = 1.0
    end = torch.zeros(graphs, size)
    end[rows, output] = 1.0
    into, out_of = start.clone(), end.clone()
    for _ in range(size):
        into = start + (adj @ into.unsqueeze(-1)).squeeze(-1)
        out_of = end + (adj.transpose(1, 2) @ out_of.unsqueeze(-1)).squeeze(-1)
    through = into * out_of  # paths input -> node -> output
    return torch.log1p((through.unsqueeze(-1) * x).sum(1))


class BiGINLayer(nn.Module):
    """One round of message passing along the data flow and against it.

    The cell is a DAG, so forward messages tell a node what feeds it and
    backward messages what it feeds (e.g. whether it reaches the output). Two
    GIN convolutions with their own weights keep the two directions apart,
    which a single conv on an undirected graph could not.
    """

    def __init__(self, hidden: int):
        super().__init__()
        # One linear map inside each GIN, not GIN's usual 2-layer MLP: it
        # ranked as well in our checks (Kendall tau within 0.005 on clean and
        # noisy synthetic targets) and trains ~1.7x faster on CPU. The ReLU
        # below and the MLP head supply the nonlinearity.
        self.forward_conv = DenseGINConv(nn.Linear(hidden, hidden))
        self.backward_conv = DenseGINConv(nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor, adj: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.forward_conv(x, adj, mask) + self.backward_conv(x, adj.transpose(1, 2), mask)
        return torch.relu(out) + x  # residual: keeps each node's own type visible in deep layers


class GCNModel(nn.Module):
    """Node-type embedding, bidirectional GIN layers, readout, MLP head to one score per graph."""

    def __init__(self, num_node_types: int, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.embed = nn.Linear(num_node_types, hidden)
        self.layers = nn.ModuleList(BiGINLayer(hidden) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(2 * hidden + num_node_types, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, graphs: DenseGraphs) -> torch.Tensor:
        mask = graphs.mask.unsqueeze(-1)
        x = self.embed(graphs.x) * mask  # padding nodes stay zero through every layer
        for layer in self.layers:
            x = layer(x, graphs.adj, graphs.mask)
        # The output node has seen the whole cell through the forward messages;
        # the mean adds a summary of all ops; the path counts say how much of the
        # signal each kind of op carries, which four rounds of messages only
        # approximate (+0.002 Kendall tau at N=156, bench/README.md).
        mean = x.sum(1) / mask.sum(1)
        output_nodes = x[torch.arange(len(x), device=x.device), graphs.output]
        return self.head(torch.cat([mean, output_nodes, graphs.paths], dim=1)).squeeze(-1)


class GCNPredictor(_NeuralPredictor):
    """The paper's predictor: a graph network on the op-as-node graph of each canonical cell.

    Trains `ensemble` networks (seeds seed*1000 + member) on rank-normalised
    targets with `ranking_loss`, and averages their predictions. How many
    epochs (at most `epochs`) is chosen by held-out ranking on `validation` of
    the samples (see `_choose_epochs`); `progress(done, loss)` is called after
    every epoch trained. The defaults are params.yaml's (`fitnas.config.Predictor`),
    the configuration that won bench/predictors.py.
    """

    name = "gcn"

    def __init__(
        self,
        space: ModuleType,
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
        progress: ProgressFn | None = None,
    ):
        super().__init__(
            space, epochs, lr, weight_decay, batch_size, hinge_weight, ensemble, validation, seed, device, progress
        )
        self.hidden = hidden
        self.layers = layers
        self.num_node_types = len(space.NODE_TYPES)

    def _encode(self, arch: Arch) -> tuple[torch.Tensor, torch.Tensor]:
        graph = self.space.graph(arch)
        x = nn.functional.one_hot(torch.tensor(graph.node_types), self.num_node_types).float()
        adj = torch.zeros(len(graph.node_types), len(graph.node_types))
        for src, dst in graph.edges:
            adj[dst, src] = 1.0
        return x, adj

    def _collate(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> DenseGraphs:
        return DenseGraphs.collate(items)

    def _build_model(self) -> nn.Module:
        return GCNModel(self.num_node_types, self.hidden, self.layers)


# ----------------------------------------------------------------------------
# Baselines


class MLPModel(nn.Module):
    """Fully connected layers with ReLU, ending in one score per row."""

    def __init__(self, num_features: int, hidden: Sequence[int] = (128, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


class MLPPredictor(_NeuralPredictor):
    """A plain MLP on the one-hot op encoding, trained exactly like the graph network."""

    name = "mlp"

    def __init__(
        self,
        space: ModuleType,
        hidden: Sequence[int] = (128, 128),
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        batch_size: int = 32,
        hinge_weight: float = 0.25,
        ensemble: int = 3,
        validation: float = 0.2,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: ProgressFn | None = None,
    ):
        super().__init__(
            space, epochs, lr, weight_decay, batch_size, hinge_weight, ensemble, validation, seed, device, progress
        )
        self.hidden = tuple(hidden)
        self.num_features = len(space.onehot(space.parse(space.EXAMPLE)))

    def _encode(self, arch: Arch) -> torch.Tensor:
        return torch.tensor(self.space.onehot(arch), dtype=torch.float32)

    def _collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)

    def _build_model(self) -> nn.Module:
        return MLPModel(self.num_features, self.hidden)


class RandomForestPredictor:
    """sklearn random forest on the one-hot op encoding (raw scores: trees do not care about scale)."""

    name = "rf"

    def __init__(self, space: ModuleType, n_estimators: int = 300, seed: int = 0):
        self.space = space
        self.model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=-1)

    def _features(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.space.onehot(tuple(a)) for a in archs], dtype=float)

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "RandomForestPredictor":
        if len(archs) != len(y):
            raise ValueError(f"{len(archs)} archs but {len(y)} scores")
        self.model.fit(self._features(archs), np.asarray(y, dtype=float))
        return self

    def query(self, archs: Sequence[Arch]) -> np.ndarray:
        if len(archs) == 0:
            return np.zeros(0)
        return self.model.predict(self._features(archs))


class ParamsPredictor:
    """Ranks by parameter count: the "bigger is better" baseline every predictor should beat.

    Counts the canonical cell, whose dead edges are gone, so that isomorphic
    cells get one count.
    """

    name = "params"

    def __init__(self, space: ModuleType, param_count: Callable[[Arch], float]):
        self.space = space
        self.param_count = param_count

    def fit(self, archs: Sequence[Arch], y: Sequence[float]) -> "ParamsPredictor":
        return self  # nothing to learn

    def query(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([float(self.param_count(self.space.canonical(tuple(a)))) for a in archs], dtype=float)


KINDS = ("gcn", "mlp", "rf", "params")


def make_predictor(
    kind: str, space: ModuleType, params_fn: Callable[[Arch], float] | None = None, **options: Any
) -> Predictor:
    """Build a predictor by name; `options` go to its constructor, `params_fn` only to "params"."""
    if kind == "gcn":
        return GCNPredictor(space, **options)
    if kind == "mlp":
        return MLPPredictor(space, **options)
    if kind == "rf":
        return RandomForestPredictor(space, **options)
    if kind == "params":
        if params_fn is None:
            raise ValueError('the "params" predictor needs params_fn (arch -> parameter count)')
        return ParamsPredictor(space, params_fn, **options)
    raise ValueError(f"unknown predictor kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def from_settings(
    kind: str,
    settings: Any,
    space: ModuleType,
    params_fn: Callable[[Arch], float],
    seed: int,
    progress: ProgressFn | None = None,
) -> Predictor:
    """A predictor configured by the `predictor` section of params.yaml (`fitnas.config.Predictor`).

    The one place settings become a predictor: the fit stage and
    bench/predictors.py both build theirs here, so the pipeline runs exactly
    what the benchmark measured. The MLP trains with the graph network's
    recipe (loss, optimiser, epochs, early stopping, ensemble); only the model
    differs.
    """
    if kind == "params":
        return make_predictor(kind, space, params_fn)
    if kind == "rf":
        return make_predictor(kind, space, seed=seed)
    recipe = dict(
        epochs=settings.epochs,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
        hinge_weight=settings.hinge_weight,
        validation=settings.validation,
        ensemble=settings.ensemble,
        seed=seed,
        progress=progress,
    )
    if kind == "gcn":
        return make_predictor(kind, space, hidden=settings.hidden, layers=settings.layers, **recipe)
    return make_predictor(kind, space, **recipe)


# ----------------------------------------------------------------------------
# Saving a fitted graph network


def gcn_state(predictor: GCNPredictor) -> dict[str, Any]:
    """A fitted graph network as plain tensors and numbers (loads with torch.load(weights_only=True)).

    A space too large to tabulate keeps the predictor itself, and the search
    stage and `fitnas lookup` load it to score candidates.
    """
    if not isinstance(predictor, GCNPredictor) or not predictor.models:
        raise ValueError("gcn_state needs a fitted GCNPredictor")
    return {
        "kind": "gcn",
        "space": predictor.space.NAME,
        "num_node_types": predictor.num_node_types,
        "hidden": predictor.hidden,
        "layers": predictor.layers,
        "fitted_epochs": int(getattr(predictor, "fitted_epochs", predictor.epochs)),
        "sorted_y": torch.tensor(predictor.normalizer.sorted_y, dtype=torch.float64),
        "members": [{k: v.detach().cpu() for k, v in model.state_dict().items()} for model in predictor.models],
    }


def load_gcn(state: dict[str, Any], space: ModuleType) -> GCNPredictor:
    """The predictor `gcn_state` saved, ready to query; the space must be the one it was fitted on."""
    if state.get("kind") != "gcn":
        raise ValueError(f"not a saved graph network (kind {state.get('kind')!r})")
    if state["num_node_types"] != len(space.NODE_TYPES) or state["space"] != space.NAME:
        raise ValueError(
            f"the saved predictor was fitted on space {state['space']!r} with {state['num_node_types']} node types; "
            f"this space ({space.NAME}) has {len(space.NODE_TYPES)}: re-run the fit"
        )
    predictor = GCNPredictor(space, hidden=state["hidden"], layers=state["layers"], device="cpu")
    predictor.normalizer.sorted_y = state["sorted_y"].numpy()
    predictor.fitted_epochs = state["fitted_epochs"]
    for weights in state["members"]:
        model = predictor._build_model()
        model.load_state_dict(weights)
        predictor.models.append(model.eval())
    return predictor

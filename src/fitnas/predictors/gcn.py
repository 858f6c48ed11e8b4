"""The paper's predictor: a graph network on each canonical architecture's op-as-node graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch_geometric.nn import DenseGINConv

from fitnas.pathscore import PathGCN, is_path_space
from fitnas.predictors.base import Arch, NeuralPredictor, PredictorSettings, ProgressFn, TrainingRecipe, register
from fitnas.predictors.scoring import PredictorScorer, Scorer
from fitnas.spaces.base import SearchSpace


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


@register
class GCNPredictor(NeuralPredictor):
    """The paper's predictor: a graph network on the op-as-node graph of each canonical cell.

    Trains `ensemble` networks (seeds seed*1000 + member) on rank-normalised
    targets with `ranking_loss`, and averages their predictions. How many
    epochs (at most `epochs`) is chosen by held-out ranking on `validation` of
    the samples (see `_choose_epochs`); `progress(done, loss)` is called after
    every epoch trained. The defaults are params.yaml's (`fitnas.config.Predictor`),
    the configuration that won bench/predictors.py.
    """

    name = "gcn"

    MODEL_SETTINGS = ("hidden", "layers")
    STATE_KEYS = ("hidden", "layers", "num_node_types")

    def __init__(
        self,
        space: SearchSpace,
        recipe: TrainingRecipe | None = None,
        hidden: int | None = None,
        layers: int | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: ProgressFn | None = None,
        num_node_types: int | None = None,
        **overrides: Any,
    ):
        super().__init__(space, recipe, seed, device, progress, **overrides)
        defaults = PredictorSettings()
        self.hidden = defaults.hidden if hidden is None else hidden
        self.layers = defaults.layers if layers is None else layers
        self.num_node_types = len(space.NODE_TYPES)
        if num_node_types is not None and num_node_types != self.num_node_types:
            raise ValueError(
                f"the saved predictor was fitted on a space with {num_node_types} node types; "
                f"this space ({space.NAME}) has {self.num_node_types}: re-run the fit"
            )

    def scorer(self, space: SearchSpace) -> Scorer:
        """What drives the search of a large space: on chain spaces (path graphs) the exact fast path
        of `fitnas.pathscore`, which scores a whole segment's combinations at once; else the generic adapter."""
        if is_path_space(space):
            return PathGCN(self, space)
        return PredictorScorer(self, space)

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

"""The fitted graph network, evaluated fast on the path graphs of a chain space.

A chain space's graph is a path (input, one node per layer, output), so one
round of message passing is a shift: a node hears its predecessor along the
data flow and its successor against it. `PathGCN` computes exactly what
`fitnas.predictors.GCNModel` computes on those graphs (a test checks it), in
two ways:

* `score(archs)`: a batch of whole architectures, as tensors [batch, nodes, hidden].
* `score_segment(context, start, stop)`: every combination of the layers in
  [start, stop) with the other layers fixed to `context`, without building the
  combinations. After k rounds a node depends only on the layers within k hops,
  so each node's features are kept as a tensor with one axis per segment layer
  it can see (size 1 for the others) and broadcasting does the combining: a
  layer far from the segment is computed once, not once per candidate. A
  7-layer segment (823,543 candidates) takes about a second per ensemble member
  on 2 CPU cores instead of minutes.

Scores are on the predictor's normalised scale (rank quantiles of the fitted
supernet scores, averaged over the ensemble); `to_accuracy` maps them back.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Sequence

import numpy as np
import torch

from typing import TYPE_CHECKING

from fitnas.spaces.base import SearchSpace

if TYPE_CHECKING:  # only for annotations: the graph network's module imports this one
    from fitnas.predictors.gcn import GCNPredictor


def is_path_space(space: SearchSpace, probes: int = 3) -> bool:
    """Whether the space's graphs are paths (input, one node per slot, output), which PathGCN needs."""
    rng = random.Random(0)
    for arch in [space.parse(space.EXAMPLE)] + [space.random_cell(rng) for _ in range(probes)]:
        graph = space.graph(arch)
        n = space.num_slots + 2
        if len(graph.node_types) != n or sorted(graph.edges) != [(i, i + 1) for i in range(n - 1)]:
            return False
    return True


def _slot_types(space: SearchSpace) -> torch.Tensor:
    """Node type of every (slot, op) as the space's graph encoding numbers them; -1 where a slot does not allow the op."""
    example = list(space.parse(space.EXAMPLE))
    types = torch.full((space.num_slots, len(space.OPS)), -1, dtype=torch.long)
    for slot, choices in enumerate(space.choices):
        for op in choices:
            arch = example.copy()
            arch[slot] = op
            types[slot, op] = space.graph(tuple(arch)).node_types[slot + 1]
    return types


class _Weights:
    """One ensemble member's parameters, arranged for path graphs.

    A round of message passing computes, per node, relu(x_i W_self + x_(i-1) W_fwd
    + x_(i+1) W_bwd + b) + x_i, where W_self folds the two GIN convolutions' (1 + eps)
    self terms; one matrix product [W_self | W_fwd | W_bwd] gives all three terms.
    """

    def __init__(self, model: torch.nn.Module):
        self.embed = (model.embed.weight.T + model.embed.bias).detach()  # [node types, hidden]: one-hot rows
        hidden = self.embed.shape[1]
        self.layers, self.convs = [], []
        for layer in model.layers:
            forward, backward = layer.forward_conv, layer.backward_conv
            wf, wb = forward.nn.weight.detach().T, backward.nn.weight.detach().T
            w_self = float(1 + forward.eps) * wf + float(1 + backward.eps) * wb
            weight = torch.cat([w_self, wf, wb], dim=1).T.contiguous()  # for F.linear: [3 hidden, hidden]
            bias = torch.cat([(forward.nn.bias + backward.nn.bias).detach(), torch.zeros(2 * hidden)])
            self.layers.append((weight, bias))
            self.convs.append((wf, wb, float(1 + forward.eps), float(1 + backward.eps), bias[:hidden]))
        first, last = model.head[0], model.head[2]
        self.head_mean = first.weight[:, :hidden].detach().T
        self.head_out = first.weight[:, hidden : 2 * hidden].detach().T
        # The readout's path counts: on a path graph every node lies on the one
        # input-to-output path, and a chain space types nodes by (layer, op), so
        # each present type counts log(1 + 1) and the term is a sum over nodes.
        self.head_paths = math.log(2) * first.weight[:, 2 * hidden :].detach().T  # [node types, hidden]
        self.head_bias = first.bias.detach()
        self.out_weight = last.weight.detach().T
        self.out_bias = last.bias.detach()

    def round(self, level: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(self term with bias, message to the successor, message to the predecessor) of features x."""
        weight, bias = self.layers[level]
        out = torch.nn.functional.linear(x, weight, bias)
        return out.chunk(3, dim=-1)


class PathGCN:
    """A fitted `GCNPredictor`'s ensemble on a chain space (`fitnas.spaces.mobilenet.ChainSpace`)."""

    def __init__(self, predictor: "GCNPredictor", space: SearchSpace):
        if not predictor.models:
            raise ValueError("PathGCN needs a fitted GCNPredictor")
        self.space = space
        self.normalizer = predictor.normalizer
        self.members = [_Weights(model.cpu().eval()) for model in predictor.models]
        # Node type of (layer, op), as the space's graph encoding numbers them.
        if not is_path_space(space):
            raise ValueError(f"PathGCN needs a space whose graphs are paths; {space.NAME}'s are not")
        self.types = _slot_types(space)
        allowed = self.types[self.types >= 0].tolist()
        if len(set(allowed) | {0, 1}) != len(allowed) + 2:
            raise ValueError("PathGCN needs a node type per (layer, op): the path counts are then sums over nodes")
        self.evaluations = 0  # architectures scored so far (for benchmarks)

    def to_accuracy(self, scores: np.ndarray) -> np.ndarray:
        """Normalised scores back on the scale of the supernet accuracies the predictor was fitted to."""
        return self.normalizer.inverse(np.asarray(scores, dtype=float))

    def _node_types(self, archs: torch.Tensor) -> torch.Tensor:
        inner = self.types[torch.arange(archs.shape[1]), archs]  # [batch, layers]
        ends = torch.zeros(len(archs), 1, dtype=torch.long)
        return torch.cat([ends, inner, ends + 1], dim=1)

    @torch.no_grad()
    def score(self, archs: np.ndarray | torch.Tensor, batch: int = 4096) -> np.ndarray:
        """Normalised scores of whole architectures, an integer array [n, layers]."""
        archs = torch.as_tensor(np.asarray(archs), dtype=torch.long)
        if archs.ndim != 2 or archs.shape[1] != self.space.num_slots:
            raise ValueError(f"expected archs of shape [n, {self.space.num_slots}], got {tuple(archs.shape)}")
        out = np.empty(len(archs))
        for start in range(0, len(archs), batch):
            types = self._node_types(archs[start : start + batch])
            total = sum(self._score_graphs(w, types) for w in self.members)
            out[start : start + batch] = (total / len(self.members)).numpy()
        self.evaluations += len(archs)
        return out

    @staticmethod
    def _score_graphs(w: _Weights, types: torch.Tensor) -> torch.Tensor:
        x = w.embed[types]  # [batch, nodes, hidden]
        for wf, wb, ef, eb, bias in w.convs:
            # GIN along the data flow (node i hears i - 1) and against it (i hears i + 1).
            along, against = ef * x, eb * x
            along[:, 1:] += x[:, :-1]
            against[:, :-1] += x[:, 1:]
            z = torch.addmm(bias, along.flatten(0, 1), wf).addmm_(against.flatten(0, 1), wb)
            x = torch.relu_(z).view_as(x).add_(x)
        paths = w.head_paths[types].sum(1)
        hidden = torch.relu(x.mean(1) @ w.head_mean + x[:, -1] @ w.head_out + paths + w.head_bias)
        return (hidden @ w.out_weight + w.out_bias).squeeze(-1)

    @torch.no_grad()
    def score_segment(self, context: Sequence[int], start: int, stop: int, chunk: int = 20000) -> np.ndarray:
        """Normalised scores of every choice of layers [start, stop) with the others as in `context`.

        Returns an array with one axis per segment layer, indexed by position in
        `space.choices[layer]`; `.ravel()` orders candidates row-major (the last
        layer fastest). The middle layers are looped over so that each pass holds
        about `chunk` candidates and its tensors stay in cache: fixing a middle
        layer changes neither which nodes see the whole segment nor the total work.
        """
        context = torch.as_tensor(list(context), dtype=torch.long)
        choices = [torch.tensor(self.space.choices[layer]) for layer in range(start, stop)]
        dims = [len(c) for c in choices]
        middle = sorted(range(len(dims)), key=lambda j: abs(j - (len(dims) - 1) / 2))
        looped: list[int] = []
        while math.prod(dims) // math.prod(dims[j] for j in looped) > chunk and len(looped) < len(dims) - 1:
            looped.append(middle[len(looped)])
        out = torch.zeros(dims)
        context_types = self._node_types(context.unsqueeze(0))[0]
        outside = [i for i in range(len(context_types)) if not start < i <= stop]  # nodes of the fixed layers
        for w in self.members:
            constant = self._context_features(w, context)
            fixed_paths = w.head_paths[context_types[outside]].sum(0)
            for index in itertools.product(*(range(dims[j]) for j in looped)):
                part = list(choices)
                where: list = [slice(None)] * len(dims)
                for j, i in zip(looped, index):
                    part[j] = choices[j][i : i + 1]
                    where[j] = slice(i, i + 1)
                out[tuple(where)] += self._segment_member(w, constant, start, part, fixed_paths)
        out /= len(self.members)
        self.evaluations += out.numel()
        return out.numpy()

    def _context_features(self, w: _Weights, context: torch.Tensor) -> list[torch.Tensor]:
        """Every node's features after each round for the context architecture alone: [round][nodes, hidden]."""
        x = w.embed[self._node_types(context.unsqueeze(0))][0]
        features = [x]
        for level in range(len(w.layers)):
            z, to_next, to_previous = w.round(level, x)
            z = z.clone()
            z[1:] += to_next[:-1]
            z[:-1] += to_previous[1:]
            x = torch.relu_(z).add_(x)
            features.append(x)
        return features

    def _segment_member(
        self, w: _Weights, constant: list[torch.Tensor], start: int, choices: list[torch.Tensor], fixed_paths: torch.Tensor
    ) -> torch.Tensor:
        """One member's scores over the product of `choices` for layers start, start + 1, ...

        Node features are tensors with one axis per segment layer (size 1 where
        a node cannot see that layer yet); after k rounds only nodes within k
        hops of the segment differ from the context's, so only those are computed.
        """
        dims = [len(c) for c in choices]
        hidden = w.embed.shape[1]
        ones = [1] * len(dims)
        nodes = constant[0].shape[0]
        first, last = start + 1, start + len(dims)  # the segment's node indices

        def as_constant(vector: torch.Tensor) -> torch.Tensor:
            return vector.view(*ones, hidden)

        x: dict[int, torch.Tensor] = {}
        for j in range(len(dims)):
            shape = ones.copy()
            shape[j] = dims[j]
            x[first + j] = w.embed[self.types[start + j, choices[j]]].view(*shape, hidden)
        for level in range(len(w.layers)):
            low, high = max(first - level - 1, 0), min(last + level + 1, nodes - 1)
            terms = {}
            for i in range(max(low - 1, 0), min(high + 1, nodes - 1) + 1):
                terms[i] = w.round(level, x[i] if i in x else as_constant(constant[level][i]))
            new = {}
            for i in range(low, high + 1):
                # The messages span node i's new receptive field, which holds its own
                # old one: one allocation, the rest in place.
                parts = [terms[i][0]] + ([terms[i - 1][1]] if i > 0 else []) + ([terms[i + 1][2]] if i < nodes - 1 else [])
                parts.sort(key=lambda t: -t.numel())
                z = parts[0] + parts[1] if len(parts) > 1 else parts[0].clone()
                for extra in parts[2:]:
                    z = _add(z, extra)
                previous = x[i] if i in x else as_constant(constant[level][i])
                new[i] = _add(torch.relu_(z), previous)
            x = new
        # Readout: the mean over nodes; nodes the segment never reached are the context's.
        final = constant[-1]
        outside = final.sum(0) - sum(final[i] for i in x)
        total = as_constant(outside)
        for xi in sorted(x.values(), key=lambda t: t.numel()):
            total = _add(total, xi) if total.data_ptr() != outside.data_ptr() else total + xi
        out_node = x.get(nodes - 1, as_constant(final[nodes - 1]))
        # The path counts' term: the fixed layers' part, plus one per segment layer along its own axis.
        paths = as_constant(fixed_paths + w.head_bias)
        for j in range(len(dims)):
            shape = ones.copy()
            shape[j] = dims[j]
            paths = paths + w.head_paths[self.types[start + j, choices[j]]].view(*shape, hidden)
        h = torch.relu_(_add(total @ (w.head_mean / nodes), out_node @ w.head_out + paths))
        out = (h @ w.out_weight + w.out_bias).squeeze(-1)
        return out.expand(*dims)


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b, in place in a when a already has the broadcast shape (a must be a fresh tensor)."""
    if a.shape == torch.broadcast_shapes(a.shape, b.shape):
        return a.add_(b)
    return a + b


def segment_size(space, start: int, stop: int) -> int:
    return math.prod(len(space.choices[layer]) for layer in range(start, stop))

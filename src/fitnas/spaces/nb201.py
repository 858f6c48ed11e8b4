"""The NAS-Bench-201 cell space: 4 nodes, 6 edges, 5 ops per edge (15,625 cells).

An architecture is a tuple of 6 op indices, one per edge, in the order the
benchmark's string lists them: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
The string form is the benchmark's own:
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.

Many cells compute the same function (a `none` edge cuts a path, a skip merges
two nodes, two intermediate nodes can swap). Every cell maps to one canonical
member of its class, the member with the fewest ops, so that the pipeline
samples, scores, predicts and builds each distinct network exactly once.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fitnas.costs import AdditiveCost, CostModel, count_flops, count_params
from fitnas.spaces.base import ArchError, Graph

NAME = "nb201"
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from)
NUM_NODES = 4
NONE, SKIP = 0, 1

Arch = tuple[int, ...]

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
FORM = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|  with op one of " + ", ".join(OPS)

# Node types of the graph encoding: one node per op that carries data, plus
# the cell's input and output.
NODE_TYPES: tuple[str, ...] = ("input", "output") + OPS[1:]


# ----------------------------------------------------------------------------
# Strings


def to_str(arch: Arch) -> str:
    groups = []
    for node in range(1, NUM_NODES):
        items = [f"{OPS[arch[e]]}~{src}" for e, (dst, src) in enumerate(EDGES) if dst == node]
        groups.append("|" + "|".join(items) + "|")
    return "+".join(groups)


def parse(text: str) -> Arch:
    """Parse a benchmark cell string strictly; raise ArchError showing the expected form."""

    def fail(problem: str) -> ArchError:
        return ArchError(f"bad NAS-Bench-201 arch {text!r}: {problem}.\n  expected: {FORM}\n  example:  {EXAMPLE}")

    if not isinstance(text, str):
        raise fail("not a string")
    groups = text.strip().split("+")
    if len(groups) != NUM_NODES - 1:
        raise fail(f"{len(groups)} node groups separated by '+', expected {NUM_NODES - 1}")
    arch: list[int] = []
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise fail(f"node group {node} ({group!r}) must start and end with '|'")
        items = group[1:-1].split("|")
        if len(items) != node:
            raise fail(f"node {node} needs {node} input edge(s), got {len(items)}")
        for src, item in enumerate(items):
            op, sep, index = item.partition("~")
            if not sep or op not in OPS:
                raise fail(f"unknown op {op!r} in {item!r}")
            if index != str(src):
                raise fail(f"edge {item!r} of node {node} must come from node {src} ('{op}~{src}')")
            arch.append(OPS.index(op))
    return tuple(arch)


# ----------------------------------------------------------------------------
# Equivalence classes


def _function_key(arch: Arch) -> tuple:
    """What the cell computes, up to renaming its weights; () when the output is always zero.

    Each parametrised op on a live edge is an *instance* with its own weights; a
    node's value is a multiset of atoms ('x' or an instance). A skip passes its
    source's atoms on, a none edge or any edge out of an always-zero node adds
    nothing, and an avg-pool (no weights) of the same value is one instance
    wherever it appears. Two cells are the same network when their instance
    graphs, pruned to what reaches the output, are isomorphic.
    """
    instances: list[tuple[str, tuple]] = []  # (op, input value as sorted (atom, count) pairs)
    values: list[dict] = [{"x": 1}]
    for node in range(1, NUM_NODES):
        value: dict = {}
        for e, (dst, src) in enumerate(EDGES):
            if dst != node or arch[e] == NONE or not values[src]:
                continue
            if arch[e] == SKIP:
                atoms = values[src]
            else:
                instance = (OPS[arch[e]], tuple(sorted(values[src].items(), key=repr)))
                if instance[0] == "avg_pool_3x3" and instance in instances:
                    index = instances.index(instance)
                else:
                    instances.append(instance)
                    index = len(instances) - 1
                atoms = {index: 1}
            for atom, count in atoms.items():
                value[atom] = value.get(atom, 0) + count
        values.append(value)
    output = values[-1]
    if not output:
        return ()
    live = _reaching(output, instances)
    return _canonical_labelling(output, instances, live)


def _reaching(output: dict, instances: list) -> list[int]:
    """Instances the output depends on, in creation (topological) order."""
    needed, stack = set(), [a for a in output if a != "x"]
    while stack:
        i = stack.pop()
        if i not in needed:
            needed.add(i)
            stack.extend(a for a, _ in instances[i][1] if a != "x")
    return sorted(needed)


def _canonical_labelling(output: dict, instances: list, live: list[int]) -> tuple:
    # Order instances by what they compute (their ancestry); only instances with equal
    # ancestry can be swapped, so try those permutations and keep the smallest encoding.
    ancestry: dict[int, str] = {}
    for i in live:
        op, inputs = instances[i]
        parts = sorted(("x" if a == "x" else ancestry[a]) + f"*{n}" for a, n in inputs)
        ancestry[i] = f"{op}({','.join(parts)})"
    groups: dict[str, list[int]] = {}
    for i in live:
        groups.setdefault(ancestry[i], []).append(i)
    labels = sorted(groups)
    best = None
    for choice in itertools.product(*(itertools.permutations(groups[label]) for label in labels)):
        order = [i for group in choice for i in group]
        name = {i: k for k, i in enumerate(order)}
        name["x"] = -1

        def encode(value) -> tuple:
            return tuple(sorted((name[a], n) for a, n in value))

        code = (
            tuple((instances[i][0], encode(instances[i][1])) for i in order),
            encode(output.items()),
        )
        if best is None or code < best:
            best = code
    return best


def _order(arch: Arch) -> tuple:
    return (sum(op != NONE for op in arch), arch)


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[dict[Arch, Arch], tuple[Arch, ...]]:
    every = [tuple(a) for a in _all_cells()]
    best: dict[tuple[str, ...], Arch] = {}
    for arch in every:
        key = _function_key(arch)
        if key not in best or _order(arch) < _order(best[key]):
            best[key] = arch
    canonical_of = {arch: best[_function_key(arch)] for arch in every}
    return canonical_of, tuple(sorted(set(best.values())))


def _all_cells():
    return itertools.product(range(len(OPS)), repeat=len(EDGES))


def canonical(arch: Arch) -> Arch:
    """The representative of the arch's class: fewest ops, then smallest op indices."""
    return _classes()[0][tuple(arch)]


def all_cells() -> list[Arch]:
    """Every cell of the space, isomorphic duplicates included (15,625)."""
    return [tuple(a) for a in _all_cells()]


def distinct() -> tuple[Arch, ...]:
    """One canonical arch per distinct network, sorted."""
    return _classes()[1]


def class_sizes() -> dict[Arch, int]:
    sizes: dict[Arch, int] = {}
    for rep in _classes()[0].values():
        sizes[rep] = sizes.get(rep, 0) + 1
    return sizes


DISTINCT_NETWORKS = 5260  # len(distinct()), known without building the classes (tests check it)


def sample(n: int, rng: random.Random) -> list[Arch]:
    """n distinct networks drawn uniformly without replacement."""
    pool = distinct()
    if n > len(pool):
        raise ValueError(f"asked for {n} distinct networks but the space has only {len(pool)}")
    return rng.sample(pool, n)


def random_cell(rng: random.Random) -> Arch:
    """A uniformly random cell (not canonicalised), as single-path supernet training samples them."""
    return tuple(rng.randrange(len(OPS)) for _ in EDGES)


# ----------------------------------------------------------------------------
# Encodings for predictors


def graph(arch: Arch) -> Graph:
    """Op-as-node graph of the canonical cell: input, one node per non-none edge, output.

    Data flows input -> ops leaving node 0; op (j->i) -> ops leaving node i;
    ops entering node 3 -> output.
    """
    arch = canonical(arch)
    ops = [(e, dst, src) for e, (dst, src) in enumerate(EDGES) if arch[e] != NONE]
    node_types = [NODE_TYPES.index("input")] + [NODE_TYPES.index(OPS[arch[e]]) for e, _, _ in ops]
    node_types.append(NODE_TYPES.index("output"))
    out_index = len(node_types) - 1
    edges: list[tuple[int, int]] = []
    for k, (_, dst, src) in enumerate(ops, start=1):
        if src == 0:
            edges.append((0, k))
        if dst == NUM_NODES - 1:
            edges.append((k, out_index))
        for k2, (_, dst2, src2) in enumerate(ops, start=1):
            if src2 == dst:
                edges.append((k, k2))
    return Graph(node_types=node_types, edges=edges)


def onehot(arch: Arch) -> list[float]:
    """6 edges x 5 ops one-hot of the canonical cell (30 features)."""
    arch = canonical(arch)
    vec = [0.0] * (len(EDGES) * len(OPS))
    for e, op in enumerate(arch):
        vec[e * len(OPS) + op] = 1.0
    return vec


# ----------------------------------------------------------------------------
# Networks


@dataclass(frozen=True)
class NetworkShape:
    """The macro skeleton around the cell: stem, 3 stages of `cells` cells, residual reductions."""

    channels: int = 16
    cells: int = 5
    in_channels: int = 3
    num_classes: int = 10


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: int, channels: int, affine: bool = True) -> nn.Module:
    name = OPS[op]
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise AssertionError(name)


class ResidualReduction(nn.Module):
    """The benchmark's residual block between stages: halves the resolution, doubles the width."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, affine)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class Cell(nn.Module):
    """A fixed cell: only the ops of the given arch exist (none edges are skipped entirely)."""

    def __init__(self, arch: Arch, channels: int):
        super().__init__()
        self.arch = tuple(arch)
        self.edges = nn.ModuleDict(
            {f"{dst}_{src}": make_op(op, channels) for (dst, src), op in zip(EDGES, self.arch) if op != NONE}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_cell(x, self.arch, lambda e, key: self.edges[key])


class SuperCell(nn.Module):
    """Every candidate op on every edge, sharing weights across all sub-networks."""

    def __init__(self, channels: int):
        super().__init__()
        # BN without affine weights in the supernet, as single-path NAS does: the
        # statistics differ per path and are recalibrated per sub-network anyway.
        self.edges = nn.ModuleDict(
            {
                f"{dst}_{src}": nn.ModuleList([make_op(op, channels, affine=False) for op in range(len(OPS))])
                for dst, src in EDGES
            }
        )
        self.arch: Arch = (SKIP,) * len(EDGES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_cell(x, self.arch, lambda e, key: self.edges[key][self.arch[e]])


def _run_cell(x: torch.Tensor, arch: Arch, op_for) -> torch.Tensor:
    nodes = [x]
    for node in range(1, NUM_NODES):
        total = None
        for e, (dst, src) in enumerate(EDGES):
            if dst != node or arch[e] == NONE:
                continue
            out = op_for(e, f"{dst}_{src}")(nodes[src])
            total = out if total is None else total + out
        nodes.append(total if total is not None else torch.zeros_like(x))
    return nodes[-1]


class Network(nn.Module):
    """Stem, three stages of cells with residual reductions, BN-ReLU, global pool, classifier."""

    def __init__(self, shape: NetworkShape, make_cell, affine: bool = True):
        super().__init__()
        c = shape.channels
        layers: list[nn.Module] = []
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c, affine))
                c *= 2
            layers.extend(make_cell(c) for _ in range(shape.cells))
        self.stem = nn.Sequential(
            nn.Conv2d(shape.in_channels, shape.channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(shape.channels, affine=affine),
        )
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c, affine=affine), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, shape.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))


def network_shape(settings, in_channels: int, num_classes: int) -> NetworkShape:
    """The shape params.yaml asks for: `settings` is its supernet or final section (channels, cells)."""
    return NetworkShape(settings.channels, settings.cells, in_channels, num_classes)


def build(arch: Arch, shape: NetworkShape) -> Network:
    """A stand-alone network of the given cell, as retraining trains it."""
    return Network(shape, lambda c: Cell(arch, c))


class SuperNetwork(Network):
    """The weight-sharing supernet; `set_arch` picks the path every cell runs."""

    def __init__(self, shape: NetworkShape):
        super().__init__(shape, SuperCell, affine=False)

    def set_arch(self, arch: Arch) -> None:
        for module in self.modules():
            if isinstance(module, SuperCell):
                module.arch = tuple(arch)


def build_supernet(shape: NetworkShape) -> SuperNetwork:
    return SuperNetwork(shape)


# ----------------------------------------------------------------------------
# Costs


def cost_model(shape: NetworkShape, input_size: int, elementwise: bool = False) -> CostModel:
    """FLOPs (MACs) and params of every cell, in millions, for one network shape and input size.

    Each edge's op is its own module, so a network's cost is the skeleton's plus one term per
    (edge, op); both are counted on built networks (the skeleton with all-none cells, and with a
    single op on a single edge). `elementwise` counts as NAS-Bench-201's published figures do.
    """
    input_shape = (shape.in_channels, input_size, input_size)

    def measure(arch: Arch) -> tuple[float, float]:
        net = build(arch, shape)
        return count_flops(net, input_shape, elementwise) / 1e6, count_params(net) / 1e6

    empty = (NONE,) * len(EDGES)
    base_flops, base_params = measure(empty)
    edge_flops, edge_params = [], []
    for e in range(len(EDGES)):
        flops_row, params_row = [0.0], [0.0]
        for op in range(1, len(OPS)):
            single = tuple(op if i == e else NONE for i in range(len(EDGES)))
            f, p = measure(single)
            flops_row.append(f - base_flops)
            params_row.append(p - base_params)
        edge_flops.append(tuple(flops_row))
        edge_params.append(tuple(params_row))
    return CostModel({"flops": AdditiveCost(base_flops, np.array(edge_flops)),
                      "params": AdditiveCost(base_params, np.array(edge_params))})


def latency_parts(shape: NetworkShape, input_size: int):
    """What the latency table times: (fixed parts, {(edge, op): [(key, module, input shape)]}).

    The fixed part is the skeleton (a network of empty cells); an op on an edge
    runs once in every cell, at each stage's width and resolution. Ops of the
    same kind and input share a key, so each is timed once; the sums at the
    cells' nodes are left out.
    """
    skeleton = build((NONE,) * len(EDGES), shape)
    fixed = [("skeleton", skeleton, (shape.in_channels, input_size, input_size))]
    positions, c, size = [], shape.channels, input_size
    for stage in range(3):
        if stage > 0:
            c, size = 2 * c, (size - 1) // 2 + 1
        positions += [(c, size)] * shape.cells
    slots = {}
    for e in range(len(EDGES)):
        slots[e, NONE] = []
        for op in range(1, len(OPS)):
            slots[e, op] = [(f"{OPS[op]} c{c} @{size}", make_op(op, c), (c, size, size)) for c, size in positions]
    return fixed, slots


# ----------------------------------------------------------------------------
# The space as a `fitnas.spaces.base.SearchSpace`


class NB201Space:
    """The module's functions as the `SearchSpace` protocol; the layout is fixed, so there is one instance, `SPACE`."""

    NAME, OPS, NODE_TYPES, EXAMPLE, FORM = NAME, OPS, NODE_TYPES, EXAMPLE, FORM
    NetworkShape = NetworkShape
    choices: tuple[tuple[int, ...], ...] = (tuple(range(len(OPS))),) * len(EDGES)
    num_slots = len(EDGES)
    size = DISTINCT_NETWORKS  # small enough to list: the fit predicts every distinct network

    parse = staticmethod(parse)
    to_str = staticmethod(to_str)
    canonical = staticmethod(canonical)
    random_cell = staticmethod(random_cell)
    sample = staticmethod(sample)
    graph = staticmethod(graph)
    onehot = staticmethod(onehot)
    network_shape = staticmethod(network_shape)
    build = staticmethod(build)
    build_supernet = staticmethod(build_supernet)
    latency_parts = staticmethod(latency_parts)

    def __repr__(self) -> str:
        return "NB201Space()"

    def cost_model(self, shape: NetworkShape, input_size: int) -> CostModel:
        return cost_model(shape, input_size)

    def connected(self, arch: Arch) -> bool:
        # A cell whose output no path reaches computes zero: its class holds the all-none cell, its canonical form.
        return canonical(arch) != (NONE,) * len(EDGES)

    def enumerate(self) -> tuple[Arch, ...]:
        return distinct()

    def multiplicity(self, arch: Arch) -> int:
        return class_sizes()[canonical(arch)]


SPACE = NB201Space()

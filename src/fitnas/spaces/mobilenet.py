"""A MobileNet-style chain space, after ProxylessNAS and single-path one-shot (SPOS).

The network is a stem, one fixed inverted-residual block, then a chain of
searchable layers grouped in stages (width, depth, stride per stage), then a
1x1 head convolution, global pooling and a classifier. Each searchable layer
picks an inverted-residual block (MobileNetV2's MBConv) with kernel 3, 5 or 7
and expansion 3 or 6, or *skip* where the layer's input and output shapes
match: every layer of a stage but the first, which changes width or stride.
With the default 21 layers (stages of 4, 4, 4, 4, 4, 1) that is 7 choices on
16 layers and 6 on the other 5: about 2.6e17 networks (7^21 is 5.6e17), far too many to list,
so this space is searched (fitnas.chainsearch) rather than enumerated.

An architecture is a tuple of op indices, one per searchable layer. Its string
lists the stages separated by '|' and the layers of a stage separated by '-':
``k3e6-skip-k5e3-skip|k7e6-k3e3-k3e3-skip|...``.

Two architectures that differ only in where a stage's skips sit compute the
same function, but they use different layers' weights in the supernet, whose
scores are what the predictor fits; like SPOS and ProxylessNAS, the space keeps
them apart (`canonical` is the identity).

The layout is a parameter (`space.mobilenet` in params.yaml), so the space is an
object, `ChainSpace`, built from it; it has the same attributes and functions
as the NAS-Bench-201 module (parse/to_str, canonical, sample/random_cell,
graph/onehot, NetworkShape/network_shape, build/build_supernet, cost_model).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from fitnas.config import Mobilenet as MobilenetSettings
from fitnas.costs import AdditiveCost, CostModel, count_flops, count_params
from fitnas.spaces.base import ArchError, Graph

NAME = "mobilenet"
SKIP_NAME = "skip"

Arch = tuple[int, ...]


@dataclass(frozen=True)
class NetworkShape:
    """Everything that fixes a network of the space except the choice per layer.

    The layout's defaults live in one place, the schema (`fitnas.config.Mobilenet`): `default_layout()`.
    """

    stem: int  # channels of the stem convolution
    stem_stride: int
    first: int  # channels of the fixed expansion-1 block after the stem (MobileNetV2's first block)
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    strides: tuple[int, ...]
    head: int  # channels of the 1x1 convolution before pooling
    kernels: tuple[int, ...]
    expansions: tuple[int, ...]
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self) -> None:
        # Lists from YAML or a checkpoint become tuples: the shape is hashable and compares by value.
        for name in ("widths", "depths", "strides", "kernels", "expansions"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.widths) == len(self.depths) == len(self.strides):
            raise ValueError(
                f"space.mobilenet: widths ({len(self.widths)}), depths ({len(self.depths)}) and strides "
                f"({len(self.strides)}) must list one value per stage"
            )


LAYOUT_FIELDS = tuple(f.name for f in fields(NetworkShape) if f.name not in ("in_channels", "num_classes"))


def layout_of(settings: Any) -> NetworkShape:
    """The layout params.yaml's `space.mobilenet` section describes (a `fitnas.config.Mobilenet`)."""
    return NetworkShape(**{name: getattr(settings, name) for name in LAYOUT_FIELDS})


def layout(**fields_: Any) -> NetworkShape:
    """The default layout with some fields changed (the rest from the schema)."""
    return dataclasses.replace(default_layout(), **fields_)


def default_layout() -> NetworkShape:
    """The schema's default layout (the Fashion-MNIST proxy, 28x28 input)."""
    return layout_of(MobilenetSettings())


@dataclass(frozen=True)
class Layer:
    """One searchable layer: its stage, shapes, and whether skip may replace it."""

    index: int
    stage: int
    c_in: int
    c_out: int
    stride: int
    skippable: bool


def layers_of(shape: NetworkShape) -> list[Layer]:
    out, c, index = [], shape.first, 0
    for stage, (width, depth, stride) in enumerate(zip(shape.widths, shape.depths, shape.strides)):
        for k in range(depth):
            s = stride if k == 0 else 1
            out.append(Layer(index, stage, c, width, s, skippable=(s == 1 and c == width)))
            c, index = width, index + 1
    return out


# ----------------------------------------------------------------------------
# Blocks


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, affine: bool = True):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (unless 1), depthwise kxk, linear 1x1 projection, residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int, affine: bool = True):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(c_in, hidden, 1, affine=affine))
        layers += [
            ConvBNReLU(hidden, hidden, kernel, stride, groups=hidden, affine=affine),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class Head(nn.Sequential):
    """1x1 convolution to `head` channels, global average pool, classifier."""

    def __init__(self, c_in: int, head: int, num_classes: int, affine: bool = True):
        super().__init__(
            ConvBNReLU(c_in, head, 1, affine=affine),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(head, num_classes),
        )


def _stem(shape: NetworkShape, affine: bool = True) -> nn.Sequential:
    return nn.Sequential(
        ConvBNReLU(shape.in_channels, shape.stem, 3, shape.stem_stride, affine=affine),
        InvertedResidual(shape.stem, shape.first, 3, 1, 1, affine=affine),
    )


class Network(nn.Module):
    """Stem, the chain of chosen blocks (skips are identities), head."""

    def __init__(self, stem: nn.Module, layers: Sequence[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.layers = nn.Sequential(*layers)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class SuperLayer(nn.Module):
    """Every candidate block of one layer, each with its own weights; `choice` picks the one that runs."""

    def __init__(self, candidates: Sequence[nn.Module]):
        super().__init__()
        self.candidates = nn.ModuleList(candidates)
        self.choice = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.candidates[self.choice](x)


class SuperNetwork(Network):
    """The weight-sharing supernet; `set_arch` picks the path every layer runs."""

    def set_arch(self, arch: Arch) -> None:
        for layer, op in zip(self.layers, arch):
            layer.choice = int(op)


# ----------------------------------------------------------------------------
# Costs


# ----------------------------------------------------------------------------
# The space


class ChainSpace:
    """The space for one layout; see the module docstring."""

    NAME = NAME
    NetworkShape = NetworkShape

    def __init__(self, layout: NetworkShape | None = None):
        self.layout = layout or default_layout()
        self.layers = layers_of(self.layout)
        self.OPS: tuple[str, ...] = tuple(
            f"k{k}e{e}" for k, e in itertools.product(self.layout.kernels, self.layout.expansions)
        ) + (SKIP_NAME,)
        self.SKIP = len(self.OPS) - 1
        # Ops by their costs: index -> (kernel, expansion); skip has none.
        self.block_of = {i: ke for i, ke in enumerate(itertools.product(self.layout.kernels, self.layout.expansions))}
        self.choices: list[tuple[int, ...]] = [
            tuple(range(len(self.OPS))) if layer.skippable else tuple(range(self.SKIP)) for layer in self.layers
        ]
        # Node types of the graph encoding: a node per layer, typed by (layer, op), so
        # the graph network knows where in the chain an op sits (resolution and width
        # differ by position, and a path graph alone does not tell a node its depth).
        self.NODE_TYPES: tuple[str, ...] = ("input", "output") + tuple(
            f"{layer.index}:{op}" for layer in self.layers for op in self.OPS
        )
        self.EXAMPLE = self.to_str(tuple(0 for _ in self.layers))
        depths = ",".join(str(d) for d in self.layout.depths)
        self.FORM = (
            f"{len(self.layout.depths)} stages separated by '|' with {depths} layers separated by '-'; "
            f"each layer one of {', '.join(self.OPS)} (skip not in a stage's first layer)"
        )

    def __repr__(self) -> str:
        return f"ChainSpace({len(self.layers)} layers, {len(self.OPS)} ops)"

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_slots(self) -> int:
        return len(self.layers)

    @property
    def size(self) -> int:
        """How many architectures the space holds."""
        return math.prod(len(c) for c in self.choices)

    def enumerate(self) -> None:
        return None  # too large to list: searched, not tabulated

    def multiplicity(self, arch: Arch) -> int:
        return 1  # no two architectures are merged (see the module docstring)

    def connected(self, arch: Arch) -> bool:
        return True  # a chain of blocks and skips always reaches its head

    # -- strings

    def to_str(self, arch: Arch) -> str:
        groups, start = [], 0
        for depth in self.layout.depths:
            groups.append("-".join(self.OPS[op] for op in arch[start : start + depth]))
            start += depth
        return "|".join(groups)

    def parse(self, text: str) -> Arch:
        """Parse strictly; raise ArchError showing the expected form."""

        def fail(problem: str) -> ArchError:
            return self._error(text, problem)

        if not isinstance(text, str):
            raise fail("not a string")
        groups = text.strip().split("|")
        if len(groups) != len(self.layout.depths):
            raise fail(f"{len(groups)} stages separated by '|', expected {len(self.layout.depths)}")
        arch: list[int] = []
        for stage, (group, depth) in enumerate(zip(groups, self.layout.depths)):
            items = group.split("-")
            if len(items) != depth:
                raise fail(f"stage {stage} has {len(items)} layers, expected {depth}")
            for item in items:
                if item not in self.OPS:
                    raise fail(f"unknown op {item!r} in stage {stage}")
                arch.append(self.OPS.index(item))
        return self.check(tuple(arch), text)

    def _error(self, shown: object, problem: str) -> ArchError:
        return ArchError(f"bad {NAME} arch {shown!r}: {problem}.\n  expected: {self.FORM}\n  example:  {self.EXAMPLE}")

    def check(self, arch: Sequence[int], text: str | None = None) -> Arch:
        """The arch as a tuple of ints, after checking its length and that skips sit where shapes allow."""
        arch = tuple(int(op) for op in arch)
        shown = text if text is not None else arch
        if len(arch) != len(self.layers):
            raise self._error(shown, f"{len(arch)} layers, expected {len(self.layers)}")
        for layer, op in zip(self.layers, arch):
            if op not in self.choices[layer.index]:
                if op == self.SKIP:
                    raise self._error(shown, f"layer {layer.index} (first of stage {layer.stage}, {layer.c_in}->{layer.c_out} "
                                             f"channels, stride {layer.stride}) changes the shape, so it cannot be skip")
                raise self._error(shown, f"op index {op} at layer {layer.index} is not one of 0..{self.SKIP}")
        return arch

    def canonical(self, arch: Arch) -> Arch:
        """The identity (see the module docstring), after checking the arch."""
        return self.check(arch)

    # -- sampling

    def random_cell(self, rng: random.Random) -> Arch:
        """A uniformly random architecture, as single-path supernet training draws them."""
        return tuple(rng.choice(c) for c in self.choices)

    def sample(self, n: int, rng: random.Random) -> list[Arch]:
        """n distinct architectures drawn uniformly without replacement."""
        if n > self.size:
            raise ValueError(f"asked for {n} distinct networks but the space has only {self.size}")
        seen: dict[Arch, None] = {}
        while len(seen) < n:
            seen.setdefault(self.random_cell(rng), None)
        return list(seen)

    # -- encodings for predictors

    def node_type(self, layer: int, op: int) -> int:
        return 2 + layer * len(self.OPS) + op

    def graph(self, arch: Arch) -> Graph:
        """A path: input, one node per layer typed by (layer, op), output."""
        arch = self.check(arch)
        types = [0] + [self.node_type(i, op) for i, op in enumerate(arch)] + [1]
        return Graph(node_types=types, edges=[(i, i + 1) for i in range(len(types) - 1)])

    def onehot(self, arch: Arch) -> list[float]:
        """Layers x ops one-hot."""
        arch = self.check(arch)
        vec = [0.0] * (len(arch) * len(self.OPS))
        for i, op in enumerate(arch):
            vec[i * len(self.OPS) + op] = 1.0
        return vec

    # -- networks

    def network_shape(self, settings: Any, in_channels: int, num_classes: int) -> NetworkShape:
        """The shape of this space's networks for the data; `settings` (supernet/final channels, cells) apply to nb201 only."""
        values = {name: getattr(self.layout, name) for name in LAYOUT_FIELDS}
        return NetworkShape(**values, in_channels=in_channels, num_classes=num_classes)

    def _same_layout(self, shape: NetworkShape) -> None:
        if layers_of(shape) != self.layers:
            raise ArchError(f"network shape {shape} has another layer layout than this space ({self.layout})")

    def _block(self, layer: Layer, op: int, affine: bool = True) -> nn.Module:
        if op == self.SKIP:
            return nn.Identity()
        kernel, expansion = self.block_of[op]
        return InvertedResidual(layer.c_in, layer.c_out, kernel, expansion, layer.stride, affine)

    def build(self, arch: Arch, shape: NetworkShape) -> Network:
        """A stand-alone network, as retraining trains it."""
        arch = self.check(arch)
        self._same_layout(shape)
        blocks = [self._block(layer, op) for layer, op in zip(self.layers, arch)]
        return _channels_last(Network(_stem(shape), blocks, Head(shape.widths[-1], shape.head, shape.num_classes)))

    def build_supernet(self, shape: NetworkShape) -> SuperNetwork:
        """Every candidate block in every layer, BN without affine weights as the NAS-Bench-201 supernet."""
        self._same_layout(shape)
        layers = [SuperLayer([self._block(layer, op, affine=False) for op in range(len(self.OPS))]) for layer in self.layers]
        net = SuperNetwork(_stem(shape, affine=False), layers, Head(shape.widths[-1], shape.head, shape.num_classes, affine=False))
        net.set_arch(self.random_cell(random.Random(0)))
        return _channels_last(net)

    def feature_sizes(self, shape: NetworkShape, input_size: int) -> list[int]:
        """The input resolution of every searchable layer, then that of the head."""
        size = _out_size(input_size, 3, shape.stem_stride)
        sizes = []
        for layer in self.layers:
            sizes.append(size)
            size = _out_size(size, 3, layer.stride)
        return sizes + [size]

    def parts(self, shape: NetworkShape, input_size: int) -> tuple[list[tuple[nn.Module, tuple]], dict]:
        """The modules a network is made of, with their input shapes (C, H, W).

        Returns (fixed parts: stem and head), {(layer, op): block}: a network is the
        fixed parts plus one block per layer, which is what makes costs additive.
        """
        self._same_layout(shape)
        sizes = self.feature_sizes(shape, input_size)
        fixed = [
            (_channels_last(_stem(shape)), (shape.in_channels, input_size, input_size)),
            (_channels_last(Head(shape.widths[-1], shape.head, shape.num_classes)), (shape.widths[-1], sizes[-1], sizes[-1])),
        ]
        blocks = {}
        for layer in self.layers:
            for op in self.choices[layer.index]:
                if op != self.SKIP:
                    block = _channels_last(self._block(layer, op))  # as build() makes them
                    blocks[layer.index, op] = (block, (layer.c_in, sizes[layer.index], sizes[layer.index]))
        return fixed, blocks

    def table(self, fixed_cost: float, block_cost: dict[tuple[int, int], float]) -> AdditiveCost:
        """An additive cost over this space from the fixed parts' total and each (layer, op)'s cost; skip costs 0."""
        table = np.full((len(self.layers), len(self.OPS)), np.nan)
        for layer in self.layers:
            for op in self.choices[layer.index]:
                table[layer.index, op] = 0.0 if op == self.SKIP else block_cost[layer.index, op]
        return AdditiveCost(float(fixed_cost), table)

    def cost_model(self, shape: NetworkShape, input_size: int) -> CostModel:
        fixed, blocks = self.parts(shape, input_size)
        flops = {key: count_flops(m, s) / 1e6 for key, (m, s) in blocks.items()}
        params = {key: count_params(m) / 1e6 for key, (m, s) in blocks.items()}
        return CostModel(
            {
                "flops": self.table(sum(count_flops(m, s) for m, s in fixed) / 1e6, flops),
                "params": self.table(sum(count_params(m) for m, _ in fixed) / 1e6, params),
            }
        )

    def latency_parts(self, shape: NetworkShape, input_size: int):
        """What the latency table times: (fixed parts, {(slot, choice): [(key, module, input shape)]}).

        A skip costs nothing (an empty list); a choice a layer does not allow is absent. Layers with the same block configuration and input share a key, so each
        distinct block is timed once.
        """
        fixed, blocks = self.parts(shape, input_size)
        slots = {(layer.index, self.SKIP): [] for layer in self.layers if layer.skippable}
        for (index, op), (module, in_shape) in blocks.items():
            layer = self.layers[index]
            key = f"{self.OPS[op]} {layer.c_in}->{layer.c_out} s{layer.stride} @{in_shape[1]}"
            slots[index, op] = [(key, module, in_shape)]
        return [("stem", *fixed[0]), ("head", *fixed[1])], slots


def _channels_last(net: nn.Module) -> nn.Module:
    """Weights in channels-last layout, which convolutions then keep for their outputs: depthwise
    convolutions train 1.5-3x faster this way on CPU (measured on 2 cores), and GPUs prefer it too."""
    return net.to(memory_format=torch.channels_last)


def _out_size(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def from_settings(settings: Any | None) -> ChainSpace:
    """The space for params.yaml's `space.mobilenet` section (None: the defaults)."""
    return ChainSpace(default_layout() if settings is None else layout_of(settings))

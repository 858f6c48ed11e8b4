"""What every search space provides (`SearchSpace`), and the errors it raises.

A space is an object: the NAS-Bench-201 cell space (`fitnas.spaces.nb201.SPACE`) and the
MobileNet-style chain (`fitnas.spaces.mobilenet.ChainSpace`, built from its layout) both implement
this protocol, and the stages, predictors and search strategies use nothing else of them. How a
space is searched follows from what it offers (`enumerate()` returning every network or None),
not from its name: see `fitnas.strategies`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

from torch import nn

from fitnas.costs import CostModel
from fitnas.errors import ArchError  # noqa: F401  (spaces raise it; re-exported here)

Arch = tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    """A directed graph for graph predictors: one type index per node, edges as (src, dst)."""

    node_types: list[int]
    edges: list[tuple[int, int]]


# (key, module, input shape (C, H, W)): one thing the latency table times; parts with one key are timed once.
TimedPart = tuple[str, nn.Module, tuple[int, int, int]]


@runtime_checkable
class SearchSpace(Protocol):
    """An architecture is a tuple of op indices, one per slot (an edge of a cell, a layer of a chain)."""

    NAME: str  # as params.yaml's space.name spells it
    OPS: tuple[str, ...]  # op names; an arch holds indices into it
    NODE_TYPES: tuple[str, ...]  # the graph encoding's node types ("input", "output", then the space's own)
    EXAMPLE: str  # an architecture string, shown in errors
    FORM: str  # the string format, in words
    NetworkShape: type  # the macro skeleton's settings: the shapes that `build` takes
    choices: Sequence[tuple[int, ...]]  # per slot, the op indices it allows

    @property
    def num_slots(self) -> int: ...

    @property
    def size(self) -> int:
        """How many distinct networks the space holds."""

    # -- strings and identity
    def parse(self, text: str) -> Arch:
        """Strictly; raises ArchError showing FORM and EXAMPLE."""

    def to_str(self, arch: Arch) -> str: ...

    def canonical(self, arch: Arch) -> Arch:
        """The one member of the arch's class of networks that compute the same function."""

    def connected(self, arch: Arch) -> bool:
        """Whether the input reaches the output (a network whose output is always zero is not)."""

    # -- sampling
    def random_cell(self, rng: random.Random) -> Arch:
        """Uniformly random (not canonicalised), as single-path supernet training draws paths."""

    def sample(self, n: int, rng: random.Random) -> list[Arch]:
        """n distinct networks, uniformly without replacement."""

    def enumerate(self) -> Sequence[Arch] | None:
        """Every distinct network (canonical forms, sorted), or None for a space too large to list."""

    def multiplicity(self, arch: Arch) -> int:
        """How many of the space's architectures compute this (canonical) network."""

    # -- encodings for predictors
    def graph(self, arch: Arch) -> Graph: ...

    def onehot(self, arch: Arch) -> list[float]: ...

    # -- networks and their costs
    def network_shape(self, settings: Any, in_channels: int, num_classes: int) -> Any:
        """The skeleton for the data; `settings` is params.yaml's supernet or final section."""

    def build(self, arch: Arch, shape: Any) -> nn.Module:
        """A stand-alone network, as retraining trains it."""

    def build_supernet(self, shape: Any) -> nn.Module:
        """The weight-sharing supernet; its `set_arch(arch)` picks the path every forward pass runs."""

    def cost_model(self, shape: Any, input_size: int) -> CostModel:
        """FLOPs and params (millions) as additive tables over (slot, op), counted on built networks."""

    def latency_parts(self, shape: Any, input_size: int) -> tuple[list[TimedPart], dict[tuple[int, int], list[TimedPart]]]:
        """What the latency table times: the fixed parts, and per (slot, op) the parts that choice adds."""

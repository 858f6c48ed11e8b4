"""What every search space provides, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass


class ArchError(ValueError):
    """An architecture string that does not parse; the message shows the expected form."""


@dataclass(frozen=True)
class Graph:
    """A directed graph for graph predictors: one type index per node, edges as (src, dst)."""

    node_types: list[int]
    edges: list[tuple[int, int]]

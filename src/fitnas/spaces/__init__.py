"""Search spaces, each an object implementing `fitnas.spaces.base.SearchSpace`.

`nb201` (NAS-Bench-201's cell, one fixed instance) and `mobilenet` (a chain whose layout is
params.yaml's `space.mobilenet`). Adding a space: a module with a class implementing the protocol
and an entry in `BUILDERS` (README, "Adding a search space").
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from fitnas.spaces import mobilenet, nb201
from fitnas.spaces.base import SearchSpace

# name -> builder from params.yaml's `space` section (None: the space's defaults).
BUILDERS: dict[str, Callable[[Any], SearchSpace]] = {
    "nb201": lambda settings: nb201.SPACE,
    "mobilenet": lambda settings: mobilenet.from_settings(None if settings is None else settings.mobilenet),
}


def get(spec: Any) -> SearchSpace:
    """The space named `spec`, or described by params.yaml's `space` section (`p.space`)."""
    name = spec if isinstance(spec, str) else spec.name
    if name not in BUILDERS:
        raise ValueError(f"unknown search space {name!r}; available: {', '.join(BUILDERS)}")
    return BUILDERS[name](None if isinstance(spec, str) else spec)


def source_file(space: SearchSpace) -> Path:
    """The file that defines a space's class: part of what a result depends on."""
    return Path(inspect.getfile(type(space)))

"""Search spaces. Each has the same functions: parse/to_str, canonical, sample/random_cell,
graph/onehot encodings, NetworkShape/network_shape, build/build_supernet, cost_model, latency_parts.

`nb201` is a module (its layout is fixed); `mobilenet` is a `ChainSpace` object built from the
layout in params.yaml (`space.mobilenet`). A space with `ENUMERABLE = True` also lists every
distinct network (`distinct`, `class_sizes`), so the fit tabulates it whole; any other space is searched.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fitnas.spaces import mobilenet, nb201

SPACES: dict[str, Any] = {"nb201": nb201, "mobilenet": mobilenet}


def get(spec: Any) -> Any:
    """The space named `spec`, or described by params.yaml's `space` section (`p.space`)."""
    name = spec if isinstance(spec, str) else spec.name
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; available: {', '.join(SPACES)}")
    if name == "mobilenet":
        return mobilenet.from_settings(None if isinstance(spec, str) else spec.mobilenet)
    return SPACES[name]


def source_file(space: Any) -> Path:
    """The file that defines a space (its module, or the class of a space object): part of what a result depends on."""
    return Path(inspect.getfile(space if inspect.ismodule(space) else type(space)))

"""Search spaces. Each is a module with the same functions: parse/to_str, canonical,
distinct/sample/random_cell, graph/onehot encodings, build/build_supernet, cost_model."""

from types import ModuleType

from fitnas.spaces import nb201

SPACES: dict[str, ModuleType] = {"nb201": nb201}


def get(name: str) -> ModuleType:
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; available: {', '.join(SPACES)}") from None

"""What code a stage runs: the transitive closure of its imports within fitnas.

DVC re-runs a stage when a file in its `deps` changes, so a stage must depend on every module it
imports, directly or not; a test walks each stage's closure and fails naming a module dvc.yaml
leaves out. Resume checkpoints are keyed by the same closure, so they are discarded exactly when
code that shapes their result changes. (The rank check's committed truth table is keyed by fewer
files, the ones that compute its numbers: see fitnas.rankcheck.training_key.) Imports are read from the source
(function-level ones included), not executed.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable

PACKAGE = Path(__file__).resolve().parent  # src/fitnas
STAGES = PACKAGE.parent.parent / "stages"  # installed as fitnas.stages (pyproject.toml's package-dir)


def module_file(name: str) -> Path | None:
    """The source file of fitnas module `name` (a package's __init__.py), or None when it is not one."""
    parts = name.split(".")
    if parts[0] != "fitnas":
        return None
    base = STAGES if parts[1:2] == ["stages"] else PACKAGE
    rest = parts[2:] if base is STAGES else parts[1:]
    folder = base.joinpath(*rest)
    for candidate in (folder.with_suffix(".py") if rest else None, folder / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@lru_cache(maxsize=None)
def imported_modules(path: Path) -> frozenset[str]:
    """The fitnas modules a source file imports, anywhere in it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from fitnas import config`: config may be a module of the package.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(name for name in found if name.split(".")[0] == "fitnas" and module_file(name) is not None)


def closure(entries: Iterable[Path | str]) -> list[Path]:
    """Every fitnas source file that importing or running the entries executes, sorted."""
    todo = [Path(e).resolve() if not isinstance(e, str) or e.endswith(".py") else module_file(e) for e in entries]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            todo.extend(module_file(n) for n in (*_parents(name), name))
    return sorted(seen)


def code_files(*modules: object) -> list[Path]:
    """The closure of the modules (or of the classes' modules, for objects such as a search space)."""
    import inspect

    names = [m.__name__ if inspect.ismodule(m) else type(m).__module__ for m in modules]
    return closure(names)


def digest(paths: Iterable[Path]) -> str:
    """A hash of the files' contents (for resume keys and caches)."""
    h = hashlib.sha1()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()


def relative(paths: Iterable[Path], root: Path) -> list[str]:
    return [str(p.resolve().relative_to(root.resolve())) for p in paths]


if __name__ == "__main__":  # python -m fitnas.deps stages/fit.py: the closure, as dvc.yaml lists deps
    import sys

    root = PACKAGE.parent.parent
    for entry in sys.argv[1:]:
        print(entry)
        for path in relative(closure([Path(entry)]), root):
            print(f"  - {path}")

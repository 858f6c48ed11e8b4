"""What the stages share: where each artifact lives, and how a stage reports a user's mistake.

dvc.yaml names the same paths; tests check the two agree.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch

from fitnas import config, tracking
from fitnas.data import splits
from fitnas.errors import USER_ERRORS, ArchError, CodeError, Interrupted, SamplesError
from fitnas.util import write_json  # noqa: F401  (stages import it from here with the paths)

PREPARED = Path("data/prepared")
TRAIN, VAL, TEST = PREPARED / "train.pt", PREPARED / "val.pt", PREPARED / "test.pt"
SUPERNET = Path("models/supernet.pt")
FINAL_MODEL = Path("models/final.pt")
FINAL_ONNX = Path("models/final.onnx")  # the same network for onnxruntime, with what it needs to be fed (serving.py)
SAMPLES = Path("results/samples.csv")
LOOKUP = Path("results/lookup.csv")
# Stand-alone accuracies of networks trained alone (arch, accuracy): when it has rows the fit
# fuses them with the supernet scores. Committed with no rows, so the fit can always depend on it.
ANCHORS = Path("results/anchors.csv")
HOLDOUT = Path("results/fit_holdout.csv")
CHOICE = Path("results/choice.json")
TOPK = Path("results/topk.csv")
PARETO = Path("results/pareto.csv")
PARETO_LATENCY = Path("results/pareto_latency.csv")
CANDIDATES = Path("results/candidates.csv")  # spaces too large to tabulate: every network the search scored whole
PREDICTOR = Path("models/predictor.pt")  # the fitted graph network, for spaces searched rather than tabulated
LATENCY_TABLE = Path("results/latency.csv")
LATENCY_CHECK = Path("results/latency_check.csv")
# The rank check (rankcheck/dvc.yaml, off the default path).
RANKCHECK = Path("results/rankcheck.csv")
# The truth: every network the rank check trained, by recipe key, network and seed. Committed with the
# project (git, not DVC): a fresh machine reuses it, and a re-run after a new fit retrains nothing.
TRUTH_TABLE = Path("results/truth.csv")
METRICS = Path("metrics")
PLOTS = Path("plots")

def code_mismatch(project: Path = Path("."), package: Path | None = None, stages: Path | None = None) -> str | None:
    """Why the fitnas code that runs differs from the project's `src/fitnas` and `stages/`, or None.

    dvc.yaml hashes the checkout's files; the stages import `fitnas` from wherever it is installed.
    An editable install of another checkout (or a stale copy) would run other code than DVC records.
    `package`/`stages`: the folders another interpreter imports (doctor asks the `python` on PATH);
    by default this process's. Compares contents, so an installed copy of the same code passes.
    """
    import importlib.util

    import fitnas

    pairs = [(project / "src" / "fitnas", package or Path(fitnas.__file__).parent)]
    if stages is None:
        spec = importlib.util.find_spec("fitnas.stages")
        stages = Path(spec.origin).parent if spec is not None and spec.origin else None
    if stages is not None:
        pairs.append((project / "stages", stages))
    for ours, running in pairs:
        if not ours.is_dir() or ours.resolve() == running.resolve():
            continue  # not a fitnas checkout here (nothing for DVC to hash), or the very same folder
        for name in sorted({*_sources(ours), *_sources(running)}):
            a, b = ours / name, running / name
            if not (a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()):
                return (f"fitnas runs from {running.resolve()}, not from this checkout's {ours} (which dvc.yaml hashes), "
                        f"and {name} differs: install this checkout into its environment (pip install -e .) or "
                        f"activate that environment (source .venv/bin/activate)")
    return None


def _sources(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def start_stage(params_path: str | Path):
    """What every stage checks and sets before any work; returns the params.

    params.yaml valid, this checkout's code running, torch's CPU threads set to `threads` (results
    depend on them), and the tracking store usable with the experiment named.
    """
    p = config.load(params_path)
    mismatch = code_mismatch()
    if mismatch is not None:
        raise CodeError(mismatch)
    torch.set_num_threads(p.threads)
    tracking.preflight(p.mlflow.experiment)
    return p


def final_shape(p, space):
    """The network retraining trains (params `final.*` on the prepared data): (shape, input size)."""
    val = splits.load_split(VAL)
    shape = space.network_shape(p.final, val.images.shape[1], len(val.classes))
    return shape, val.images.shape[-1]


def final_costs(p, space):
    """FLOPs and params of every cell, counted on networks of the final shape."""
    shape, size = final_shape(p, space)
    return space.cost_model(shape, size)


def _read_table(path: Path, needed: set[str], fix: str):
    import numpy as np
    import pandas as pd

    if not path.is_file():
        raise SamplesError(f"{path} {'is a folder, not a table' if path.is_dir() else 'does not exist'}; {fix}")
    try:
        table = pd.read_csv(path)
    except Exception as err:  # empty, binary, ragged rows, bad encoding: pandas raises many types
        raise SamplesError(f"{path} is unreadable ({type(err).__name__}: {err}); {fix}") from None
    if not needed <= set(table.columns):
        raise SamplesError(f"{path} lacks columns {sorted(needed - set(table.columns))}; {fix}")
    for column in sorted(needed - {"arch"}):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = int(np.argmax(bad))  # line row + 2 of the file: the header is line 1
            raw = table[column].iloc[row]
            shown = "empty" if pd.isna(raw) else repr(str(raw))
            raise SamplesError(f"{path} line {row + 2}: {column} is {shown}, not a number; {fix}")
        table[column] = values
    table["arch"] = table["arch"].astype(str)
    return table


def read_samples(path: Path, space, proxies: tuple[str, ...] = ()):
    """The sample stage's table; `proxies`: zero-cost proxy columns that must be there too (any value, -inf included)."""
    import pandas as pd

    fix = "re-run `dvc repro sample` to recreate it"
    table = _read_table(path, {"arch", "supernet_acc", "flops_M", "params_M"}, fix)
    missing = [name for name in proxies if name not in table.columns]
    if missing:
        raise SamplesError(f"{path} lacks the zero-cost proxy columns {missing} that sample.proxies asks for; {fix}")
    for name in proxies:
        table[name] = pd.to_numeric(table[name], errors="coerce")
    if len(table) < 10:
        raise SamplesError(f"{path} has only {len(table)} rows; a fit needs at least 10 (raise sample.n)")
    _check_archs(path, table, space, fix)
    return table


def _check_archs(path: Path, table, space, fix: str) -> None:
    for row, text in enumerate(table["arch"]):
        try:
            space.parse(text)
        except ArchError as err:
            raise SamplesError(f"{path} line {row + 2}: {err}\n  {fix}") from None


def read_anchors(path: Path, space, minimum: int):
    """Networks trained alone and their accuracy (fractions in [0, 1]); no rows when the file has none.

    `minimum`: the fewest rows a fusion can cross-validate its weights on; between one and that many is refused.
    A missing file is no anchors too (stages run by hand, outside the project; `dvc repro` needs the file).
    """
    import pandas as pd

    if not path.exists():
        return pd.DataFrame({"arch": pd.Series(dtype=str), "accuracy": pd.Series(dtype=float)})
    fix = f"list arch,accuracy rows (at least {minimum}) or leave only the header line"
    table = _read_table(path, {"arch", "accuracy"}, fix)
    _check_archs(path, table, space, fix)
    outside = ~table.accuracy.between(0.0, 1.0)
    if outside.any():
        row = int(outside.to_numpy().argmax())
        raise SamplesError(f"{path} line {row + 2}: accuracy {table.accuracy.iloc[row]} is not a fraction in [0, 1] "
                           f"(write 0.91, not 91)")
    if 0 < len(table) < minimum:
        raise SamplesError(f"{path} has {len(table)} networks; the fit needs at least {minimum} to choose its "
                           f"weights by cross-validation: add more, or {fix.split(' or ')[1]}")
    return table[["arch", "accuracy"]]


def read_lookup(path: Path):
    fix = "run `dvc repro fit` to create it"
    table = _read_table(path, {"arch", "predicted_acc", "flops_M", "params_M"}, fix)
    if table.empty:
        raise SamplesError(f"{path} has no rows; {fix}")
    return table


def read_choice(path: Path = CHOICE) -> dict:
    """results/choice.json, as the search stage wrote it."""
    fix = "re-run `dvc repro search` to recreate it"
    if not path.is_file():
        raise SamplesError(f"{path} does not exist; {fix}")
    try:
        choice = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise SamplesError(f"{path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(choice, dict) or not {"arch", "predicted_acc"} <= set(choice):
        raise SamplesError(f"{path} lacks the chosen arch or its predicted accuracy; {fix}")
    return choice


def friendly_errors(main):
    """Turn the errors a user can fix into one clear line and exit status 1, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except Interrupted as err:
            print(f"stopped: {err}", file=sys.stderr)
            sys.exit(err.exit_code)

    return wrapper

"""The `fitnas` command: the pipeline's stages and the queries a user asks of the lookup table."""

from __future__ import annotations

import importlib
import importlib.metadata
import math
from pathlib import Path
from typing import Optional

import typer
import typer.core
import typer.main

from fitnas.pipeline import LOOKUP, friendly_errors

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # Click's plain help: `--max-flops FLOAT`, not typer's `<list[float]>` type column.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Weight-sharing NAS with a graph network fitted to the search space (Chen et al., AAAI 2021).\n\n"
    "Run the whole pipeline with `dvc repro`; ask the fitted lookup table with `fitnas lookup` and `fitnas describe`.",
)


class _ClickArgument(typer.core.TyperArgument):
    """An argument shown as Click shows it: `ARCH` (typer 0.29 writes `{ARCH}` and adds `<str>`)."""

    def _usage_display_name(self) -> str:
        return self.display_name_raw if self.required else f"[{self.display_name_raw}]"

    def display_type(self, ctx) -> str:
        return ""


typer.main.TyperArgument = _ClickArgument  # typer has no per-argument class option; this is where it builds them
PARAMS_HELP = "The params file to read [default: params.yaml]."
METHODS = ("progressive", "evolution")  # search.method's choices (config.Search)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fitnas {importlib.metadata.version('fitnas')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass

STAGES = ("prepare", "supernet", "sample", "anchors", "fit", "search", "retrain")
RANKCHECK_REPRO = "dvc repro rankcheck/dvc.yaml"  # its own dvc.yaml keeps it off a plain `dvc repro`


def _stage_command(name: str, repro: str = "dvc repro", command_name: str | None = None) -> None:
    module = importlib.import_module(f"fitnas.stages.{name}")

    def command(params: Path = typer.Option(Path("params.yaml"), "--params", metavar="PATH", show_default=False, help=PARAMS_HELP)) -> None:
        module.main(str(params))

    command.__doc__ = (module.__doc__ or name).strip().splitlines()[0] + f" (what `{repro}` runs)"
    app.command(command_name or name, rich_help_panel="Pipeline stages")(command)


for _name in STAGES:
    _stage_command(_name)
_stage_command("latency", "dvc repro latency", "latency-table")
_stage_command("rankcheck", RANKCHECK_REPRO)


def _table(path: Path):
    from fitnas.pipeline import read_lookup

    return read_lookup(path)


def _budgets(values: Optional[list[float]], option: str) -> list[Optional[float]]:
    """The values of one budget option, each a positive finite number (nan or inf is no budget)."""
    for value in values or []:
        if not (math.isfinite(value) and value > 0):
            raise typer.BadParameter(f"{value} is not a budget: give a positive number", param_hint=option)
    return list(values) if values else [None]


def _params_file(params: Optional[Path]) -> Path | None:
    """The params file to read: the one named (which must exist), else params.yaml when there is one."""
    if params is not None:
        if not params.is_file():
            raise typer.BadParameter(f"{params} does not exist" if not params.exists() else f"{params} is not a file",
                                     param_hint="--params")
        return params
    return Path("params.yaml") if Path("params.yaml").is_file() else None


@app.command(rich_help_panel="Queries")
@friendly_errors
def lookup(
    max_flops: Optional[list[float]] = typer.Option(None, "--max-flops", metavar="FLOAT", help="FLOPs budget in millions of MACs; repeat for several budgets."),
    max_params: Optional[list[float]] = typer.Option(None, "--max-params", metavar="FLOAT", help="Parameter budget in millions; repeatable."),
    max_latency_ms: Optional[list[float]] = typer.Option(None, "--max-latency-ms", metavar="FLOAT", help="Latency budget in ms (latency table); repeatable."),
    top: int = typer.Option(5, min=1, metavar="INTEGER", help="How many architectures to list per budget."),
    table: Optional[Path] = typer.Option(None, metavar="PATH", show_default=False, help=f"The lookup table written by the fit stage [default: {LOOKUP}]; NAS-Bench-201 only."),
    params: Optional[Path] = typer.Option(None, "--params", metavar="PATH", show_default=False, help="The params file: which space, how to search it [default: params.yaml]."),
    method: Optional[str] = typer.Option(None, metavar="[progressive|evolution]",
                                         help="Search method for a space too large to tabulate [default: search.method]."),
) -> None:
    """The best predicted architectures for each budget (every combination of the values given).

    NAS-Bench-201: answered from the lookup table at once. A space too large to
    tabulate (mobilenet): searched with the fitted graph network, seconds per budget.
    """
    import itertools

    from fitnas import strategies
    from fitnas.config import Budget

    budgets = [Budget(flops=f, params=p, latency_ms=l) for f, p, l in itertools.product(
        _budgets(max_flops, "--max-flops"), _budgets(max_params, "--max-params"), _budgets(max_latency_ms, "--max-latency-ms"))]
    if method is not None and method not in METHODS:
        raise typer.BadParameter(f"{method!r} is not one of {', '.join(METHODS)}", param_hint="--method")
    params_path = _params_file(params)
    space, p = _space_from(params_path) if params_path is not None else (None, None)
    if space is not None and not strategies.tabulated(space):
        if table is not None:
            raise typer.BadParameter(f"space {space.NAME} is searched with the fitted predictor, not read from a table",
                                     param_hint="--table")
    elif method is not None:
        where = f"space {space.NAME}" if space is not None else "the lookup table"
        raise typer.BadParameter(f"{where} is answered from the lookup table; --method applies to a space too large "
                                 "to tabulate (space.name: mobilenet)", param_hint="--method")
    strategy = _strategy(space, p, table or LOOKUP, budgets, method)
    answers = ((budget, strategy.best(budget, top)) for budget in budgets)
    for budget, best in answers:
        with_latency = "latency_ms" in best
        typer.echo(f"budget: {budget.describe()}")
        typer.echo(f"{'rank':>4}  {'predicted':>9}  {'MFLOPs':>8}  {'M params':>8}" + (f"  {'ms':>8}" if with_latency else "") + "  arch")
        for rank, row in enumerate(best.itertuples(), start=1):
            cells = f"{rank:>4}  {row.predicted_acc:>9.4f}  {row.flops_M:>8.2f}  {row.params_M:>8.4f}"
            typer.echo(cells + (f"  {row.latency_ms:>8.3f}" if with_latency else "") + f"  {row.arch}")


def _latency_path() -> Path:
    from fitnas.pipeline import LATENCY_TABLE

    return LATENCY_TABLE


def _space_from(params_path: Path):
    """(space, params) from the params file."""
    from fitnas import config, spaces

    p = config.load(params_path)
    return spaces.get(p.space), p


def _strategy(space, p, table: Path, budgets, method: str | None):
    """How the params file's space answers budgets: the lookup table, or a search against the saved predictor."""
    from fitnas import predictors, spaces, strategies
    from fitnas.latency import read_table
    from fitnas.pipeline import PREDICTOR, final_costs

    if space is None:  # no params file: the table alone answers, without latency
        return strategies.TableSearch(spaces.get("nb201"), _table(table), None)
    wants_latency = _latency_path().is_file() or any(b.latency_ms for b in budgets)
    latency = read_table(_latency_path(), space) if wants_latency else None
    costs = lambda: final_costs(p, space)  # noqa: E731
    return strategies.for_space(space, lambda: _table(table), lambda: predictors.load_file(PREDICTOR, space, costs().params),
                                costs, latency, p.search, p.seed, method)


@app.command(rich_help_panel="Queries")
@friendly_errors
def describe(
    arch: str = typer.Argument(..., metavar="ARCH", show_default=False, help="An architecture string, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'."),
    table: Optional[Path] = typer.Option(None, metavar="PATH", show_default=False, help=f"The lookup table written by the fit stage [default: {LOOKUP}]; NAS-Bench-201 only."),
    space_name: Optional[str] = typer.Option(None, "--space", metavar="[nb201|mobilenet]", show_default=False,
                                             help="The search space the string belongs to [default: space.name of the params file, else nb201]."),
    params: Optional[Path] = typer.Option(None, "--params", metavar="PATH", show_default=False, help="The params file: the space and its layout [default: params.yaml]."),
) -> None:
    """FLOPs, params and predicted accuracy of one architecture."""
    from fitnas import spaces, strategies

    params_path = _params_file(params)
    configured, p = _space_from(params_path) if params_path is not None else (None, None)
    name = space_name or (configured.NAME if configured is not None else "nb201")
    try:
        space = spaces.get(name)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--space") from None
    if not strategies.tabulated(space):
        if configured is None or configured.NAME != name:
            where = params_path or "params.yaml (not found)"
            raise typer.BadParameter(f"{where} does not describe a {name} space: pass the params file it was run with (--params)")
        if table is not None:
            raise typer.BadParameter(f"space {name} is predicted by the fitted predictor, not read from a table", param_hint="--table")
        _describe_searched(configured, p, arch)
        return
    table = table or LOOKUP
    parsed = space.parse(arch)
    canonical = space.to_str(space.canonical(parsed))
    frame = _table(table)
    row = frame[frame["arch"] == canonical]
    if row.empty:
        raise typer.BadParameter(f"{canonical} is not in {table}; was the table fitted on another search space?")
    row = row.iloc[0]
    rank = int((frame["predicted_acc"] > row["predicted_acc"]).sum()) + 1
    typer.echo(f"arch:          {arch}")
    if canonical != arch.strip():
        typer.echo(f"same network:  {canonical}  (canonical form)")
    typer.echo(f"FLOPs:         {row['flops_M']:.3f} M multiply-accumulates")
    typer.echo(f"params:        {row['params_M']:.4f} M")
    typer.echo(f"predicted acc: {row['predicted_acc']:.4f}  (rank {rank} of {len(frame)} distinct networks)")
    if "supernet_acc" in frame and row["supernet_acc"] == row["supernet_acc"]:
        typer.echo(f"supernet acc:  {row['supernet_acc']:.4f}  (measured with inherited weights)")



def _describe_searched(space, p, arch: str) -> None:
    """A network of a space too large to tabulate: its costs from the cost model, its prediction from the fitted GCN."""
    from fitnas.latency import read_table
    from fitnas import predictors
    from fitnas.pipeline import PREDICTOR, final_costs

    parsed = space.parse(arch)
    costs = final_costs(p, space)
    predictor = predictors.load_file(PREDICTOR, space, costs.params)
    typer.echo(f"arch:          {arch}")
    typer.echo(f"FLOPs:         {costs.flops(parsed):.3f} M multiply-accumulates")
    typer.echo(f"params:        {costs.params(parsed):.4f} M")
    if _latency_path().is_file():
        typer.echo(f"latency:       {read_table(_latency_path(), space)(parsed):.3f} ms  (latency table)")
    typer.echo(f"predicted acc: {predictor.query([parsed])[0]:.4f}  (fitted {'graph network' if predictor.name == 'gcn' else predictor.name + ' predictor'}; {space.size:.3g} networks in the space)")


@app.command(rich_help_panel="Queries")
@friendly_errors
def predict(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", show_default=False, help="Image files, or folders of them."),
    model: Optional[str] = typer.Option(None, "--model", metavar="MODEL", show_default=False,
                                        help="models:/NAME/VERSION from the MLflow registry (MLFLOW_TRACKING_URI, else mlflow.db), "
                                             "or an .onnx file [default: models/final.onnx]."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image, every class's probability included."),
    top: int = typer.Option(1, min=1, metavar="INTEGER", help="Classes to print per image, most probable first."),
) -> None:
    """Classify images with the final model, resized and normalised exactly as training saw its data."""
    import json

    from fitnas import predict as predicting
    from fitnas.pipeline import FINAL_ONNX, TEST

    loaded = predicting.load(model, FINAL_ONNX)
    if model is None:  # the project's model must be the project's data's
        prepared = predicting.prepared_split(TEST)
        if prepared is not None:
            predicting.check_dataset(loaded.meta, str(FINAL_ONNX), prepared)
    table = predicting.classify(loaded, predicting.image_files(paths))
    classes = loaded.meta["classes"]
    for row in table.to_dict("records"):
        probs = sorted(((name, row[f"p_{name}"]) for name in classes), key=lambda item: -item[1])
        if as_json:
            typer.echo(json.dumps({"path": row["path"], "size": row["size"], "class": row["class"], "label": int(row["label"]),
                                   "probability": float(row["probability"]), "probabilities": {n: float(p) for n, p in probs}}))
        else:
            shown = "  ".join(f"{name} {p:.3f}" for name, p in probs[:top])
            typer.echo(f"{row['path']}: {shown}")


@app.command(rich_help_panel="Queries")
def experiments(
    all_commits: bool = typer.Option(False, "--all-commits", "-A", help="Every commit's experiments, not only HEAD's."),
    params: Path = typer.Option(Path("params.yaml"), "--params", metavar="PATH", show_default=False, help=PARAMS_HELP),
) -> None:
    """The DVC experiments side by side: headline metrics and the params that differ (`dvc exp show`, cut down)."""
    from fitnas import config
    from fitnas.experiments import dvc_experiments, headline, markdown

    kind = config.load(params).predictor.kind if params.is_file() else "gcn"
    try:
        entries = dvc_experiments(["--all-commits"] if all_commits else [])
    except RuntimeError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(markdown(headline(entries, kind)))


@app.command(rich_help_panel="Set-up")
def doctor(params: Path = typer.Option(Path("params.yaml"), "--params", metavar="PATH", show_default=False, help="The params file to check [default: params.yaml].")) -> None:
    """Check this machine: params, dataset, torch and device, dvc.yaml's python, DVC, MLflow; says what to fix."""
    from fitnas.doctor import report, run_checks

    checks = run_checks(params)
    typer.echo(report(checks))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

"""The `fitnas` command: the pipeline's stages and the queries a user asks of the lookup table."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

import typer

from fitnas.pipeline import LOOKUP, friendly_errors

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Weight-sharing NAS with a graph network fitted to the search space (Chen et al., AAAI 2021).\n\n"
    "Run the whole pipeline with `dvc repro`; ask the fitted lookup table with `fitnas lookup` and `fitnas describe`.",
)

STAGES = ("prepare", "supernet", "sample", "fit", "search", "retrain")
RANKCHECK_REPRO = "dvc repro rankcheck/dvc.yaml"  # its own dvc.yaml keeps it off a plain `dvc repro`


def _stage_command(name: str, repro: str = "dvc repro", command_name: str | None = None) -> None:
    module = importlib.import_module(f"fitnas.stages.{name}")

    def command(params: Path = typer.Option(Path("params.yaml"), help="The params file to read.")) -> None:
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


@app.command(rich_help_panel="Queries")
@friendly_errors
def lookup(
    flops: Optional[list[float]] = typer.Option(None, help="FLOPs budget in millions of MACs; repeat for several budgets."),
    params: Optional[list[float]] = typer.Option(None, help="Parameter budget in millions; repeatable."),
    latency_ms: Optional[list[float]] = typer.Option(None, "--latency-ms", help="Latency budget in ms (latency table); repeatable."),
    top: int = typer.Option(5, min=1, help="How many architectures to list per budget."),
    table: Path = typer.Option(LOOKUP, help="The lookup table written by the fit stage."),
    config_path: Path = typer.Option(Path("params.yaml"), "--config", help="The params file: which space, how to search it."),
    method: Optional[str] = typer.Option(None, help="Search method for a space too large to tabulate: progressive or evolution (default: search.method)."),
) -> None:
    """The best predicted architectures for each budget (every combination of the values given).

    NAS-Bench-201: answered from the lookup table at once. A space too large to
    tabulate (mobilenet): searched with the fitted graph network, seconds per budget.
    """
    import itertools

    from pydantic import ValidationError

    from fitnas.config import Budget

    try:
        budgets = [Budget(flops=f, params=p, latency_ms=l)
                   for f, p, l in itertools.product(flops or [None], params or [None], latency_ms or [None])]
    except ValidationError as err:
        problem = err.errors()[0]
        raise typer.BadParameter(f"--{problem['loc'][0]} {problem['input']}: {problem['msg']}") from None
    strategy = _strategy(config_path, table, budgets, method)
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


def _space_from(config_path: Path):
    """(space, params) from the params file; (None, None) when there is none (the table alone answers)."""
    from fitnas import config, spaces

    if not config_path.is_file():
        return None, None
    p = config.load(config_path)
    return spaces.get(p.space), p


def _strategy(config_path: Path, table: Path, budgets, method: str | None):
    """How the params file's space answers budgets: the lookup table, or a search against the saved predictor."""
    from fitnas import spaces, strategies
    from fitnas.latency import read_table
    from fitnas import predictors
    from fitnas.pipeline import PREDICTOR, final_costs
    from fitnas.strategies import TableSearch

    space, p = _space_from(config_path)
    if space is None:  # no params file: the table alone answers, without latency
        return TableSearch(spaces.get("nb201"), _table(table), None)
    wants_latency = _latency_path().is_file() or any(b.latency_ms for b in budgets)
    latency = read_table(_latency_path(), space) if wants_latency else None
    costs = lambda: final_costs(p, space)  # noqa: E731
    return strategies.for_space(space, lambda: _table(table), lambda: predictors.load_file(PREDICTOR, space, costs().params), costs,
                                latency, p.search, p.seed, method)


@app.command(rich_help_panel="Queries")
@friendly_errors
def describe(
    arch: str = typer.Argument(..., help="An architecture string, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'."),
    table: Path = typer.Option(LOOKUP, help="The lookup table written by the fit stage."),
    space_name: str = typer.Option("nb201", "--space", help="The search space the string belongs to."),
    config_path: Path = typer.Option(Path("params.yaml"), "--config", help="The params file (the mobilenet space's layout)."),
) -> None:
    """FLOPs, params and predicted accuracy of one architecture."""
    from fitnas import spaces, strategies

    try:
        space = spaces.get(space_name)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--space") from None
    if not strategies.tabulated(space):
        configured, p = _space_from(config_path)
        if configured is None or configured.NAME != space_name:
            raise typer.BadParameter(f"{config_path} does not describe a {space_name} space: pass the params file it was run with (--config)")
        _describe_searched(configured, p, arch)
        return
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
    typer.echo(f"predicted acc: {predictor.query([parsed])[0]:.4f}  (fitted {predictor.name} predictor; {space.size:.3g} networks in the space)")


@app.command(rich_help_panel="Set-up")
def doctor(params: Path = typer.Option(Path("params.yaml"), help="The params file to check.")) -> None:
    """Check this machine: params, dataset, torch and device, dvc.yaml's python, DVC, MLflow; says what to fix."""
    from fitnas.doctor import report, run_checks

    checks = run_checks(params)
    typer.echo(report(checks))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

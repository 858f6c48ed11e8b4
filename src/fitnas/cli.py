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


def _stage_command(name: str, repro: str = "dvc repro") -> None:
    module = importlib.import_module(f"fitnas.stages.{name}")

    def command(params: Path = typer.Option(Path("params.yaml"), help="The params file to read.")) -> None:
        module.main(str(params))

    command.__doc__ = (module.__doc__ or name).strip().splitlines()[0] + f" (what `{repro}` runs)"
    app.command(name, rich_help_panel="Pipeline stages")(command)


for _name in STAGES:
    _stage_command(_name)
_stage_command("rankcheck", RANKCHECK_REPRO)


def _table(path: Path):
    from fitnas.pipeline import read_lookup

    return read_lookup(path)


@app.command(rich_help_panel="Queries")
@friendly_errors
def lookup(
    flops: Optional[list[float]] = typer.Option(None, help="FLOPs budget in millions of MACs; repeat for several budgets."),
    params: Optional[float] = typer.Option(None, help="Parameter budget in millions."),
    top: int = typer.Option(5, min=1, help="How many architectures to list per budget."),
    table: Path = typer.Option(LOOKUP, help="The lookup table written by the fit stage."),
) -> None:
    """The best predicted architectures under a budget, answered from the lookup table at once."""
    from fitnas.search import Budget, top_k

    frame = _table(table)
    for flops_budget in flops or [None]:
        budget = Budget(flops_budget, params)
        best = top_k(frame, budget, top)
        typer.echo(f"budget: {budget.describe()}")
        typer.echo(f"{'rank':>4}  {'predicted':>9}  {'MFLOPs':>8}  {'M params':>8}  arch")
        for rank, row in enumerate(best.itertuples(), start=1):
            typer.echo(f"{rank:>4}  {row.predicted_acc:>9.4f}  {row.flops_M:>8.2f}  {row.params_M:>8.4f}  {row.arch}")


@app.command(rich_help_panel="Queries")
@friendly_errors
def describe(
    arch: str = typer.Argument(..., help="An architecture string, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'."),
    table: Path = typer.Option(LOOKUP, help="The lookup table written by the fit stage."),
    space_name: str = typer.Option("nb201", "--space", help="The search space the string belongs to."),
) -> None:
    """FLOPs, params and predicted accuracy of one architecture."""
    from fitnas import spaces

    try:
        space = spaces.get(space_name)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--space") from None
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

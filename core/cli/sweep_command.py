"""``defectlab sweep``: every combination of a grid of config values, one run each, one report."""

from __future__ import annotations

import click

from defectlab.plugin_system.parameters import default_of
from defectlab.workflows.sweep import sweep


@click.command("sweep")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--grid", "grid", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="One axis of the grid (repeatable), e.g. --grid data.label_fraction=0.05,0.1,1; the first "
                   "axis is the x-axis of the sweep's plot.")
@click.option("--set", "overrides", multiple=True, help="Override a key in every run, e.g. --set train.epochs=5.")
@click.option("--score", "scores", multiple=True,
              help=f"Score to plot against the first axis (repeatable; default "
                   f"{', '.join(default_of(sweep, 'scores'))}).")
@click.option("--out", type=click.Path(file_okay=False), help="Folder of the sweep (default runs/sweep-<time>); "
              "the same sweep there is continued.")
@click.option("--overwrite", is_flag=True, help="Replace another sweep that --out holds.")
def sweep_command(config: str, grid: tuple[str, ...], overrides: tuple[str, ...], scores: tuple[str, ...],
                  out: str | None, overwrite: bool) -> None:
    """Train CONFIG once for every combination of the --grid values and compare the runs.

    Each run has a folder of its own named by its values; a sweep run again with the same config
    and grid keeps finished runs, resumes killed ones and starts the rest. Writes report.html
    (table, sweep.png of each score against the first axis, curves) and comparison.json.
    `none` as a value of train.init_from means no initialisation.
    """
    result = sweep(config, list(grid), out=out, overrides=overrides, scores=scores or default_of(sweep, "scores"),
                   overwrite=overwrite)
    click.echo(result.table())
    click.echo(f"report: {result.comparison.report}")


COMMANDS = [sweep_command]

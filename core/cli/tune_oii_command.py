"""``defectlab tune-oii``: OII-guided bisection of a segmentation loss's α (Yi et al. 2022 App. C)."""

from __future__ import annotations

import click
from defectlab.cli.output import echo_json
from defectlab.plugin_system.parameters import default_of
from defectlab.runs.tables import format_table
from defectlab.workflows.tune_oii import tune_oii


def pair_text(name: str) -> str:
    """``LOW,HIGH`` of a pair parameter's default in :func:`tune_oii`."""
    return ",".join(f"{value:g}" for value in default_of(tune_oii, name))


def number_pair(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    """``LOW,HIGH`` -> (low, high); the order and bounds are checked by the tuning itself."""
    try:
        low, high = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two numbers LOW,HIGH, got {value!r}") from None
    return low, high


@click.command("tune-oii")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--interval", metavar="M0,M1", default=pair_text("interval"), show_default=True, callback=number_pair,
              help="Target OII interval M0,M1 (App. C: 0.15,0.25).")
@click.option("--range", "alpha_range", metavar="A,B", default=pair_text("alpha_range"), show_default=True,
              callback=number_pair,
              help="Range A,B of α; the first trial trains at its middle.")
@click.option("--max-trials", type=click.IntRange(1), default=default_of(tune_oii, "max_trials"), show_default=True,
              help="Most trainings; n of them reach α to a step of (B - A)/2^n.")
@click.option("--split", type=click.Choice(["val", "test"]), default=default_of(tune_oii, "split"), show_default=True,
              help="Whose OII decides: the best epoch's validation scores (App. C) or the final test scores.")
@click.option("--keep-beta", is_flag=True, help="Leave the loss's β as configured instead of β = 1 - α.")
@click.option("--set", "overrides", multiple=True, help="Override any config key, e.g. --set train.epochs=5.")
@click.option("--epochs", type=int, help="Shortcut for --set train.epochs=N.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder of the trials (default runs/tune-oii-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace what an earlier run wrote into --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result (tune.json) as JSON.")
def tune_oii_command(config: str, interval: tuple[float, float], alpha_range: tuple[float, float], max_trials: int,
                     split: str, keep_beta: bool, overrides: tuple[str, ...], epochs: int | None, out: str | None,
                     overwrite: bool, as_json: bool) -> None:
    """Tune the loss's α until the OII of a training of CONFIG lies in the target interval.

    α weighs missed defects (defect pixels predicted as background): raising it lowers the
    OII. Each trial trains CONFIG with α in the middle of the current range; an OII above
    the interval raises α, one below lowers it (bisection), until the OII is inside or
    --max-trials trainings are done. Writes each trial's run, tune.json, tune.png and a
    comparison report.html into --out, and prints how many trainings a grid search of the
    same resolution would need.
    """
    overrides = overrides + ((f"train.epochs={epochs}",) if epochs is not None else ())

    def progress(trial) -> None:
        click.echo(f"trial {trial.index}: α = {trial.alpha:.4g} -> OII {trial.oii:.4f} ({trial.split}), "
                   f"{'inside' if trial.in_interval else 'outside'} [{interval[0]:g}, {interval[1]:g}]", err=True)

    result = tune_oii(config, interval=interval, alpha_range=alpha_range, max_trials=max_trials, out=out,
                      overrides=overrides, tie_beta=not keep_beta, split=split, on_trial=progress,
                      overwrite=overwrite)
    if as_json:
        echo_json(result.to_dict())
        return
    rows = result.rows()
    columns = ["trial", "alpha", *(["beta"] if any(r["beta"] is not None for r in rows) else []),
               "iou", "pa", "recall", "oii", "in interval", "next"]
    click.echo(format_table(columns, rows))
    for line in result.summary():
        click.echo(line)
    click.echo(f"results: {result.folder}/tune.json, {result.folder}/tune.png, {result.folder}/report.html")


COMMANDS = [tune_oii_command]

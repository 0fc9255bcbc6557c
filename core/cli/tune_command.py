"""``defectlab tune``: a hyperparameter search on Optuna, one run per trial, one report."""

from __future__ import annotations

import click
from defectlab.cli.output import echo_json
from defectlab.plugin_system.parameters import default_of
from defectlab.workflows.tune import tune, tune_settings


@click.command("tune")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--param", "params", multiple=True, metavar="KEY=SPEC",
              help="A config key to search (repeatable): KEY=LOW:HIGH (floats), KEY=log:LOW:HIGH, KEY=int:LOW:HIGH "
                   "or KEY=choice:A,B,..., e.g. --param train.lr=log:1e-5:1e-2 --param "
                   "train.optimizer=choice:sgd,adamw.")
@click.option("--trials", type=click.IntRange(1),
              help=f"Trials of the study in all, over every worker and run (default "
                   f"{default_of(tune_settings, 'trials')}).")
@click.option("--timeout", metavar="TIME", help="Start no trial after this long: seconds, or 90s, 30m, 1.5h, 1d.")
@click.option("--metric", help="What a trial scores, e.g. val/macro_f1 (default the config's train.monitor).")
@click.option("--direction", type=click.Choice(["auto", "minimize", "maximize"]),
              help="Lower or higher metric is better (default auto: as train.mode, else minimize a loss).")
@click.option("--storage", metavar="URL", help="Optuna storage URL shared by workers, e.g. postgresql://user@host/db "
              "(default --out/study.db).")
@click.option("--study", help="The study's name in the storage (default the config file's name).")
@click.option("--seed", type=int, help="Seed of the TPE sampler (default: each worker its own).")
@click.option("--pruning/--no-pruning", default=None, help="Stop poor trials early by the median rule (default on).")
@click.option("--set", "overrides", multiple=True, help="Override any config key in every trial, e.g. --set "
              "train.epochs=5, or a [tune] setting: --set tune.prune_warmup_epochs=2.")
@click.option("--epochs", type=int, help="Shortcut for --set train.epochs=N.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder of the trials (default runs/tune-<time>); the "
              "same study there is continued.")
@click.option("--json", "as_json", is_flag=True, help="Print the result (tune.json) as JSON.")
def tune_command(config: str, params: tuple[str, ...], trials: int | None, timeout: str | None, metric: str | None,
                 direction: str | None, storage: str | None, study: str | None, seed: int | None,
                 pruning: bool | None, overrides: tuple[str, ...], epochs: int | None, out: str | None,
                 as_json: bool) -> None:
    """Search the --param values of CONFIG with Optuna (TPE), pruning poor trials.

    Each trial trains CONFIG with sampled values into a run folder of its own in --out; a trial
    whose metric after an epoch is worse than the median of earlier trials at that epoch is
    stopped (its run.json says pruned). CONFIG's [tune] table can hold every option (see
    `defectlab show tune`). The same command again continues the study up to --trials; a process
    elsewhere with the same --storage and --study joins it as a worker. Writes tune.json,
    best.toml (CONFIG with the best values), and report.html with the trials, the optimisation
    history and the parameter importances.
    """
    given = {"trials": trials, "timeout": timeout, "metric": metric, "direction": direction, "storage": storage,
             "study": study, "seed": seed, "pruning": pruning}
    overrides = overrides + ((f"train.epochs={epochs}",) if epochs is not None else ())

    def progress(trial: dict) -> None:
        value = "" if trial["value"] is None else f" {trial['value']:.4g}"
        error = f" ({trial['error'].splitlines()[0]})" if trial["error"] else ""
        click.echo(f"trial {trial['number']}: {trial['state']}{value} after {trial['epochs'] or 0} epoch(s), "
                   f"{values_text(trial['params'])}{error}", err=True)

    result = tune(config, list(params), out=out, overrides=overrides, on_trial=progress,
                  **{key: value for key, value in given.items() if value is not None})
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(result.table())
    best = result.best
    if best is None:
        click.echo(f"no trial has completed yet; {result.metric} has no best")
    else:
        click.echo(f"best: trial {best['number']}, {result.metric} {best['value']:.4g}: {values_text(best['params'])}")
    click.echo("results: " + ", ".join(str(path) for path in result.files.values()))


def values_text(params: dict) -> str:
    """``loss.alpha=0.5822, train.optimizer=sgd``: a trial's values for people."""
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in params.items())


COMMANDS = [tune_command]

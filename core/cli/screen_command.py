"""``defectlab screen``: rank source datasets for a target (Valle Salgado et al. 2023) and cut the chosen subset."""

from __future__ import annotations

import click
from defectlab.cli.output import echo_json
from defectlab.plugin_system.parameters import default_of
from defectlab.workflows.screen import screen


@click.command("screen")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--target", help="Target DATASET: a path, NAME or NAME:VALUE (e.g. elpv:mono).")
@click.option("--source", "sources", multiple=True, help="A candidate source DATASET (repeatable).")
@click.option("--distance", help=f"Distance component (default {default_of(screen, 'distance')}).")
@click.option("--imbalance", help=f"Input-scope imbalance component (default {default_of(screen, 'imbalance')}).")
@click.option("--epsilon", type=float, help=f"Epsilon of the score's denominator (default {default_of(screen, 'epsilon')}).")
@click.option("--top", type=int,
              help=f"Choose the largest source among this many lowest scores (default {default_of(screen, 'top')}).")
@click.option("--all-pairs", is_flag=True, default=None, help="Score every dataset against every other.")
@click.option("--balance", type=click.Choice(["none", "uniform", "target"]), help="Balancing plan in the subset CSV.")
@click.option("--set", "overrides", multiple=True, help="Override any config key, e.g. --set distance.k=5.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default runs/screen-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace what an earlier run wrote into --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def screen_command(config: str | None, target: str | None, sources: tuple[str, ...], distance: str | None,
                   imbalance: str | None, epsilon: float | None, top: int | None, all_pairs: bool | None,
                   balance: str | None, overrides: tuple[str, ...], out: str | None, overwrite: bool,
                   as_json: bool) -> None:
    """Rank source datasets for a target by distance, imbalance and label overlap.

    Score = distance * imbalance / (shared classes + epsilon), lower is closer; among the
    `top` lowest the source with most samples is chosen. Writes screen.json, the chosen
    source's subset as subset.csv and, with --all-pairs, pairs.png.
    """
    from defectlab.plugin_system.config import apply_overrides, load_toml, set_value
    from defectlab.workflows.screen import run_screen

    settings = load_toml(config) if config else {}
    command_line = {"target": target, "distance.name": distance, "imbalance.name": imbalance,
                    "screen.epsilon": epsilon, "screen.top": top, "screen.all_pairs": all_pairs,
                    "screen.balance": balance}
    if sources:
        settings["sources"] = list(sources)
    for key, value in command_line.items():
        if value is not None:
            set_value(settings, key.split("."), value)
    settings = apply_overrides(settings, list(overrides))
    result, _, written = run_screen(settings, out, source=config or "command line", overwrite=overwrite)
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(result.table())
    best = result.best
    click.echo(f"\nchosen source: {best.source if best else 'none (no source shares a class with the target)'}")
    for label, path in written.items():
        click.echo(f"{label}: {path}")


COMMANDS = [screen_command]

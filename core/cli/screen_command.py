"""``defectlab screen``: rank source datasets for a target (SPEC 000) and cut the chosen subset."""

from __future__ import annotations

from typing import Any

import click

from defectlab.cli.output import echo_json
from defectlab.data.subsets import Balance


def screen_settings(epsilon: float = 1e-6, top: int = 3, all_pairs: bool = False, balance: Balance = "none",
                    seed: int = 0) -> None:
    """Settings of a screening.

    Args:
        epsilon: added to the shared-class count in the score's denominator.
        top: the chosen source is the largest among this many lowest scores.
        all_pairs: also score every dataset against every other (heatmap).
        balance: re-balancing plan written into the subset CSV: none, uniform or target.
        seed: seed of the balancing plan.
    """


def screen_schema() -> dict[str, Any]:
    from defectlab.plugin_system.config import Section

    return {
        "target": Section(kind="dataset", required=True),
        "sources": Section(kind="dataset", many=True, required=True),
        "distance": Section(kind="distance"),
        "imbalance": Section(kind="imbalance"),
        "screen": Section(settings=screen_settings),
    }


@click.command("screen")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--target", help="Target DATASET: a path, NAME or NAME:VALUE (e.g. elpv:mono).")
@click.option("--source", "sources", multiple=True, help="A candidate source DATASET (repeatable).")
@click.option("--distance", help="Distance component (default emd).")
@click.option("--imbalance", help="Input-scope imbalance component (default gini).")
@click.option("--epsilon", type=float, help="Epsilon of the score's denominator (default 1e-6).")
@click.option("--top", type=int, help="Choose the largest source among this many lowest scores (default 3).")
@click.option("--all-pairs", is_flag=True, default=None, help="Score every dataset against every other.")
@click.option("--balance", type=click.Choice(["none", "uniform", "target"]), help="Balancing plan in the subset CSV.")
@click.option("--set", "overrides", multiple=True, help="Override any config key, e.g. --set distance.k=5.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default runs/screen-<time>).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def screen_command(config: str | None, target: str | None, sources: tuple[str, ...], distance: str | None,
                   imbalance: str | None, epsilon: float | None, top: int | None, all_pairs: bool | None,
                   balance: str | None, overrides: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Rank source datasets for a target by distance, imbalance and label overlap.

    Score = distance * imbalance / (shared classes + epsilon), lower is closer; among the
    `top` lowest the source with most samples is chosen. Writes screen.json, the chosen
    source's subset as subset.csv and, with --all-pairs, pairs.png.
    """
    from defectlab.plugin_system.config import apply_overrides, load_toml, set_value, validate
    from defectlab.plugin_system.errors import ConfigError
    from defectlab.runs.run import new_run_dir, write_resolved_config
    from defectlab.workflows.screen import screen

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
    for kind, default in (("distance", "emd"), ("imbalance", "gini")):
        spec = settings.setdefault(kind, {"name": default})
        if isinstance(spec, dict):
            spec.setdefault("name", default)
    problems = validate(settings, screen_schema())
    if problems:
        raise ConfigError(problems, source=config or "command line")
    options = settings.get("screen", {})
    result = screen(settings["target"], settings["sources"], distance=settings["distance"],
                    imbalance=settings["imbalance"], epsilon=options.get("epsilon", 1e-6),
                    top=options.get("top", 3), all_pairs=options.get("all_pairs", False))
    folder = new_run_dir("screen", out)
    write_resolved_config(folder, settings, options.get("seed", 0))
    written = result.save(folder, balance=options.get("balance", "none"), seed=options.get("seed", 0))
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(result.table())
    best = result.best
    click.echo(f"\nchosen source: {best.source if best else 'none (no source shares a class with the target)'}")
    for label, path in written.items():
        click.echo(f"{label}: {path}")


COMMANDS = [screen_command]

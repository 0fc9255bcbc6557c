"""``defectlab validate``: check a config file as a whole before running anything."""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, help="Override a key, e.g. --set loss.alpha=0.7.")
def validate_command(config: str, overrides: tuple[str, ...]) -> None:
    """Check CONFIG: every unknown name, parameter or wrong type is listed with its TOML path."""
    from defectlab.config import load_config

    load_config(config, list(overrides))
    click.echo(f"{config}: ok")


COMMANDS = [validate_command]

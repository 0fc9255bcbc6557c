"""``defectlab validate``: check a config file as a whole before running anything."""

from __future__ import annotations

import click

TRAINING_SECTIONS = ("data", "model", "train", "stages")
SCREENING_SECTIONS = ("target", "sources")


@click.command("validate")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, help="Override a key, e.g. --set loss.alpha=0.7.")
def validate_command(config: str, overrides: tuple[str, ...]) -> None:
    """Check CONFIG: every unknown name, parameter or wrong type is listed with its TOML path.

    A config with data/model/train/stages sections is checked as a training config (every
    stage), one with target/sources as a screening config, anything else as component specs.
    """
    from defectlab.plugin_system.config import (
        ConfigError,
        apply_overrides,
        load_config,
        load_toml,
        validate,
    )

    values = apply_overrides(load_toml(config), list(overrides))
    if any(key in values for key in TRAINING_SECTIONS):
        from defectlab.workflows.train import check_config

        check_config(values, config)
    elif any(key in values for key in SCREENING_SECTIONS):
        from defectlab.workflows.screen import screen_schema

        problems = validate(values, screen_schema())
        if problems:
            raise ConfigError(problems, source=config)
    else:
        load_config(config, list(overrides))
    click.echo(f"{config}: ok")


COMMANDS = [validate_command]

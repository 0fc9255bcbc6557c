"""The ``defectlab`` entry point: the built-in commands on the root group, and how errors end a command."""

from __future__ import annotations

import os
import sys

import click
from defectlab.plugin_system.commands import DEBUG_ENV, cli
from defectlab.plugin_system.errors import DefectlabError


def _register_builtin_commands() -> None:
    from defectlab.cli import (
        catalog,
        component_verbs,
        config_commands,
        data_commands,
        demo_command,
        screen_command,
        train_commands,
        tune_oii_command,
    )

    for module in (catalog, component_verbs, config_commands, data_commands, demo_command, screen_command,
                   train_commands, tune_oii_command):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_builtin_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors exit 1 with one line, usage errors exit 2, no bare tracebacks."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get(DEBUG_ENV) == "1"
    try:
        result = cli.main(args=args, prog_name="defectlab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DefectlabError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"Error: unexpected {type(exc).__name__}: {exc}\n"
                   f"This is a bug in defectlab or a plugin; rerun with --debug for the traceback "
                   f"and report it.", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)

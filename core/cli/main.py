"""The ``defectlab`` command group: error handling, plugin commands, and the built-in commands."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from defectlab.plugin_system.errors import DefectlabError

DEBUG_ENV = "DEFECTLAB_DEBUG"


class DefectlabGroup(click.Group):
    """A click group that adds plugin commands before any command is looked up."""

    _commands_from: Any = None  # the plugin loader whose commands were added

    def add_plugin_commands(self) -> None:
        """Run every plugin's ``register_commands`` hook once per loader; failures are recorded on the plugin."""
        from defectlab.plugin_system.loading import get_loader

        loader = get_loader()
        if self._commands_from is not loader:
            self._commands_from = loader
            loader.add_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self.add_plugin_commands()
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            from defectlab.plugin_system.errors import did_you_mean

            hint = did_you_mean(args[0], self.list_commands(ctx))
            ctx.fail(f"no such command '{args[0]}'{hint} (see `defectlab --help`)")
        return super().resolve_command(ctx, args)


def _version() -> str:
    from defectlab import __version__

    return __version__


@click.group(cls=DefectlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=_version(), prog_name="defectlab", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def cli(debug: bool) -> None:
    """defectlab: plugin-based industrial defect inspection.

    Every method is a component of a kind (distance, imbalance, backbone, ssl, loss,
    evaluator, dataset) provided by a plugin. Find them with `defectlab list`, read their
    parameters with `defectlab show KIND NAME`, and run them with the kind's verb.
    """
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _register_builtin_commands() -> None:
    from defectlab.cli import (catalog, component_verbs, config_commands, data_commands, demo_command, screen_command,
                               train_commands, tune_oii_command)

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

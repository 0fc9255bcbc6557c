"""The root ``defectlab`` command group: the built-in commands are added to it, and so are plugins'.

It lives with the plugin system because ``register_commands(cli)`` hands it to plugins: a
plugin's command is tested by invoking this group (exported as ``defectlab.cli_group``).
"""

from __future__ import annotations

import os
from typing import Any

import click
from defectlab.plugin_system.errors import did_you_mean
from defectlab.plugin_system.version import VERSION

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
        if name in self.commands:  # a built-in: plugins load when a command needs them, not before
            return self.commands[name]
        self.add_plugin_commands()
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            hint = did_you_mean(args[0], self.list_commands(ctx))
            ctx.fail(f"no such command '{args[0]}'{hint} (see `defectlab --help`)")
        return super().resolve_command(ctx, args)


@click.group(cls=DefectlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=VERSION, prog_name="defectlab", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def cli(debug: bool) -> None:
    """defectlab: plugin-based industrial defect inspection.

    Every method is a component of a kind (distance, imbalance, backbone, ssl, loss,
    evaluator, dataset, callback) provided by a plugin. Find them with `defectlab list`, read their
    parameters with `defectlab show KIND NAME`, and run them with the kind's verb.
    """
    if debug:
        os.environ[DEBUG_ENV] = "1"

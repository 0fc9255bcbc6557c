"""The ``defectlab`` entry point: the built-in commands on the root group, and how errors end a command."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import click
from defectlab.plugin_system.commands import DEBUG_ENV, cli
from defectlab.plugin_system.errors import DefectlabError, missing_training_stack
from defectlab.plugin_system.files import write_error
from defectlab.plugin_system.loading import raising_plugin


def _register_builtin_commands() -> None:
    from defectlab.cli import (
        catalog,
        component_verbs,
        config_commands,
        convert_command,
        data_commands,
        demo_command,
        export_command,
        pretrain_command,
        screen_command,
        sweep_command,
        train_commands,
        tune_command,
        tune_oii_command,
    )

    for module in (catalog, component_verbs, config_commands, convert_command, data_commands, demo_command,
                   export_command, pretrain_command, screen_command, sweep_command, train_commands, tune_command,
                   tune_oii_command):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_builtin_commands()


#: errno values of a write that the user's environment refused: a message, not a bug report.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EPIPE}


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors exit 1 with one line, usage errors exit 2, no bare tracebacks."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get(DEBUG_ENV) == "1"
    try:
        result = cli.main(args=args, prog_name="defectlab", standalone_mode=False)
        sys.stdout.flush()  # a full disk or closed pipe on stdout shows here, not at exit
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
    except ModuleNotFoundError as exc:
        missing = missing_training_stack(exc)
        if debug or missing is None:
            _unexpected(exc, debug)
        click.echo(f"Error: this command {missing}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except OSError as exc:
        if debug or exc.errno not in ENVIRONMENT_ERRNOS:
            _unexpected(exc, debug)
        _quiet_stdout()
        if exc.errno != errno.EPIPE:  # a reader that stopped reading needs no message
            click.echo(f"Error: {write_error(Path(exc.filename) if exc.filename else None, exc)}", err=True)
        sys.exit(1)
    except Exception as exc:
        _unexpected(exc, debug)
    sys.exit(result if isinstance(result, int) else 0)


def _unexpected(exc: Exception, debug: bool) -> None:
    """An error nobody foresaw: named after the plugin it came from, if a plugin raised it."""
    if debug:
        raise exc
    plugin = raising_plugin(exc)
    if plugin is not None:
        click.echo(f"Error: plugin '{plugin}' raised {type(exc).__name__}: {exc}\n"
                   f"This is a bug in that plugin, not in your input; report it to its authors (rerun with --debug "
                   f"for the traceback), or leave it out with DEFECTLAB_DISABLE_PLUGINS={plugin}.", err=True)
    else:
        click.echo(f"Error: unexpected {type(exc).__name__}: {exc}\n"
                   f"This is a bug in defectlab; rerun with --debug for the traceback and report it.", err=True)
    sys.exit(1)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass

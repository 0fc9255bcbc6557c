"""Commands that show what is installed: ``plugins``, ``list`` and ``show``."""

from __future__ import annotations

import click
from defectlab.cli.output import echo_json
from defectlab.plugin_system.kinds import KINDS
from defectlab.runs.tables import format_table


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(as_json: bool) -> None:
    """List installed plugins: version, kinds and components provided, load errors."""
    from defectlab.plugin_system.components import plugins

    records = plugins()
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    rows = [(r.name, r.version, ", ".join(r.kinds) or "-", len(r.components), "FAILED" if r.error else "ok")
            for r in records]
    click.echo(format_table(["plugin", "version", "kinds", "components", "status"], rows))
    for record in records:
        if record.error:
            click.echo(f"\n{record.name}: {record.error}", err=True)


@click.command("list")
@click.argument("kind", required=False)
@click.argument("pattern", required=False, default="*")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(kind: str | None, pattern: str, as_json: bool) -> None:
    """List components, optionally of one KIND and matching an fnmatch PATTERN.

    A single argument that is not a kind is taken as a pattern over every kind:
    `defectlab list 'dibe*'`.
    """
    from defectlab.plugin_system.components import list_components
    from defectlab.plugin_system.errors import UnknownComponentError, did_you_mean

    if kind is not None and kind not in KINDS:
        if pattern != "*":
            raise UnknownComponentError(f"unknown kind '{kind}'{did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})")
        kind, pattern = None, kind
    components = list_components(kind, pattern)
    if not components and not any(c in pattern for c in "*?["):
        names = [c.name for c in list_components(kind)] + ([] if kind else list(KINDS))
        what = f"{kind} component" if kind else "component or kind"
        raise UnknownComponentError(f"no {what} is named '{pattern}'{did_you_mean(pattern, names)} "
                                    f"(see `defectlab list{' ' + kind if kind else ''}`)")
    if not components and not as_json:
        click.echo(f"no {kind + ' ' if kind else ''}component matches '{pattern}'", err=True)
        return
    if as_json:
        echo_json([c.to_dict() for c in components])
        return
    rows = [(c.kind, c.name, c.plugin, c.summary) for c in components]
    click.echo(format_table(["kind", "name", "plugin", "summary"], rows))


@click.command("show")
@click.argument("kind")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show_command(kind: str, name: str | None, as_json: bool) -> None:
    """Show one component: summary, plugin, and its parameters with types, defaults and docs.

    KIND may also be a config section (data, train, pretrain, export): `defectlab show train`
    lists the [train] settings, `defectlab show train ema` those of its [train.ema] table.
    """
    from defectlab.plugin_system.components import describe
    from defectlab.plugin_system.kinds import KINDS

    if kind not in KINDS:
        from defectlab.workflows.train import describe_section

        info = describe_section(kind, name)
    elif name is None:
        raise click.UsageError(f"show {kind} needs the NAME of a component (`defectlab list {kind}`)")
    else:
        info = describe(kind, name)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['kind']} '{info['name']}'" + (f" from plugin {info['plugin']} {info['version']}"
                                                    if "plugin" in info else ""))
    for key in ("scope", "tasks"):
        if key in info:
            value = info[key]
            click.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    click.echo("")
    click.echo(info["doc"] or info["summary"] or "(no description)")
    click.echo("")
    if not info["parameters"]:
        click.echo("parameters: none")
        return
    rows = [(p["name"], p["type"], "(required)" if p["required"] else repr(p["default"]), p["doc"])
            for p in info["parameters"]]
    click.echo(format_table(["parameter", "type", "default", "doc"], rows))


COMMANDS = [plugins_command, list_command, show_command]

"""The public functions: find, describe and create components, and list plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from defectlab.plugin_system.errors import ParameterError
from defectlab.plugin_system.loading import get_loader
from defectlab.plugin_system.registry import Component, PluginRecord


def list_components(kind: str | None = None, pattern: str = "*") -> list[Component]:
    """Registered components of ``kind`` (every kind if None) whose name matches ``pattern``."""
    return get_loader().collected(kind).list(kind, pattern)


def get_component(kind: str, name: str) -> Component:
    """The registered component ``name`` of ``kind``; unknown names suggest close matches."""
    return get_loader().collected(kind).get(kind, name)


def describe(kind: str, name: str) -> dict[str, Any]:
    """Summary, plugin, version and parameters (type, default, doc) of one component."""
    return get_component(kind, name).to_dict()


def split_spec(name_or_spec: str | Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``"gini"`` or ``{"name": "gini", **params}`` -> (name, params)."""
    if isinstance(name_or_spec, str):
        return name_or_spec, {}
    if isinstance(name_or_spec, Mapping):
        params = dict(name_or_spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ParameterError(f"{where}: a component spec needs a 'name' string, got {dict(name_or_spec)!r}")
        return name, params
    raise ParameterError(f"{where}: expected a component name or {{name = ..., ...}}, got {name_or_spec!r}")


def resolve_spec(kind: str, name_or_spec: str | Mapping[str, Any], where: str | None = None
                 ) -> tuple[Component, dict[str, Any]]:
    """The component and parameters a spec names.

    ``NAME:VALUE`` is shorthand for VALUE as the first parameter: ``timm:resnet18``, ``elpv:mono``.
    """
    name, params = split_spec(name_or_spec, where or kind)
    if ":" in name:
        name, value = name.split(":", 1)
        component = get_component(kind, name)
        if not component.parameters:
            raise ParameterError(f"{where or kind}: {kind} '{name}' takes no parameters, so '{name}:{value}' "
                                 f"has nothing to set")
        return component, {component.parameters[0].name: value, **params}
    return get_component(kind, name), params


def create(kind: str, name_or_spec: str | Mapping[str, Any], **params: Any) -> Any:
    """Build a component from its name or spec; ``params`` override the spec's.

    Names and parameters are validated before anything is built, and strings are coerced to
    the annotated types (so command-line values work as they are).
    """
    component, spec_params = resolve_spec(kind, name_or_spec)
    return component.build({**spec_params, **params}, where=kind)


def plugins() -> list[PluginRecord]:
    """Every plugin seen: name, version, kinds and components provided, load error if any."""
    from defectlab.plugin_system.commands import cli

    cli.add_plugin_commands()  # so a failing register_commands hook is recorded too
    return sorted(get_loader().registry.plugins.values(), key=lambda r: r.name)

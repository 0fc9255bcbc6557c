"""TOML configs of component specs: loading, command-line overrides, and whole-config validation.

A config maps sections to component specs (``[loss] name = "dibe"``), lists of specs
(``[[evaluators]]``) or plain settings checked against a function's signature. Every problem is
reported at once with its TOML path, before anything is built.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import ConfigError, DefectlabError, did_you_mean
from defectlab.plugin_system.kinds import KINDS
from defectlab.plugin_system.parameters import Parameter, coerce, parameters_of


@dataclass(frozen=True)
class Section:
    """What a top-level key of a config holds: one spec of ``kind``, a list of them, settings, or a value.

    A dataset spec may also be a plain string (a path or ``NAME:VALUE``), checked when opened.
    """

    kind: str | None = None
    many: bool = False
    settings: Callable[..., Any] | Sequence[Parameter] | None = None
    value_type: Any = None
    required: bool = False
    supplied: tuple[str, ...] = ()  # component parameters the workflow passes itself


Schema = Mapping[str, Section]
DEFAULT_SCHEMA: Schema = {kind: Section(kind=kind) for kind in KINDS}


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file (UTF-8, a leading BOM allowed), with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DefectlabError(f"config file '{path}' does not exist")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise DefectlabError(f"config file '{path}' is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DefectlabError(f"config file '{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except ValueError as exc:  # a value TOML reads but Python cannot hold, e.g. an integer of 5000 digits
        raise DefectlabError(f"config file '{path}' holds a value that cannot be read: {exc}") from exc
    except RecursionError as exc:
        raise DefectlabError(f"config file '{path}' is nested too deeply to be a config") from exc
    except OSError as exc:
        raise DefectlabError(f"cannot read config file '{path}': {exc.strerror or exc}") from exc


def parse_override(text: str) -> tuple[list[str], Any]:
    """``loss.alpha=0.7`` -> (['loss', 'alpha'], 0.7); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise DefectlabError(f"--set '{text}': expected KEY=VALUE, e.g. --set loss.alpha=0.7")
    key, raw = text.split("=", 1)
    keys = [k.strip() for k in key.strip().split(".")]
    if not all(keys):
        raise DefectlabError(f"--set '{text}': the key has an empty part")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return keys, value


def set_value(config: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``config[k1][k2]... = value`` in place, making tables as needed; list items by index."""
    node: Any = config
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_index(key, node, keys[: depth + 1])]
        else:
            node = node.setdefault(key, {})
            if not isinstance(node, (dict, list)):
                raise DefectlabError(f"--set {'.'.join(keys)}: '{'.'.join(keys[:depth + 1])}' is not a table")
    last = keys[-1]
    if isinstance(node, list):
        node[_index(last, node, keys)] = value
    else:
        node[last] = value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``config`` with each ``KEY=VALUE`` override set (list items by index: ``evaluators.0.name``)."""
    result = copy.deepcopy(config)
    for text in overrides:
        set_value(result, *parse_override(text))
    return result


def _index(key: str, items: list[Any], path: list[str]) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise DefectlabError(f"--set {'.'.join(path)}: '{key}' is not an index of a list of {len(items)}")
    return int(key)


def validate(config: Mapping[str, Any], schema: Schema = DEFAULT_SCHEMA) -> list[str]:
    """Every problem in ``config`` as ``path: message`` lines; empty when it is valid."""
    from defectlab.plugin_system.components import resolve_spec

    problems: list[str] = []
    for key in config:
        if key not in schema:
            problems.append(f"{key}: unknown section{did_you_mean(key, schema)} (sections: {', '.join(schema)})")
    for key, section in schema.items():
        if key not in config:
            if section.required:
                problems.append(f"{key}: required section is missing")
            continue
        value = config[key]
        if section.settings is not None:
            problems.extend(check_settings(value, section.settings, key))
            continue
        if section.value_type is not None:
            try:
                coerce(value, section.value_type, key)
            except DefectlabError as exc:
                problems.append(str(exc))
            continue
        specs = value if section.many else [value]
        if section.many and not isinstance(value, list):
            problems.append(f"{key}: expected a list of component specs ([[{key}]])")
            continue
        for index, spec in enumerate(specs):
            where = f"{key}.{index}" if section.many else key
            if section.kind == "dataset" and isinstance(spec, str):
                continue
            try:
                component, params = resolve_spec(section.kind, spec, where)
            except DefectlabError as exc:
                problems.append(str(exc) if str(exc).startswith(where) else f"{where}: {exc}")
                continue
            problems.extend(component.check_params(params, where, section.supplied)[1])
    return problems


def keyword_settings(*functions: Callable[..., Any]) -> list[Parameter]:
    """The keyword-only parameters of ``functions``: the settings a workflow declares in its signatures."""
    import inspect

    return [p for function in functions for p in parameters_of(function)
            if inspect.signature(function).parameters[p.name].kind is inspect.Parameter.KEYWORD_ONLY]


def check_settings(values: Any, settings: Callable[..., Any] | Sequence[Parameter], where: str) -> list[str]:
    """Problems of a settings table checked against a function's parameters (or the parameters given)."""
    if not isinstance(values, Mapping):
        return [f"{where}: expected a table of settings, got {values!r}"]
    known = {p.name: p for p in (parameters_of(settings) if callable(settings) else settings)}
    problems = []
    for key, value in values.items():
        if key not in known:
            problems.append(f"{where}.{key}: unknown setting{did_you_mean(key, known)}")
            continue
        try:
            known[key].coerce(value, f"{where}.{key}")
        except DefectlabError as exc:
            problems.append(str(exc))
    return problems


def load_config(path: str | Path, overrides: list[str] | None = None, schema: Schema = DEFAULT_SCHEMA) -> dict[str, Any]:
    """Load, override and validate a config; raise ConfigError listing every problem."""
    config = apply_overrides(load_toml(path), overrides or [])
    problems = validate(config, schema)
    if problems:
        raise ConfigError(problems, source=str(path))
    return config

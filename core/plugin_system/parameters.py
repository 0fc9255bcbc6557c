"""A component's parameters, read from its constructor's signature and docstring.

The signature is the single source of truth: ``show`` prints it, configs are validated against
it, and command-line strings are coerced to its annotated types. Bounds are declared there too,
``epochs: Annotated[int, Range(1)] = 10``, and checked with everything else.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import ParameterError

REQUIRED = inspect.Parameter.empty
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric parameter, declared in its annotation: ``Annotated[float, Range(0, 1, high_open=True)]``.

    A None bound is unbounded on that side; ``low_open``/``high_open`` exclude the bound itself.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "any"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies within the bounds (NaN never does)."""
        if value != value:
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def check(self, value: Any, where: str) -> None:
        """ParameterError naming ``where`` unless every number in ``value`` lies within the bounds."""
        for number in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(number, (int, float)) and not isinstance(number, bool) and not self.contains(number):
                raise ParameterError(f"{where}: must be {self}, got {number!r}")


@dataclass(frozen=True)
class Parameter:
    """One constructor parameter: name, annotated type, default (``REQUIRED`` if none), doc, and the checks
    declared beside its type (``Annotated[int, Range(1)]``)."""

    name: str
    annotation: Any
    default: Any
    doc: str
    checks: tuple[Any, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_name(self) -> str:
        return " ".join([type_name(self.annotation), *map(str, self.checks)])

    def coerce(self, value: Any, where: str) -> Any:
        """``value`` converted to the declared type and checked (see :func:`coerce`)."""
        return coerce(value, self.annotation, where, self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type_name,
            "default": None if self.required else _jsonable(self.default),
            "required": self.required,
            "doc": self.doc,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def type_name(annotation: Any) -> str:
    """A short readable name of a type annotation (``float``, ``list[int]``, ``'a' | 'b'``)."""
    if annotation is REQUIRED:
        return "any"
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _docstring_params(doc: str | None) -> dict[str, str]:
    """Parameter docs from a Google-style ``Args:`` section (``name: text`` or ``name (type): text``)."""
    result: dict[str, str] = {}
    if not doc:
        return result
    lines = inspect.cleandoc(doc).splitlines()
    inside, indent, current = False, None, None
    for line in lines:
        if re.match(r"^\s*(Args|Arguments|Parameters|Params):\s*$", line):
            inside, indent, current = True, None, None
            continue
        if not inside:
            continue
        if not line.strip():
            current = None
            continue
        this_indent = len(line) - len(line.lstrip())
        if indent is None:
            indent = this_indent
        if this_indent < indent or (this_indent == 0 and line.rstrip().endswith(":")):
            inside = False
            continue
        match = re.match(r"^\s*\*{0,2}(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
        if this_indent == indent and match:
            current = match.group(1)
            result[current] = match.group(3).strip()
        elif current is not None:
            result[current] = (result[current] + " " + line.strip()).strip()
    return result


def description_of(obj: Any) -> str:
    """An object's docstring without its ``Args:`` section (the parameter table shows that)."""
    lines = (inspect.getdoc(obj) or "").splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^(Args|Arguments|Parameters|Params):\s*$", line):
            return "\n".join(lines[:index]).strip()
    return "\n".join(lines).strip()


def summary_of(obj: Any) -> str:
    """The first line of an object's docstring."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def parameters_of(obj: Any) -> tuple[Parameter, ...]:
    """The parameters of a class's constructor or of a factory function."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ()
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    docs = _docstring_params(inspect.getdoc(obj))
    if inspect.isclass(obj):
        docs = {**_docstring_params(obj.__init__.__doc__), **docs}
    params = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation, checks = split_checks(hints.get(p.name, p.annotation))
        params.append(Parameter(p.name, annotation, p.default, docs.get(p.name, ""), checks))
    return tuple(params)


def default_of(function: Any, name: str) -> Any:
    """The default of ``function``'s parameter ``name``: where a CLI's help and a config's gaps read it."""
    return inspect.signature(function).parameters[name].default


def check_arguments(function: Any, values: dict[str, Any], where: str) -> None:
    """Run the declared type and checks of ``function``'s parameters on ``values`` (e.g. ``locals()``),
    for objects built directly in Python rather than from a config; ParameterError on the first problem."""
    for parameter in parameters_of(function):
        if parameter.name in values:
            parameter.coerce(values[parameter.name], f"{where}.{parameter.name}")


def split_checks(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[int, Range(1)]`` -> (int, (Range(1),)): the type, and the extras that can ``check`` a value."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, tuple(e for e in extras if callable(getattr(e, "check", None)))
    return annotation, ()


def accepts_any_keyword(obj: Any) -> bool:
    """Whether the constructor takes ``**kwargs`` (then unknown names are passed through)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def coerce(value: Any, annotation: Any, where: str, checks: tuple[Any, ...] = ()) -> Any:
    """Convert ``value`` to ``annotation`` (strings from the command line included) and run its checks.

    Raises ParameterError naming ``where`` (e.g. ``loss.alpha``) when the value does not fit. A
    check is any object with ``check(value, where)`` given in ``Annotated`` beside the type
    (:class:`Range`, or a rule of its own such as fractions that sum to 1); None passes them all.
    """
    annotation, declared = split_checks(annotation)
    try:
        converted = _coerce(value, annotation)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{where}: expected {type_name(annotation)}, got {value!r}") from exc
    if converted is not None:
        for check in checks or declared:
            check.check(converted, where)
    return converted


def _coerce(value: Any, annotation: Any) -> Any:
    if annotation is REQUIRED or annotation is Any:
        return value
    if annotation is type(None):
        if value is None or (isinstance(value, str) and value.lower() in _NONE):
            return None
        raise ValueError(value)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(value)
    if origin in (typing.Union, types.UnionType):
        ordered = sorted(args, key=lambda a: a is str)  # try str last so "0.5" becomes a float
        for arg in ordered:
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise ValueError(value)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        items = _split(value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ValueError(value)
            return tuple(_coerce(v, a) for v, a in zip(items, args))
        item_type = args[0] if args else Any
        converted = [_coerce(v, item_type) for v in items]
        return tuple(converted) if origin is tuple or annotation is tuple else converted
    if origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
        raise ValueError(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(value)
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value)
        raise ValueError(value)
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError(value)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ValueError(value)
    if annotation is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ValueError(value)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ValueError(value)
    return value


def _split(value: Any) -> list[Any]:
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        return [v.strip() for v in text.split(",") if v.strip()] if text else []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(value)

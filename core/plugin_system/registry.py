"""The registry: which plugin provides which component, and the checks made before building one."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from defectlab.plugin_system.errors import (
    DefectlabError,
    ParameterError,
    PluginError,
    UnknownComponentError,
    did_you_mean,
)
from defectlab.plugin_system.kinds import BACKBONE_TASKS, IMBALANCE_SCOPES, KINDS
from defectlab.plugin_system.naming import natural_key
from defectlab.plugin_system.parameters import (
    Parameter,
    accepts_any_keyword,
    description_of,
    parameters_of,
    summary_of,
)


def snake_case(name: str) -> str:
    """``FocalTversky`` -> ``focal_tversky``, ``OIIMetric`` -> ``oii_metric``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


def registered_name(obj: Any) -> str:
    """A component's name: its ``name`` attribute if it is a string, else its ``__name__`` in snake_case."""
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return snake_case(getattr(obj, "__name__", type(obj).__name__))


@dataclass(frozen=True)
class Component:
    """A registered component: what it is, who provides it, and the parameters it takes."""

    kind: str
    name: str
    obj: Any
    summary: str
    plugin: str
    version: str
    parameters: tuple[Parameter, ...]

    @property
    def attributes(self) -> dict[str, Any]:
        """Kind-specific declarations (``scope`` of an imbalance metric, ``tasks`` of a backbone)."""
        found = {}
        for key in ("scope", "tasks"):
            value = getattr(self.obj, key, None)
            if value is not None:
                found[key] = list(value) if isinstance(value, (tuple, list, set)) else value
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "summary": self.summary,
            "plugin": self.plugin,
            "version": self.version,
            **self.attributes,
            "parameters": [p.to_dict() for p in self.parameters],
            "doc": description_of(self.obj),
        }

    def check_params(self, params: dict[str, Any], where: str, supplied: tuple[str, ...] = ()
                     ) -> tuple[dict[str, Any], list[str]]:
        """Coerce ``params`` to the declared types; return them with one line per problem.

        ``supplied`` names parameters the workflow passes itself (an objective's ``encoder``): a
        config may not set them, and they are not missing when it does not.
        """
        known = {p.name: p for p in self.parameters}
        values, problems = {}, []
        for key, value in params.items():
            if key in supplied:
                problems.append(f"{where}.{key}: set by the workflow, not in the config")
                continue
            if key not in known:
                if accepts_any_keyword(self.obj):
                    values[key] = value
                    continue
                hint = did_you_mean(key, known) or f" ({self.kind} '{self.name}' takes: {', '.join(known) or 'nothing'})"
                problems.append(f"{where}.{key}: unknown parameter{hint}")
                continue
            try:
                values[key] = known[key].coerce(value, f"{where}.{key}")
            except ParameterError as exc:
                problems.append(str(exc))
        for p in self.parameters:
            if p.required and p.name not in params and p.name not in supplied:
                problems.append(f"{where}.{p.name}: required parameter of {self.kind} '{self.name}' is missing")
        return values, problems

    def build(self, params: dict[str, Any], where: str | None = None) -> Any:
        """Validate ``params`` and call the component with them."""
        values, problems = self.check_params(params, where or self.kind)
        if problems:
            raise ParameterError("; ".join(problems))
        try:
            return self.obj(**values)
        except DefectlabError:
            raise
        except ValueError as exc:
            raise ParameterError(f"{self.kind} '{self.name}': {exc}") from exc


@dataclass
class PluginRecord:
    """A plugin as loaded: its name, version, what it provides and what went wrong."""

    name: str
    version: str
    module: str
    components: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return sorted({kind for kind, _ in self.components})

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "kinds": self.kinds,
            "components": [f"{kind}/{name}" for kind, name in self.components],
            "error": self.error,
        }


class Registry:
    """Components by kind and name, collected plugin by plugin so each is attributed."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.plugins: dict[str, PluginRecord] = {}
        self._candidates: dict[str, dict[str, list[Component]]] = {kind: {} for kind in KINDS}

    def record_failure(self, record: PluginRecord, message: str, exc: BaseException | None = None) -> None:
        """Note what went wrong with a plugin; in strict mode raise it instead."""
        if self.strict:
            raise PluginError(f"plugin '{record.name}': {message}") from exc
        record.errors.append(message)

    def add(self, record: PluginRecord, kind: str, obj: Any) -> None:
        """Register one component returned by ``record``'s hook for ``kind``."""
        if not callable(obj):
            self.record_failure(record, f"{KINDS[kind].hook} returned {obj!r}, which is not a class or function")
            return
        name = registered_name(obj)
        for attribute in KINDS[kind].required_attributes:
            if getattr(obj, attribute, None) is None:
                self.record_failure(record, f"{kind} '{name}' does not declare '{attribute}'")
                return
        if kind == "imbalance" and obj.scope not in IMBALANCE_SCOPES:
            self.record_failure(record, f"imbalance '{name}' has scope {obj.scope!r}; use 'input' or 'output'")
            return
        if kind == "backbone":
            tasks = [obj.tasks] if isinstance(obj.tasks, str) else list(obj.tasks)
            unknown = [t for t in tasks if t not in BACKBONE_TASKS]
            if not tasks or unknown:
                self.record_failure(record, f"backbone '{name}' declares tasks {tasks}; give one or more of "
                                            f"{', '.join(BACKBONE_TASKS)}")
                return
        parameters = parameters_of(obj)
        missing = [p for p in KINDS[kind].required_parameters if p not in {q.name for q in parameters}]
        if missing and not accepts_any_keyword(obj):
            self.record_failure(record, f"{kind} '{name}' takes no {', '.join(missing)}: every {kind} is built with "
                                        f"{', '.join(KINDS[kind].required_parameters)} (see docs/kinds/{kind}.md)")
            return
        candidates = self._candidates[kind].setdefault(name, [])
        candidates.append(Component(
            kind=kind, name=name, obj=obj, summary=summary_of(obj), plugin=record.name,
            version=record.version, parameters=parameters,
        ))
        record.components.append((kind, name))
        if len(candidates) > 1:
            message = self._conflict_message(kind, name, candidates)
            for owner in {c.plugin for c in candidates}:
                if owner in self.plugins and message not in self.plugins[owner].errors:
                    self.record_failure(self.plugins[owner], message)

    @staticmethod
    def _conflict_message(kind: str, name: str, candidates: list[Component]) -> str:
        owners = ", ".join(c.plugin for c in candidates)
        return (f"{kind} '{name}' is provided by more than one plugin ({owners}); "
                f"disable all but one with DEFECTLAB_DISABLE_PLUGINS")

    def remove_plugin(self, name: str) -> None:
        """Forget a plugin and everything it provided."""
        self.plugins.pop(name, None)
        for by_name in self._candidates.values():
            for component_name, candidates in list(by_name.items()):
                candidates[:] = [c for c in candidates if c.plugin != name]
                if not candidates:
                    del by_name[component_name]

    def kind(self, kind: str) -> dict[str, Component]:
        """The unambiguous components of one kind; an unknown kind suggests close matches."""
        if kind not in self._candidates:
            raise UnknownComponentError(
                f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})")
        return {name: found[0] for name, found in self._candidates[kind].items() if len(found) == 1}

    def get(self, kind: str, name: str) -> Component:
        """One component; an unknown or conflicting name is an error that says what to do."""
        components = self.kind(kind)
        if name not in components and name in self._candidates[kind]:
            raise PluginError(self._conflict_message(kind, name, self._candidates[kind][name]))
        if name not in components:
            raise UnknownComponentError(
                f"unknown {kind} '{name}'{did_you_mean(name, components)} "
                f"(see `defectlab list {kind}`)")
        return components[name]

    def list(self, kind: str | None = None, pattern: str = "*") -> list[Component]:
        """Components of ``kind`` (all kinds if None) whose names match an fnmatch ``pattern``."""
        kinds = [kind] if kind else list(KINDS)
        found = [c for k in kinds for c in self.kind(k).values() if fnmatch.fnmatchcase(c.name, pattern)]
        return sorted(found, key=lambda c: (list(KINDS).index(c.kind), natural_key(c.name)))

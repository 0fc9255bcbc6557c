"""Finding plugins through entry points and collecting their components, resiliently.

A plugin that fails to import, or whose hook raises, is recorded with its error and skipped;
everything else keeps working. ``DEFECTLAB_STRICT_PLUGINS=1`` re-raises instead.
"""

from __future__ import annotations

import os
import traceback
from importlib import metadata
from typing import Any

import pluggy
from defectlab.plugin_system import hookspecs
from defectlab.plugin_system.errors import did_you_mean, missing_training_stack
from defectlab.plugin_system.kinds import KINDS, Kind
from defectlab.plugin_system.registry import PluginRecord, Registry

ENTRY_POINT_GROUP = "defectlab"
ALLOW_ENV = "DEFECTLAB_PLUGINS"
DENY_ENV = "DEFECTLAB_DISABLE_PLUGINS"
STRICT_ENV = "DEFECTLAB_STRICT_PLUGINS"
HOOK_NAMES = [k.hook for k in KINDS.values()] + ["register_commands"]


def installed_entry_points() -> list[metadata.EntryPoint]:
    """The entry points of the ``defectlab`` group in this environment, by name (the one place plugins are found)."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name, "").strip()
    return {item.strip() for item in value.split(",") if item.strip()} if value else None


def _short_error(exc: BaseException) -> str:
    """``ModuleNotFoundError: No module named 'x' (at file.py:12)``, or, for a training-stack module the install
    lacks, what to install."""
    missing = missing_training_stack(exc)
    if missing is not None:
        return missing
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _hook_failure(hook: str, exc: BaseException) -> str:
    """``register_x() raised ...``, or ``register_x() needs torch, ...`` on an install without the training stack."""
    return f"{hook}() {'' if missing_training_stack(exc) else 'raised '}{_short_error(exc)}"


class PluginLoader:
    """Owns the pluggy manager and fills a Registry from it."""

    def __init__(self, strict: bool | None = None):
        if strict is None:
            strict = os.environ.get(STRICT_ENV, "").lower() in {"1", "true", "yes"}
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self._registry = Registry(strict=strict)
        self._collected: set[str] = set()
        self._cli: Any = None  # the command group plugin commands were added to
        self._commands: dict[str, set[str]] = {}  # plugin name -> the command names it added to _cli

    def collected(self, kind: str | None = None) -> Registry:
        """The registry with the components of ``kind`` (every kind if None) collected from the hooks.

        Collection is deferred, kind by kind, so that a command imports only what the components
        it uses import: `--help` imports none, `imbalance gini` not the torch-based losses.
        """
        for word in list(KINDS) if kind is None else [kind] if kind in KINDS else []:
            if word not in self._collected:
                self._collected.add(word)
                for record in list(self._registry.plugins.values()):
                    if self.manager.has_plugin(record.name):
                        self._collect(record, KINDS[word])
        return self._registry

    @property
    def registry(self) -> Registry:
        """The registry with every kind collected."""
        return self.collected()

    def load_entry_points(self) -> None:
        """Load every plugin of the ``defectlab`` entry-point group that the environment allows."""
        allow, deny = _env_list(ALLOW_ENV), _env_list(DENY_ENV) or set()
        registry = self._registry
        seen: set[str] = set()
        for ep in installed_entry_points():
            if (allow is not None and ep.name not in allow) or ep.name in deny:
                continue
            if ep.name in seen:
                self._report_name_clash(registry.plugins[ep.name], ep)
                continue
            seen.add(ep.name)
            version = ep.dist.version if ep.dist is not None else "unknown"
            record = PluginRecord(ep.name, version, ep.value)
            registry.plugins[ep.name] = record
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                registry.record_failure(record, f"failed to import: {_short_error(exc)}", exc)
                continue
            self._register(plugin, record)
        if allow:
            for missing in sorted(allow - seen - deny):
                record = PluginRecord(missing, "unknown", "")
                registry.plugins[missing] = record
                registry.record_failure(
                    record, f"named in {ALLOW_ENV} but not installed"
                    f"{did_you_mean(missing, [e.name for e in installed_entry_points()])}")

    def _report_name_clash(self, record: PluginRecord, ep: metadata.EntryPoint) -> None:
        """Two installed distributions declare one plugin name: only the first is loaded."""
        other = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "another distribution"
        self._registry.record_failure(
            record, f"{other} also declares a plugin named '{ep.name}' ({ep.value}), which was not loaded; "
                    f"uninstall one of them")

    def registered_as(self, plugin: Any) -> str | None:
        """The name ``plugin`` is already registered under: the same object, or a module from the same file."""
        source = getattr(plugin, "__file__", None)
        for name, registered in self.manager.list_name_plugin():
            if registered is plugin or (source is not None and getattr(registered, "__file__", None) == source):
                return name
        return None

    def add_plugin(self, plugin: Any, name: str, version: str = "test") -> PluginRecord:
        """Register a plugin object (a module or any object with hook implementations)."""
        record = PluginRecord(name, version, getattr(plugin, "__name__", type(plugin).__name__))
        self._registry.plugins[name] = record
        self._register(plugin, record)
        if self.manager.has_plugin(name):
            for word in self._collected:
                self._collect(record, KINDS[word])
            if self._cli is not None:
                self.add_commands(self._cli, only=name)
        return record

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin added by ``add_plugin`` or an entry point."""
        if self.manager.has_plugin(name):
            self.manager.unregister(name=name)
        self._registry.remove_plugin(name)
        for command in self._commands.pop(name, set()):
            self._cli.commands.pop(command, None)

    def _register(self, plugin: Any, record: PluginRecord) -> None:
        try:
            self.manager.register(plugin, name=record.name)
        except Exception as exc:  # pluggy's validation of hook signatures, or a duplicate name
            self._registry.record_failure(record, f"cannot be registered: {_short_error(exc)}", exc)
            return
        self._report_unknown_hooks(plugin, record)

    def _collect(self, record: PluginRecord, kind: Kind) -> None:
        """Call one plugin's hook for ``kind`` and register what it returns."""
        for impl in getattr(self.manager.hook, kind.hook).get_hookimpls():
            if impl.plugin_name != record.name:
                continue
            try:
                provided = impl.function() or []
            except Exception as exc:
                self._registry.record_failure(record, _hook_failure(kind.hook, exc), exc)
                continue
            for obj in provided:
                self._registry.add(record, kind.word, obj)

    def _report_unknown_hooks(self, plugin: Any, record: PluginRecord) -> None:
        """Hook implementations without a spec, as pluggy's ``check_pending`` finds them, with suggestions."""
        for attribute in dir(plugin):
            if self.manager.parse_hookimpl_opts(plugin, attribute) is None or attribute in HOOK_NAMES:
                continue
            self._registry.record_failure(
                record, f"'{attribute}' is not a defectlab hook{did_you_mean(attribute, HOOK_NAMES)}")

    def add_commands(self, cli: Any, only: str | None = None) -> None:
        """Let every plugin (or just ``only``) add its click commands to ``cli``; failures are recorded."""
        self._cli = cli
        for impl in self.manager.hook.register_commands.get_hookimpls():
            if only is not None and impl.plugin_name != only:
                continue
            record = self._registry.plugins.get(impl.plugin_name)
            before = dict(cli.commands)
            try:
                impl.function(cli=cli)
            except Exception as exc:
                if record is None:
                    raise
                self._registry.record_failure(record, _hook_failure("register_commands", exc), exc)
                continue
            replaced = sorted(name for name, command in before.items() if cli.commands.get(name) is not command)
            cli.commands.update({name: before[name] for name in replaced})  # an existing command stays as it was
            if replaced and record is not None:
                self._registry.record_failure(record, f"register_commands() tried to replace the command(s) "
                                                      f"{', '.join(replaced)}; give its command another name")
            self._commands.setdefault(impl.plugin_name, set()).update(set(cli.commands) - set(before))


def raising_plugin(exc: BaseException) -> str | None:
    """The plugin whose code raised ``exc`` (the innermost traceback frame in a plugin's package), if any."""
    if _loader is None:
        return None
    modules = {record.module: name for name, record in _loader.registry.plugins.items() if record.module}
    tb, found = exc.__traceback__, None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        owner = next((name for prefix, name in modules.items()
                      if module == prefix or module.startswith(prefix + ".")), None)
        found = owner or found
        tb = tb.tb_next
    return found


_loader: PluginLoader | None = None


def get_loader() -> PluginLoader:
    """The process-wide loader, created and filled from entry points on first use."""
    global _loader
    if _loader is None:
        loader = PluginLoader()
        loader.load_entry_points()
        _loader = loader
    return _loader


def reset() -> None:
    """Forget loaded plugins so the next call re-reads entry points and environment variables."""
    global _loader
    _loader = None

"""Pytest helpers for plugin authors, loaded automatically through the ``pytest11`` entry point.

The ``defectlab_plugin`` fixture registers a plugin object for one test and removes it after::

    def test_my_loss(defectlab_plugin):
        defectlab_plugin(my_plugin_module)
        assert defectlab.create("loss", "my_loss")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from defectlab.plugin_system.errors import PluginError
from defectlab.plugin_system.loading import get_loader
from defectlab.plugin_system.registry import PluginRecord


@pytest.fixture
def defectlab_plugin() -> Iterator[Callable[..., PluginRecord]]:
    """Register plugin objects (modules or objects with hook implementations) for one test."""
    loader = get_loader()
    added: list[str] = []

    def register(plugin: Any, name: str | None = None) -> PluginRecord:
        plugin_name = name or f"test_plugin_{len(added)}"
        installed = loader.registered_as(plugin)
        if installed is not None:
            raise PluginError(f"{getattr(plugin, '__name__', plugin)!s} is already registered as plugin '{installed}' "
                              f"(installed through its entry point?); test it as it is, or disable it with "
                              f"DEFECTLAB_DISABLE_PLUGINS={installed} to register it under another name")
        if plugin_name in loader.registry.plugins:
            raise PluginError(f"a plugin named '{plugin_name}' is already registered; give the test plugin another name")
        added.append(plugin_name)
        return loader.add_plugin(plugin, plugin_name)

    yield register
    for plugin_name in added:
        loader.remove_plugin(plugin_name)

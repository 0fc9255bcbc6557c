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
from defectlab.plugin_system.loading import get_loader
from defectlab.plugin_system.registry import PluginRecord


@pytest.fixture
def defectlab_plugin() -> Iterator[Callable[..., PluginRecord]]:
    """Register plugin objects (modules or objects with hook implementations) for one test."""
    loader = get_loader()
    added: list[str] = []

    def register(plugin: Any, name: str | None = None) -> PluginRecord:
        plugin_name = name or f"test_plugin_{len(added)}"
        added.append(plugin_name)
        return loader.add_plugin(plugin, plugin_name)

    yield register
    for plugin_name in added:
        loader.remove_plugin(plugin_name)

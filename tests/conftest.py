"""Shared test setup: offline, non-interactive plotting, only the built-in plugins, and a CLI runner."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
from click.testing import CliRunner


def pytest_configure(config):
    """The tests see defectlab's own plugins only, whatever else is installed beside it: entry points of
    other distributions are left out. A test adds plugins with the ``defectlab_plugin`` fixture, or fakes
    entry points (those belong to no distribution and are kept)."""
    from defectlab.plugin_system import loading

    everything = loading.installed_entry_points

    def own_entry_points():
        return [ep for ep in everything() if ep.dist is None or ep.dist.name == "defectlab"]

    loading.installed_entry_points = own_entry_points
    loading.reset()


class _EntryPoint:
    """Lets CliRunner drive ``defectlab.cli.main.main`` so exit codes and messages are the real ones."""

    name = "defectlab"

    def main(self, args, prog_name=None, **extra):
        from defectlab.cli.main import main

        main(list(args))


@pytest.fixture
def run_cli():
    """``run_cli("imbalance", "gini", "--counts", "1,2")`` -> click Result (exit_code, stdout, stderr)."""

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(_EntryPoint(), list(args), env=env)

    return invoke


@pytest.fixture
def tiny(defectlab_plugin):
    """The tiny test models (tiny_cnn, tiny_segnet) registered for one test."""
    from tests.tiny_models import TinyModels

    defectlab_plugin(TinyModels(), "tiny_models")


@pytest.fixture
def two_classes(tmp_path):
    """A class folder of 20 bright and 20 dark 16x16 grey images (tests/tiny_models.py)."""
    from tests.tiny_models import write_two_class_folder

    return write_two_class_folder(tmp_path / "data")

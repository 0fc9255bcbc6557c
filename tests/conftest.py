"""Shared test setup: offline, non-interactive plotting, and a CLI runner."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
from click.testing import CliRunner


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

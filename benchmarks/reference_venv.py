"""A reference library's own venv for a benchmark: made on first use, torch, torchvision and timm pinned to defectlab's.

The reference (lightly, anomalib, ...) is not a dependency of defectlab, so a benchmark that runs
it beside defectlab runs that half with this venv's interpreter and exchanges files with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PINNED = ("torch", "torchvision", "timm")


def reference_python(venv: Path, requirement: str, check: str, install: bool, env: dict[str, str] | None = None) -> Path:
    """The interpreter of ``venv``, where ``python -c check`` succeeds (with ``env`` added to the
    environment); makes the venv and installs ``requirement`` with the PINNED packages at the
    versions of this interpreter's when it is missing or the check fails, unless ``install`` is off."""
    from importlib.metadata import version

    python = venv / "bin" / "python"
    pins = {name: version(name) for name in PINNED}
    ok = python.exists() and subprocess.run([python, "-c", check], capture_output=True, check=False,
                                            env={**os.environ, **(env or {})}).returncode == 0
    if ok:
        return python
    if not install:
        sys.exit(f"no working venv for {requirement} at {venv}; run without --no-install to make it")
    print(f"making the venv at {venv}: {requirement}, "
          f"{', '.join(f'{name}=={pinned}' for name, pinned in pins.items())} (a few minutes, once)", file=sys.stderr)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", requirement, *(f"{n}=={v}" for n, v in pins.items())],
                   check=True)
    return python

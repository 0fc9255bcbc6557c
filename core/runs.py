"""Run directories: where a workflow writes its resolved config and results."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any


def new_run_dir(workflow: str, out: str | Path | None = None, root: str | Path = "runs") -> Path:
    """``out`` if given, else ``runs/<workflow>-<YYYYmmdd-HHMMSS>`` (suffixed if it already exists)."""
    if out is not None:
        folder = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(root) / f"{workflow}-{stamp}"
        suffix = 1
        while folder.exists():
            suffix += 1
            folder = Path(root) / f"{workflow}-{stamp}-{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def environment_versions() -> dict[str, Any]:
    """Python, defectlab and plugin versions, recorded beside every resolved config."""
    from defectlab import __version__
    from defectlab.api import plugins

    return {
        "python": platform.python_version(),
        "defectlab": __version__,
        "plugins": {p.name: p.version for p in plugins()},
    }


def write_resolved_config(folder: Path, config: dict[str, Any], seed: int | None = None) -> Path:
    """Save the fully resolved config with versions and seed as ``config.json`` (atomically)."""
    path = folder / "config.json"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"config": config, "seed": seed, "versions": environment_versions()},
                                    indent=2, default=str))
    temporary.replace(path)
    return path

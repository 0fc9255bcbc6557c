"""Run directories: where a workflow writes its resolved config and results."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import write_error, write_json
from defectlab.plugin_system.version import VERSION

log = logging.getLogger("defectlab.runs")


#: Files by which a folder is known to hold a workflow's output (a run, an evaluation, a report, ...).
OUTPUT_MARKERS = ("config.json", "run.json", "metrics.jsonl", "metrics.json", "screen.json", "tune.json",
                  "comparison.json", "report.html", "convert.json")


def new_run_dir(workflow: str, out: str | Path | None = None, root: str | Path = "runs", *,
                overwrite: bool = False, check: bool = True) -> Path:
    """``out`` if given, else ``runs/<workflow>-<YYYYmmdd-HHMMSS>`` (suffixed if it already exists).

    A folder that already holds output is never written over: a DataError says the way out
    (``--resume``, another ``--out``, or ``overwrite=True``, which replaces it). A folder that is
    not empty and holds no defectlab output is refused even with ``overwrite``: it is the user's.
    ``check=False`` skips this (the other ranks of a distributed run, where rank 0 checked).
    """
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(root) / f"{workflow}-{stamp}"
        suffix = 1
        while folder.exists():
            suffix += 1
            folder = Path(root) / f"{workflow}-{stamp}-{suffix}"
    else:
        folder = Path(out)
        if check:
            _claim(folder, overwrite)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from exc
    return folder


def _claim(folder: Path, overwrite: bool) -> None:
    """Refuse, or with ``overwrite`` empty, a folder that already holds something."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"'{folder}' is a file; give a folder for the output")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    marker = next((m for m in OUTPUT_MARKERS if (folder / m).exists()), None)
    if marker is None:
        raise DataError(f"'{folder}' is not empty and holds no defectlab output; choose a new or empty folder "
                        f"for the output (nothing was written)")
    if not overwrite and _never_trained(folder):
        log.info("'%s' holds a run that stopped before its first epoch; starting it again", folder)
        overwrite = True
    if not overwrite:
        resume = (f"continue it with `defectlab train --resume {folder}`, "
                  if (folder / "last.pt").is_file() and (folder / "run.json").is_file() else "")
        raise DataError(f"'{folder}' already holds the output of an earlier run ({marker}); {resume}choose another "
                        f"--out, or pass --overwrite to replace it")
    shutil.rmtree(folder)


def _never_trained(folder: Path) -> bool:
    """A run folder whose training failed or was interrupted before any epoch ended: nothing to lose."""
    try:
        status = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return (status.get("status") in ("failed", "interrupted") and not status.get("epochs_done")
            and not (folder / "last.pt").exists() and not (folder / "best.pt").exists())


@contextmanager
def removed_if_unstarted(folder: Path, made: bool = True) -> Iterator[None]:
    """Around the work of a run in ``folder``: if it fails before training started (no ``run.json``, the
    engine's record of how a run ended, and no checkpoint anywhere in it), the folder goes, when the run
    ``made`` it; a folder that existed before always stays."""
    try:
        yield
    except BaseException:
        if made and folder.is_dir() and not any(folder.rglob("run.json")) and not any(folder.rglob("*.pt")):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed '%s': the run failed before it started training", folder)
        raise


def environment_versions() -> dict[str, Any]:
    """Python, defectlab and plugin versions, recorded beside every resolved config."""
    from defectlab.plugin_system.components import plugins

    return {
        "python": platform.python_version(),
        "defectlab": VERSION,
        "plugins": {p.name: p.version for p in plugins()},
    }


def write_resolved_config(folder: Path, config: dict[str, Any], seed: int | None = None) -> Path:
    """Save the fully resolved config with versions and seed as ``config.json`` (atomically)."""
    return write_json(folder / "config.json", {"config": config, "seed": seed, "versions": environment_versions()})


class Run:
    """A run directory read back: its config, status, metrics per epoch and final evaluation."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            from defectlab.plugin_system.errors import DataError

            raise DataError(f"'{self.folder}' is not a run directory (it has no config.json); give the folder "
                            f"that `defectlab train` wrote")

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r}, status={self.status.get('status')!r})"

    def _json(self, name: str) -> dict[str, Any]:
        path = self.folder / name
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the run was trained with."""
        return self._json("config.json").get("config", {})

    @property
    def versions(self) -> dict[str, Any]:
        """The Python, defectlab and plugin versions the run was trained with."""
        return self._json("config.json").get("versions", {})

    @property
    def status(self) -> dict[str, Any]:
        """run.json: status, epochs done, best epoch, skipped images, transfer report, data summary."""
        return self._json("run.json")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One record per epoch from metrics.jsonl."""
        path = self.folder / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def evaluation(self) -> dict[str, Any]:
        """The final evaluation (scores, details, files) of the best weights on the test split."""
        folder = self.folder / "eval"
        found = sorted(folder.glob("*/metrics.json")) if folder.is_dir() else []
        ordered = sorted(found, key=lambda p: ("test", "val").index(p.parent.name) if p.parent.name in ("test", "val") else 2)
        return json.loads(ordered[0].read_text()) if ordered else {}

    @property
    def scores(self) -> dict[str, float]:
        """The final evaluation's scores (empty if the run has none yet)."""
        return self.evaluation.get("scores", {})

    @property
    def stages(self) -> list[Run]:
        """The stages of a staged run, in order (empty for a single-stage run)."""
        names = self._json("config.json").get("stages", [])
        return [Run(self.folder / name) for name in names]

"""Continuing a prediction that was stopped (``predict --resume``): the settings it was made with, and the
images it has still to predict.

Every prediction writes ``<out stem>_settings.json`` beside its CSV before the first row: the
model (its file and the SHA-256 of its bytes), its test-time augmentation, the threshold, the
slicing, the inputs and the columns. ``--resume`` goes on only with the same ones, so that one
CSV never mixes two models' answers; the images already in the CSV (:func:`defectlab.runtime.
table.written`) are skipped and the rest appended.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import write_json
from defectlab.runtime.table import Written

#: Settings that may differ between a prediction and its resumption: they change no row.
INFORMATIONAL = ("model", "defectlab")


def settings_path(out: Path) -> Path:
    """Where the settings of the prediction into ``out`` are kept."""
    return out.with_name(out.stem + "_settings.json")


def model_identity(path: Path, tta: str, logit_adjustment: float = 0.0) -> dict[str, Any]:
    """What identifies a model in the settings: its file, the SHA-256 of that file's bytes, its test-time
    augmentation and its logit adjustment's τ where there is one (a run moved elsewhere is the same model; a run
    trained on, or another run, is not)."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    identity = {"model": str(path), "sha256": digest, "tta": tta}
    return {**identity, "logit_adjustment": logit_adjustment} if logit_adjustment else identity


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """A DataError unless the prediction in ``out`` was made with ``settings`` (its model, threshold, inputs ...)."""
    path = settings_path(out)
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"--resume needs {path}, which `defectlab predict` writes beside {out.name}; without it "
                        f"the model that predicted {out} is unknown: predict again with --overwrite") from None
    differ = [key for key in sorted({*earlier, *settings} - set(INFORMATIONAL))
              if earlier.get(key) != settings.get(key)]
    if differ:
        changes = "; ".join(f"{key} {_shown(key, earlier)} then, {_shown(key, settings)} now" for key in differ)
        raise DataError(f"--resume: {out} was predicted with other settings ({changes}); continue it with the "
                        f"same model and options, or choose another --out, or pass --overwrite instead of --resume")


def _shown(key: str, settings: dict[str, Any]) -> str:
    value = settings.get(key)
    if key == "sha256" and value:
        return f"{value[:12]} ({settings.get('model')})"
    return json.dumps(value)


def write_settings(out: Path, settings: dict[str, Any]) -> None:
    """The settings of a new prediction into ``out``, beside it."""
    write_json(settings_path(out), settings)


def remaining(files: Sequence[tuple[Path, str]], done: Written) -> list[tuple[Path, str]]:
    """The files still to predict: those not in the CSV yet (a path given twice is predicted twice)."""
    left = done.paths.copy()
    todo = []
    for path, name in files:
        if left[str(path)] > 0:
            left[str(path)] -= 1
        else:
            todo.append((path, name))
    return todo

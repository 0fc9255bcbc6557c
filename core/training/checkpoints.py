"""Checkpoints: written to a temporary name and renamed, so a killed run never leaves half a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import atomic_write

#: Version of the checkpoint layout; a newer one is refused with a clear message.
FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """``torch.save`` ``state`` (plus the format version) to ``path`` atomically."""
    import torch

    with atomic_write(path) as temporary:
        torch.save({"format": FORMAT, **state}, temporary)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, with a clear error if it is not one."""
    import torch

    if not path.is_file():
        raise DataError(f"no checkpoint '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read checkpoint '{path}' ({exc}); it may be from an interrupted copy") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"'{path}' is not a defectlab checkpoint (no 'model' entry)")
    if state.get("format", 0) > FORMAT:
        raise DataError(f"'{path}' was written by a newer defectlab (checkpoint format {state['format']}); upgrade")
    return state


def checkpoint_path(run_or_file: str | Path, which: str = "best") -> Path:
    """The checkpoint a run directory or file names: the file itself, or the run's ``which``.pt
    (for 'best', last.pt when there is no best.pt yet)."""
    path = Path(run_or_file).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"'{path}' is neither a run directory nor a checkpoint file")
    for name in [f"{which}.pt"] + ["last.pt"] * (which == "best"):
        if (path / name).is_file():
            return path / name
    raise DataError(f"run '{path}' has no {which}.pt; it has not finished an epoch (see its run.json)")

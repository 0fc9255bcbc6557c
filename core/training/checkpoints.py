"""Checkpoints: written to a temporary name and renamed, so a killed run never leaves half a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import atomic_write

#: Version of the checkpoint layout; a newer one is refused with a clear message.
FORMAT = 1
#: The encoder a pretraining exports, beside its last.pt/best.pt: what ``--init-from RUN`` loads first.
ENCODER_FILE = "encoder.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """``torch.save`` ``state`` (plus the format version) to ``path`` atomically."""
    import torch

    with atomic_write(path) as temporary:
        torch.save({"format": FORMAT, **state}, temporary)
    return path


def load_torch_file(path: Path, what: str) -> Any:
    """``torch.load`` of tensors and plain containers only (never code); a file that is refused or
    cannot be read is one DataError line that says which and what to do."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object that would run code to load
        raise DataError(f"'{path}' is not a defectlab {what}: it holds objects other than tensors, which are refused "
                        f"as unsafe to load; use a file written by defectlab, or re-save the weights with "
                        f"torch.save(model.state_dict(), PATH)") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        cause = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {what} '{path}': it is truncated or not a PyTorch file ({cause}); copy it "
                        f"again, or use another checkpoint") from exc


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, with a clear error if it is not one."""

    if not path.is_file():
        raise DataError(f"no checkpoint '{path}'")
    state = load_torch_file(path, "checkpoint")
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

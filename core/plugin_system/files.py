"""Writing files so that no reader ever sees half of one, and saying plainly when a write fails.

Every file defectlab writes goes through :func:`atomic_write`: it is written under a temporary
name beside its destination and renamed over it only once complete. A write that fails (read-only
folder, permission denied, full disk) removes the temporary file, leaves whatever was at the
destination as it was, and becomes a :class:`WriteError` that names the path and the cause.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import WriteError

TEMPORARY_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """``.NAME.<pid>.tmp`` beside ``path``: hidden, and unique to the writing process."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files that killed writers left in ``folder``."""
    return sorted(p for p in folder.glob(f".*{TEMPORARY_SUFFIX}") if p.is_file())


FULL_BELOW = 2**20  # bytes free under which a failed write is put down to a full disk


def write_error(path: Path | None, exc: Exception) -> WriteError:
    """A one-line WriteError for a failed write of ``path`` (None: standard output), naming the cause."""
    if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        cause = exc.strerror or str(exc)
    elif isinstance(exc, OSError) or _free_bytes(path.parent if path else Path.cwd()) < FULL_BELOW:
        cause = "the disk is full; free some space and run the command again"
    else:  # a library's own write error (torch.save raises RuntimeError)
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return WriteError(f"cannot write {f'{str(path)!r}' if path else 'the output'}: {cause}")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return FULL_BELOW


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on failure removed.

    The parent folder is created if needed. An OSError while writing, or a write that fails
    inside a library (``torch.save`` on a full disk raises RuntimeError), becomes a WriteError.
    """
    path = Path(path)
    temporary = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        os.replace(temporary, path)
    except (OSError, RuntimeError) as exc:
        raise write_error(path, exc) from exc
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (unknown types as their ``str``)."""
    return write_text(path, json.dumps(data, indent=2, default=str))

"""Checks the format readers share on what they read from a file: each failure is one DataError that
starts with where the value is (file, line or entry), so that a malformed file is never a crash."""

from __future__ import annotations

import math
import posixpath
import reprlib
import unicodedata
from pathlib import Path, PureWindowsPath
from typing import Any

from defectlab import DataError

MAX_ID = 2**63  # ids are integers of less than this size (COCO's are 64-bit)
MAX_SIDE = 100_000  # the largest image width or height an annotation may declare, in pixels
MAX_CLASSES = 10_000  # the largest class count (or class index + 1) a file may imply

_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 60


def shown(value: Any) -> str:
    """A short repr of a value read from a file, for error messages (cut, nesting limited)."""
    return _shown.repr(value)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float; a bool is not a number here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def whole_number(value: Any, where: str, what: str, low: int, high: int) -> int:
    """``value`` as an int within low..high (a float without fraction counts); else a DataError."""
    if is_number(value) and float(value).is_integer() and low <= value <= high:
        return int(value)
    raise DataError(f"{where}: {what} must be a whole number from {low} to {high}, got {shown(value)}")


def identifier(value: Any, where: str, what: str = "id") -> int:
    """An integer id of less than 2**63 in size."""
    return whole_number(value, where, what, -MAX_ID + 1, MAX_ID - 1)


def class_name(value: Any, where: str) -> str:
    """A class name: a non-empty string without control characters (newline, tab, NUL ...)."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: a class name must be a non-empty string, got {shown(value)}")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise DataError(f"{where}: class name {shown(value)} holds a control character (newline, tab, ...); "
                        f"give the class a printable name")
    return value


def read_text(path: Path) -> str:
    """A UTF-8 text file's content (a leading BOM is dropped); a DataError if it cannot be read as one."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except IsADirectoryError as exc:
        raise DataError(f"'{path}' is a folder where a file is expected; rename or remove it") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror or exc}") from exc


def read_names(path: Path) -> list[str]:
    """The class names of a classes.txt: one a line, blank lines skipped."""
    lines = read_text(path).splitlines()
    return [class_name(line.strip(), f"{path}, line {n}") for n, line in enumerate(lines, start=1) if line.strip()]


def is_file(path: Path) -> bool:
    """``path.is_file()``, False for a path no file can have (too long, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def exists(path: Path) -> bool:
    """``path.exists()``, False for a path no file can have (too long, a NUL byte)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def check_inside(name: str, where: str, what: str, folder: str = "the image folder") -> None:
    """A DataError unless ``name``, an image that an annotation file names relative to ``folder``, stays in it
    (subfolders allowed; no absolute path, no way out with '..'): an annotation names images of its dataset,
    and a downloaded one must not make a reader, or ``convert``, which copies images, take files elsewhere."""
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:  # C:, C:\ and \\server too, on any system
        problem = "is an absolute path"
    elif posixpath.normpath(name.replace("\\", "/")).split("/")[0] == "..":
        problem = "leads out of the image folder with '..'"
    else:
        return
    raise DataError(f"{where}: {what} {shown(name)} {problem}; images must lie in {folder}: make the name "
                    f"relative to it (subfolders are fine)")

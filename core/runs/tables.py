"""Tables of results for people: aligned text columns, numbers to four decimals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_number(value: float) -> str:
    """Four significant decimals for people; JSON keeps full precision."""
    return f"{value:.4f}"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any] | Mapping[str, Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header.

    A row is a sequence of values in ``columns`` order, or a mapping read by column name (a
    missing key is a blank cell). Floats are shown with four decimals, None as a blank.
    """
    def cell(value: Any) -> str:
        return format_number(value) if isinstance(value, float) else ("" if value is None else str(value))

    cells = [[str(c) for c in columns]] + [
        [cell(row.get(c)) for c in columns] if isinstance(row, Mapping) else [cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)

"""Printing results: aligned text tables for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    click.echo(json.dumps(data, indent=2, default=str))


def format_number(value: float) -> str:
    """Four significant decimals for people; JSON keeps full precision."""
    return f"{value:.4f}"


def format_records(columns: Sequence[str], records: Sequence[dict[str, Any]]) -> str:
    """A table of dict records in ``columns`` order; floats with four decimals, missing values blank."""
    def cell(value: Any) -> str:
        return format_number(value) if isinstance(value, float) else ("" if value is None else str(value))

    return format_table(columns, [[cell(record.get(c)) for c in columns] for record in records])

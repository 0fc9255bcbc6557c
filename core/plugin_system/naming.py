"""Names for people: sort orders and short lists of examples in messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

EXAMPLES_SHOWN = 5


def natural_key(text: str) -> tuple[list[Any], str]:
    """Sort key that puts ``defect2`` before ``defect10`` and ``resnet18`` before ``resnet101``
    (case-insensitive, ties broken by the text itself)."""
    parts = re.split(r"(\d+)", text)  # odd places hold the runs of digits ('²' is not one, though isdigit says so)
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(parts)], text


def counted(number: int, noun: str) -> str:
    """``1 problem``, ``3 problems``: a count with its noun in the right number (plural by a trailing s)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def first_few(items: Sequence[Any], limit: int = EXAMPLES_SHOWN) -> str:
    """``a, b, c, ...``: the first ``limit`` items for an error message, with an ellipsis if there are more."""
    return ", ".join(str(i) for i in items[:limit]) + (", ..." if len(items) > limit else "")

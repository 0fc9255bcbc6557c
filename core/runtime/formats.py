"""The export formats and what their files hold, in plain Python (the command line reads them without numpy)."""

from __future__ import annotations

from pathlib import Path

METADATA_KEY = "defectlab"
#: File suffixes of the export formats.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}
#: The graph's outputs per task, in order.
OUTPUT_NAMES = {"classify": ("probabilities", "labels"), "segment": ("probabilities", "mask"),
                "anomaly": ("scores", "maps", "defect"), "detect": ("boxes", "scores")}


def format_of(path: str | Path) -> str | None:
    """'onnx' or 'torchscript' by the file's suffix, else None."""
    suffix = Path(path).suffix.lower()
    return next((name for name, known in SUFFIXES.items() if known == suffix), None)

"""Predicting with a fitted anomaly model: a score, a good/defect decision and an anomaly map per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import atomic_write


def run_threshold(checkpoint: Path) -> float:
    """The score threshold of best F1 found on the run's validation split, else on its test evaluation.

    A DataError when the run has neither (it was not evaluated): predict then needs ``--threshold``.
    """
    from defectlab.runs.run import Run

    folder = checkpoint.parent
    if (folder / "config.json").is_file():
        run = Run(folder)
        for value in [line.get("val/threshold") for line in run.metrics] + [run.scores.get("threshold")]:
            if isinstance(value, (int, float)):
                return float(value)
    raise DataError(f"the run of '{checkpoint}' holds no score threshold (it was never evaluated on images of "
                    f"both kinds); give one with --threshold")


def anomaly_rows(output: dict[str, Any], kept: list[tuple[Path, str]], sizes: list[tuple[int, int]],
                 maps: Path, threshold: float) -> list[dict[str, Any]]:
    """CSV rows of one batch (the model's checked output), writing each image's map (at its size) into ``maps``."""
    rows = []
    for (path, name), size, score, anomaly_map in zip(kept, sizes, output["scores"].float().tolist(),
                                                      output["maps"].float().cpu().numpy()):
        target = (maps / name).with_suffix(".png")
        save_map(anomaly_map, size, threshold, target)
        rows.append({"path": str(path), "score": score, "decision": "defect" if score >= threshold else "good",
                     "map": str(target), "error": ""})
    return rows


def save_map(anomaly_map: Any, size: tuple[int, int], threshold: float, path: Path) -> None:
    """The map as an 8-bit PNG of ``size`` (height, width): 255 * map / (2 * threshold), capped (128: the threshold)."""
    import numpy as np
    from PIL import Image

    if threshold <= 0:
        raise DataError(f"the threshold must be above 0 to draw anomaly maps, got {threshold}")
    resized = np.asarray(Image.fromarray(anomaly_map.astype(np.float32), mode="F").resize((size[1], size[0]),
                                                                                       Image.BILINEAR))
    grey = np.clip(resized / (2 * threshold) * 255, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        Image.fromarray(grey).save(temporary, format="PNG")

"""What the trackers log, from a run's own records: the config flattened, the numbers of a metrics line, the
final scores."""

from __future__ import annotations

from typing import Any


def flattened(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; what TensorBoard's hparams cannot hold (lists, None)
    as text."""
    result: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            result.update(flattened(value, f"{prefix}{key}."))
        else:
            result[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return result


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are numbers (not flags)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def final_scores(run: Any) -> dict[str, float]:
    """The scores of a finished run's final evaluation (of best.pt), named after its split: ``test/accuracy``, ..."""
    split = run.evaluation.get("split", "test")
    return {f"{split}/{k}": v for k, v in numbers(run.scores).items()}

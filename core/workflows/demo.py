"""The ELPV story behind ``defectlab demo``: screen a source, transfer from it, compare with training from scratch.

Target: the monocrystalline ELPV cells; candidate source: the polycrystalline ones (both binary,
defect probability >= 0.5). The screening (Valle Salgado et al. 2023) scores the source; a staged run trains a
grey-input ResNet-18 on the source and fine-tunes its backbone on the target (Valle Salgado et al. 2023 §8); a
second run trains the target from scratch with the same settings; the report compares the two
on the same target test split. Sized for a few minutes on two CPU cores (229-370 s measured).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET, SOURCE = "elpv:mono", "elpv:poly"
DEFAULT_EPOCHS = 5  # per training: 229-370 s in all on two CPU cores (8 took 584 s)
DEFAULT_IMAGE_SIZE = 96


def demo_config(epochs: int, image_size: int) -> dict[str, Any]:
    """The training config shared by the transfer and the from-scratch runs (target data)."""
    return {
        "data": {"dataset": {"name": "elpv", "cell_type": "mono", "binary": True}, "split": [0.7, 0.15, 0.15],
                 "image_size": image_size, "batch_size": 32, "augment": ["flip", "rotate", "contrast"]},
        "model": {"name": "resnet18", "in_chans": 1, "pooling": "gem", "head_dropout": 0.2},
        "loss": {"name": "cross_entropy", "label_smoothing": 0.05},
        "evaluators": [{"name": "classification"}],
        "train": {"epochs": epochs, "lr": 1e-3, "weight_decay": 1e-3, "monitor": "val/macro_f1", "warmup_epochs": min(1, epochs - 1)},
    }


def run_demo(out: str | Path | None = None, epochs: int = DEFAULT_EPOCHS, image_size: int = DEFAULT_IMAGE_SIZE,
             say: Callable[[str], None] = print, overwrite: bool = False) -> dict[str, Any]:
    """Screen, transfer, train from scratch and compare; returns the paths and the comparison rows.

    ``out`` defaults to runs/demo-<time>; one that holds an earlier demo is refused unless ``overwrite``.
    """
    from defectlab.runs.report import write_comparison
    from defectlab.runs.run import new_run_dir, write_resolved_config
    from defectlab.workflows.screen import screen
    from defectlab.workflows.train import train

    out = new_run_dir("demo", out, overwrite=overwrite)
    write_resolved_config(out, {"demo": {"epochs": epochs, "image_size": image_size}})
    say(f"1/4 screening: is {SOURCE} a good source for {TARGET}? (EMD x Gini / shared classes)")
    screening = screen({"name": "elpv", "cell_type": "mono", "binary": True},
                       [{"name": "elpv", "cell_type": "poly", "binary": True}])
    say(screening.table())
    screening.save(out / "screen")
    target = demo_config(epochs, image_size)
    staged = {**target, "stages": [{"name": "source", "data": {"dataset": {"name": "elpv", "cell_type": "poly",
                                                                             "binary": True}}},
                                   {"name": "target"}]}
    say(f"\n2/4 transfer: train on {SOURCE}, then fine-tune its backbone on {TARGET} ({epochs} epochs each)")
    transfer = train(staged, out=out / "transfer")
    say(f"\n3/4 from scratch: train on {TARGET} alone ({epochs} epochs)")
    scratch = train(target, out=out / "scratch")
    say("\n4/4 comparison on the same target test split")
    runs = [transfer.stages[-1], scratch]
    comparison = write_comparison(runs, out / "comparison",
                                  title=f"{TARGET}: transfer from {SOURCE} vs from scratch")
    for row, name in zip(comparison.rows, ("transfer", "scratch")):
        row["run"] = name
    return {"report": comparison.report, "rows": comparison.rows, "columns": comparison.columns,
            "screening": screening}

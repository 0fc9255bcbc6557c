"""Scoring a trained run on any dataset, or on a split of its own data: ``defectlab evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError
from defectlab.workflows.predict import load_trained


def evaluate_run(run: str | Path, dataset: Any = None, split: str = "test", which: str = "best",
                 out: str | Path | None = None, overwrite: bool = False, tta: str | None = None,
                 logit_adjustment: float | None = None) -> dict[str, Any]:
    """Score a run's model with its loss and evaluators on a whole ``dataset``, or on ``split`` of its own data.

    The model predicts with test-time augmentation ``tta`` ('none', 'flips' or 'dihedral'; default:
    the run's train.tta), and a classifier's logits adjusted by τ = ``logit_adjustment`` (default: the run's
    train.logit_adjustment; see :mod:`defectlab.training.adjustment`). Writes metrics.json and each evaluator's plots and tables
    (misclassified.csv, ...) to ``out`` (default ``RUN/evaluate-<time>``) and returns them with
    ``folder`` added.
    """
    import torch
    from defectlab.data.data_module import DataModule
    from defectlab.plugin_system.components import create
    from defectlab.runs.run import Run, new_run_dir
    from defectlab.training.evaluation import write_evaluation

    folder = Path(run)
    if not folder.is_dir():
        raise DataError(f"'{folder}' is not a run directory; evaluate needs the folder `defectlab train` wrote")
    config = Run(folder).config
    trained = load_trained(folder, which, tta, logit_adjustment)
    settings = {**config["data"], **trained.transform}
    if dataset is None:
        settings["splits_csv"] = str(folder / "splits.csv")
    else:
        settings.update(dataset=dataset, test=dataset, cache=False)
        split = "test"
    data = DataModule(**settings)
    if split not in data.splits:
        raise DataError(f"the run's data has no '{split}' split (it has {', '.join(data.splits)}); use --split")
    if list(data.classes) != trained.classes:
        raise DataError(f"the data's classes {data.classes} differ from the run's {trained.classes}; evaluate on "
                        f"data with the same classes in the same order")
    target = new_run_dir("evaluate", out, root=folder, overwrite=overwrite)  # before the work, after the checks
    loss = create("loss", config["loss"]) if config.get("loss") else None  # a detector has its own losses
    evaluators = [create("evaluator", spec) for spec in config["evaluators"]]
    for component in (loss, *evaluators):
        if component is not None and hasattr(component, "setup"):
            component.setup(classes=list(data.classes), class_counts=data.class_counts("train"))
    results = write_evaluation(trained.model, loss, data, split, evaluators, torch.device("cpu"), target,
                               tta=trained.tta, offsets=trained.offsets)
    return {**results, "folder": str(target)}

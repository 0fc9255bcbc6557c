"""The component kinds: the word used in the CLI and configs, and the hook that provides them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of component."""

    word: str
    hook: str
    summary: str
    required_attributes: tuple[str, ...] = ()
    required_parameters: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    k.word: k
    for k in (
        Kind("distance", "register_distance_metrics", "distance between two dataset summaries"),
        Kind(
            "imbalance",
            "register_imbalance_metrics",
            "a number from class counts (input) or TP/FP/FN (output)",
            ("scope",),
        ),
        Kind("backbone", "register_backbones", "a torch.nn.Module factory for one or more tasks", ("tasks",),
             ("num_classes", "in_chans", "weights")),
        Kind("ssl", "register_ssl_objectives", "a self-supervised pretraining objective"),
        Kind("loss", "register_losses", "a loss: forward(pred, target) -> Tensor"),
        Kind("evaluator", "register_evaluators", "stateful metrics: update, compute, reset"),
        Kind("dataset", "register_datasets", "reads an on-disk format or packaged data set"),
        Kind("callback", "register_callbacks", "listens to the training loop's events: on_<event> methods"),
    )
}

IMBALANCE_SCOPES = ("input", "output")
BACKBONE_TASKS = ("classify", "segment", "detect", "embed", "anomaly")

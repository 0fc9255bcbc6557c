"""The settings of a training (the ``[train]`` table of a config), checked before anything is built."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from defectlab.plugin_system.errors import ParameterError


@dataclass(frozen=True)
class TrainSettings:
    """How the engine trains: optimiser, schedule, precision, checkpoints and stopping.

    Args:
        epochs: Number of passes over the training split.
        optimizer: 'adamw' or 'sgd' (with momentum).
        lr: Peak learning rate (reached after the warm-up).
        weight_decay: Weight decay (decoupled for AdamW).
        momentum: Momentum of SGD (ignored by AdamW).
        schedule: Learning-rate schedule after the warm-up: 'cosine' (down to min_lr at the last
            epoch), 'step' (times gamma every step_size epochs) or 'constant'.
        warmup_epochs: Epochs of linear warm-up from lr/10 to lr before the schedule starts.
        min_lr: Final learning rate of the cosine schedule (eta_min).
        step_size: Epochs between decays of the step schedule.
        gamma: Factor of each decay of the step schedule.
        clip_grad_norm: Clip the gradients' global L2 norm to this value (None: no clipping).
        amp: Mixed precision (float16 autocast and gradient scaling) when training on a GPU;
            ignored on the CPU.
        seed: Seed of the model's initialisation, the data order and the augmentation.
        deterministic: Ask PyTorch for deterministic algorithms (same result for the same seed
            on the same machine).
        monitor: Metric that selects best.pt and drives early stopping, as written in
            metrics.jsonl ('val/loss', 'val/macro_f1', 'val/iou', ...).
        mode: Whether the monitored metric is better when 'min' or 'max'; 'auto' means min for
            a loss and max for anything else.
        patience: Stop after this many evaluations without improvement of the monitored
            metric (None: never stop early).
        min_delta: Smallest change of the monitored metric that counts as an improvement.
        eval_every: Evaluate on the validation split every this many epochs (and always after
            the last one).
        device: 'auto' (the GPU if there is one), 'cpu', 'cuda' or 'cuda:N'.
        init_from: A run directory or weights file whose backbone tensors initialise the model
            (the head stays random): staged transfer, SPEC 000 §8.
        linear_probe: Train the head only, with the backbone frozen (linear probing); False
            fine-tunes everything that is not frozen by the model's own settings.
        progress: Show a progress bar per epoch.
    """

    epochs: int = 10
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = 0
    min_lr: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    amp: bool = True
    seed: int = 0
    deterministic: bool = True
    monitor: str = "val/loss"
    mode: Literal["min", "max", "auto"] = "auto"
    patience: int | None = None
    min_delta: float = 0.0
    eval_every: int = 1
    device: str = "auto"
    init_from: str | None = None
    linear_probe: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.schedule in ("cosine", "step", "constant"),
             f"schedule must be 'cosine', 'step' or 'constant', got {self.schedule!r}"),
            (0 <= self.warmup_epochs < self.epochs,
             f"warmup_epochs must be in [0, epochs) = [0, {self.epochs}), got {self.warmup_epochs}"),
            (0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr], got {self.min_lr}"),
            (self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}"),
            (self.clip_grad_norm is None or self.clip_grad_norm > 0,
             f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm}"),
            (self.mode in ("min", "max", "auto"), f"mode must be 'min', 'max' or 'auto', got {self.mode!r}"),
            (self.patience is None or self.patience >= 1, f"patience must be >= 1 or None, got {self.patience}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(f"train: {message}")

    @property
    def minimise(self) -> bool:
        """Whether a lower value of the monitored metric is better."""
        return self.mode == "min" or (self.mode == "auto" and "loss" in self.monitor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""The settings of a training (the ``[train]`` table of a config), checked before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, Literal

from defectlab.plugin_system.config import check_settings
from defectlab.plugin_system.errors import ParameterError
from defectlab.plugin_system.parameters import Range, check_arguments


@dataclass(frozen=True)
class TailSynthesis:
    """Feature-space synthesis of tail-class samples (``[train.tail_synthesis]``; the ResNet-18 cable notes, after Xu et al., ECCV 2022).

    Every training step adds virtual features λ·a + (1 − λ)·b, where a and b are two recent
    features of the same tail class (the backbone's ``forward_features``, detached), and the
    head classifies the real and virtual features together (docs/training.md).

    Args:
        rarest: The k rarest classes by training count are tail classes (0: none by this rule).
        below: Classes with fewer training samples than this share of the largest class are tail
            classes too (0: none by this rule).
        share: Virtual samples per step as a share of the batch size: round(share × N), at least 1.
        alpha: λ ~ Beta(alpha, alpha): 1 is Uniform(0, 1); below 1 keeps virtual samples near a real one.
        memory: Recent features kept per tail class to draw pairs from; emptied at each epoch's start.
    """

    rarest: Annotated[int, Range(0)] = 1
    below: Annotated[float, Range(0, 1)] = 0.0
    share: Annotated[float, Range(0, 1, low_open=True)] = 0.25
    alpha: Annotated[float, Range(0, low_open=True)] = 1.0
    memory: Annotated[int, Range(2)] = 64

    def __post_init__(self) -> None:
        check_arguments(type(self), asdict(self), "train.tail_synthesis")
        if not self.rarest and not self.below:
            raise ParameterError("train.tail_synthesis: rarest = 0 and below = 0 make no class a tail class; set "
                                 "rarest >= 1 or below > 0")


@dataclass(frozen=True)
class SettingsTable:
    """The check of a setting that may be a table of settings of its own: its keys and values against ``settings``."""

    settings: type

    def __str__(self) -> str:
        return f"(a table of {', '.join(field.name for field in fields(self.settings))})"

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, Mapping):
            problems = check_settings(value, self.settings, where)
            if problems:
                raise ParameterError("; ".join(problems))
            self.settings(**value)


@dataclass(frozen=True)
class Ema:
    """An exponential moving average of the weights (``[train.ema]``; timm's ModelEmaV3).

    After every optimiser step the average θ̄ ← d·θ̄ + (1 − d)·θ. Validation, best.pt and the run's
    model are the average; last.pt keeps the trained weights too, for resuming (docs/training.md).

    Args:
        decay: d, the average's decay per optimiser step: the average spans about 1 / (1 − d) steps.
        warmup: Start with a shorter average, d_t = min(decay, 1 − t^(−2/3)) at the t-th optimiser
            step (the first step copies the weights), so the random initialisation fades quickly.
    """

    decay: Annotated[float, Range(0, 1, high_open=True)] = 0.999
    warmup: bool = True

    def __post_init__(self) -> None:
        check_arguments(type(self), asdict(self), "train.ema")


@dataclass(frozen=True)
class Mixup:
    """Mixup and CutMix of classification batches (``[train.mixup]``; timm.data.Mixup).

    Each batch (with probability ``prob``) is mixed with itself in reverse order: mixup blends the
    images, x = λ·a + (1 − λ)·b with λ ~ Beta(mixup_alpha, mixup_alpha); CutMix pastes a box of b
    into a, λ the share of a left. The targets become the same mix of one-hot labels, and the
    loss's label smoothing applies on top. An alpha of 0 turns its method off.

    Args:
        mixup_alpha: Beta parameter of mixup's λ (0: no mixup).
        cutmix_alpha: Beta parameter of CutMix's λ (0: no CutMix).
        prob: Share of the batches that are mixed at all.
        switch_prob: With both on, the share of mixed batches that use CutMix instead of mixup.
    """

    mixup_alpha: Annotated[float, Range(0)] = 0.8
    cutmix_alpha: Annotated[float, Range(0)] = 1.0
    prob: Annotated[float, Range(0, 1, low_open=True)] = 1.0
    switch_prob: Annotated[float, Range(0, 1)] = 0.5

    def __post_init__(self) -> None:
        check_arguments(type(self), asdict(self), "train.mixup")
        if not self.mixup_alpha and not self.cutmix_alpha:
            raise ParameterError("train.mixup: mixup_alpha = 0 and cutmix_alpha = 0 mix nothing; set one above 0, "
                                 "or remove train.mixup")


def table_of(settings: type, value: Any) -> Any:
    """An optional table setting as ``settings``: None when off (absent, None, false), the defaults for true."""
    if value is None or value is False:
        return None
    if value is True:
        return settings()
    return value if isinstance(value, settings) else settings(**value)


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
            (the head stays random): staged transfer, Valle Salgado et al. 2023 §8.
        linear_probe: Train the head only, with the backbone frozen (linear probing); False
            fine-tunes everything that is not frozen by the model's own settings.
        progress: Show a progress bar per epoch.
        tail_synthesis: Train a classifier's head on virtual features of the rarest classes too:
            a table of settings (rarest, below, share, alpha, memory; see TailSynthesis), true for
            their defaults, or false or None (the default) for none.
        ema: Keep an exponential moving average of the weights and make it the run's model: a
            table (decay, warmup; see Ema), true for its defaults, or false or None for none.
        mixup: Mix a classifier's training batches (mixup and CutMix): a table (mixup_alpha,
            cutmix_alpha, prob, switch_prob; see Mixup), true for its defaults, or false or None.
        accumulate: Add up the gradients of this many batches before each optimiser step
            (gradient accumulation: the step sees accumulate × batch_size images).
        channels_last: Keep images and convolution weights in channels-last memory order
            (faster convolutions on most CPUs and GPUs; with amp the CPU default measured fastest
            at the same accuracy, benchmarks/cpu_speed.py).
        compile: Compile the model with torch.compile before training (slower first epoch).
        tta: Test-time augmentation of the run's evaluations, predictions and exported graph:
            'none', 'flips' (the mean over the image and its horizontal, vertical and double
            flips) or 'dihedral' (the 8 flips and quarter turns of a square image; the 4 flips of
            an oblong one). Classification and segmentation only.
        logit_adjustment: τ of a post-hoc logit adjustment of the run's evaluations, predictions
            and exported graph (Menon et al. 2021): a classifier predicts with its logits minus
            τ·log π, π the training split's class shares; 0 (the default) for none. Around 0.5
            finds more of the rare classes at a small cost in accuracy (docs/recipes.md).
    """

    epochs: Annotated[int, Range(1)] = 10
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Annotated[float, Range(0, low_open=True)] = 1e-3
    weight_decay: Annotated[float, Range(0)] = 0.01
    momentum: Annotated[float, Range(0, 1)] = 0.9
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: Annotated[int, Range(0)] = 0
    min_lr: Annotated[float, Range(0)] = 0.0
    step_size: Annotated[int, Range(1)] = 10
    gamma: Annotated[float, Range(0, low_open=True)] = 0.1
    clip_grad_norm: Annotated[float | None, Range(0, low_open=True)] = None
    amp: bool = True
    seed: Annotated[int, Range(0)] = 0
    deterministic: bool = True
    monitor: str = "val/loss"
    mode: Literal["min", "max", "auto"] = "auto"
    patience: Annotated[int | None, Range(1)] = None
    min_delta: Annotated[float, Range(0)] = 0.0
    eval_every: Annotated[int, Range(1)] = 1
    device: str = "auto"
    init_from: str | None = None
    linear_probe: bool = False
    progress: bool = True
    tail_synthesis: Annotated[TailSynthesis | dict | bool | None, SettingsTable(TailSynthesis)] = None
    ema: Annotated[Ema | dict | bool | None, SettingsTable(Ema)] = None
    mixup: Annotated[Mixup | dict | bool | None, SettingsTable(Mixup)] = None
    accumulate: Annotated[int, Range(1)] = 1
    channels_last: bool = True
    compile: bool = False
    tta: Literal["none", "flips", "dihedral"] = "none"
    logit_adjustment: Annotated[float, Range(0)] = 0.0

    def __post_init__(self) -> None:
        check_arguments(type(self), asdict(self), "train")
        for name, table in (("tail_synthesis", TailSynthesis), ("ema", Ema), ("mixup", Mixup)):
            object.__setattr__(self, name, table_of(table, getattr(self, name)))
        if self.mixup is not None and self.tail_synthesis is not None:
            raise ParameterError("train.mixup and train.tail_synthesis both change what the head is trained on; "
                                 "use one of them")
        if not self.warmup_epochs < self.epochs:
            raise ParameterError(f"train.warmup_epochs: must be below epochs = {self.epochs}, got {self.warmup_epochs}")
        if not self.min_lr <= self.lr:
            raise ParameterError(f"train.min_lr: must be at most lr = {self.lr:g}, got {self.min_lr:g}")

    @property
    def minimise(self) -> bool:
        """Whether a lower value of the monitored metric is better."""
        return self.mode == "min" or (self.mode == "auto" and "loss" in self.monitor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

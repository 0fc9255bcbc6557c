"""DINO, self-distillation with no labels (seed 002 §2.5, Hemmingsson and Olsson 2026): the objective and its loss.

Formulas (K = ``out_dim``, p = training progress in [0, 1]):

* teacher P_t(x) = softmax((g_t(x) − c) / τ_t), student log P_s(x') = log_softmax(g_s(x') / τ_s);
* loss = mean over the pairs (teacher view i, student view v), i ∈ {global 1, global 2}, v any view
  with v ≠ i, of the batch mean of H(P_t(x_i), P_s(x_v)) = −Σ_k P_t(x_i)_k log P_s(x_v)_k. The seed's
  eq. 2.10 writes a sum; the reference code divides by the number of pairs, 2 · (2 + N) − 2 for
  N local crops, as done here, so the loss stays on the scale of one cross-entropy (≤ ln K at
  the uniform solution whatever N);
* centre, after the loss: c ← m_c · c + (1 − m_c) · mean of the teacher outputs over both global
  views of the batch (over every process under torch.distributed);
* teacher EMA after each optimiser step: θ_t ← λ θ_t + (1 − λ) θ_s with λ(p) a cosine from
  ``momentum`` to 1 (schedules.py), over every parameter of encoder and head.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Iterator
from itertools import chain
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectlab import DataError, ParameterError, Range
from defectlab_plugins.dino.crops import check_sizes, multi_crop, prepare_encoder
from defectlab_plugins.dino.head import DINOHead
from defectlab_plugins.dino.schedules import clamp_progress, cosine, teacher_momentum, teacher_temperature

GLOBAL_VIEWS = 2
#: Collapse thresholds, as shares of ln K: mean teacher entropy above HIGH (uniform outputs), or
#: entropy of the batch's mean teacher distribution below LOW (every input on the same few dimensions).
HIGH, LOW = 0.95, 0.05
#: collapse_warning() looks at this many most recent steps and warns when most of them collapsed.
RECENT_STEPS = 50
DECAY, NO_DECAY = "decay", "no_decay"

Width = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0, low_open=True)]
Share = Annotated[float, Range(0, 1)]
Scale = Annotated[tuple[float, float], Range(0, 1, low_open=True)]
Side = Annotated[int | None, Range(1)]


def view_pairs(global_views: int, views: int) -> list[tuple[int, int]]:
    """(teacher view, student view) pairs: every global view against every other view."""
    return [(i, v) for i in range(global_views) for v in range(views) if v != i]


def dino_loss(student_out: Tensor, teacher_out: Tensor, center: Tensor, student_temp: float,
              teacher_temp: float | Tensor, global_views: int = GLOBAL_VIEWS) -> tuple[Tensor, dict[str, Tensor]]:
    """The DINO loss and detached statistics of the teacher.

    Args:
        student_out: student logits (V·B, K), view-major with the global views first (view v of
            image b in row v·B + b).
        teacher_out: teacher logits (G·B, K) of the G global views, in the same order.
        center: the centre c, (1, K) or (K,).
        student_temp: τ_s.
        teacher_temp: τ_t (a number or a 0-dim tensor).
        global_views: G.

    Returns:
        the loss (0-dim) and {"entropy": mean over teacher rows of H(P_t), "marginal_entropy":
        H of the mean of P_t over all teacher rows, "kl": mean over the pairs of KL(P_t || P_s)}.
    """
    views = student_out.shape[0] * global_views // teacher_out.shape[0]
    pairs = view_pairs(global_views, views)
    if not pairs or views * teacher_out.shape[0] != student_out.shape[0] * global_views:
        raise DataError(f"DINO loss: {student_out.shape[0]} student rows do not make whole views of "
                        f"{teacher_out.shape[0] // global_views} images with {global_views} global views")
    log_student = F.log_softmax(student_out.float() / student_temp, dim=-1).chunk(views)
    teacher_logits = (teacher_out.float() - center.float()) / teacher_temp
    teacher = F.softmax(teacher_logits, dim=-1).detach()
    teachers = teacher.chunk(global_views)
    loss = sum(torch.sum(-teachers[i] * log_student[v], dim=-1).mean() for i, v in pairs) / len(pairs)
    with torch.no_grad():
        entropy = -(teacher * F.log_softmax(teacher_logits, dim=-1)).sum(-1).mean()
        marginal = teacher.mean(0)
        marginal_entropy = -(marginal * marginal.clamp_min(1e-30).log()).sum()
        # each teacher view meets the same number of student views, so the pairs' mean of H(P_t) is `entropy`
        kl = loss.detach() - entropy
    return loss, {"entropy": entropy, "marginal_entropy": marginal_entropy, "kl": kl}


def silence_dropout(module: nn.Module) -> None:
    """Turn off dropout and stochastic depth everywhere in ``module`` (the teacher drops nothing)."""
    for part in module.modules():
        if isinstance(part, nn.modules.dropout._DropoutNd):
            part.p = 0.0
        if isinstance(getattr(part, "drop_prob", None), float):
            part.drop_prob = 0.0


class DINO(nn.Module):
    """DINO self-distillation: a student and its EMA teacher agree across multi-crop views.

    As in Hemmingsson and Olsson 2026 (§2.5, docs/references.md). The student is the encoder plus a projection head (3-layer MLP, L2 normalisation, weight-normalised
    last layer to ``out_dim``); the teacher is a copy of both, never trained by gradient, following the
    student by an EMA whose momentum rises from ``momentum`` to 1 on a cosine. Each batch gives 2 global
    and ``local_crops`` local random resized crops per image; the teacher sees the global ones, the
    student all. The loss is the cross-entropy between the centred, sharpened teacher distribution and
    the student's over every teacher/student pair of different views, averaged over the pairs.

    Crop sizes: global crops are ``global_size``, by default a ViT encoder's ``img_size`` (the size it
    is fine-tuned at) or min(224, image side) for others; local ones ``local_size``, by default 96/224
    of that. A timm ViT is switched to dynamic input size in place so that it takes local crops at their
    own size (position embeddings interpolated, as in the reference code; unchanged at ``img_size``);
    its crop sizes must be multiples of its patch size. Images smaller than a crop are a DataError.

    Schedules run on training progress p (fraction of all steps), not epochs: the reference's epoch
    counts become fractions (teacher-temperature warm-up 30 of 100 epochs -> 0.3, last layer frozen for
    the first of 100 epochs -> 0.01).

    ``epoch_metrics()`` gives, over the steps since it was last read: teacher_entropy (nats; mean
    entropy of the centred, sharpened teacher distribution), teacher_entropy_ratio (the same over
    ln K), kl (mean KL(teacher || student) over the view pairs), collapse_fraction (share of the steps
    whose teacher entropy was above 0.95 ln K, uniform collapse, or whose batch-mean teacher
    distribution had entropy below 0.05 ln K, every input on one dimension), and always momentum,
    teacher_temp and weight_decay at the current progress. ``collapse_warning()`` says what to change
    when most of the last 50 steps collapsed.

    Args:
        encoder: the backbone being pretrained, built for the "embed" task: a torch module with
            forward_features(images) -> (N, D) and num_features = D (the built-in ViTs and ResNets);
            given by the pretrain workflow, not by a config.
        out_dim: K, the number of output dimensions (prototypes); 8192 after Hemmingsson and Olsson's Table 4.2.
        hidden_dim: width of the head's two hidden layers.
        bottleneck_dim: width of the head's bottleneck, before L2 normalisation and the last layer.
        head_batch_norm: a BatchNorm1d after each hidden layer of the head (the reference's
            use_bn_in_head): for a ResNet from random initialisation, whose pooled features share
            one large component, without which the teacher's outputs are the same for every image
            (uniform or one-dimension collapse from the first epochs).
        norm_last_layer: keep the weight norm of the head's last layer fixed at 1 (steadier training);
            false trains it.
        local_crops: number of local crops per image (0: global views only).
        global_size: side of the global crops in pixels; None: the ViT's img_size, else min(224, the
            images' shorter side).
        local_size: side of the local crops in pixels; None: 96/224 of the global side (a multiple of
            the ViT's patch size).
        global_scale: range of the share of the image's area that a global crop covers.
        local_scale: range of the share of the image's area that a local crop covers.
        flip: probability of a horizontal flip of each view.
        jitter: strength of the contrast/brightness jitter, applied to 80 % of the views: contrast
            factor in [1 - jitter, 1 + jitter] and a shift of up to jitter times the view's standard
            deviation (0 = off).
        student_temp: student temperature τ_s.
        teacher_temp: teacher temperature τ_t after its warm-up (0.04-0.07; lower sharpens more).
        warmup_teacher_temp: teacher temperature at the start of training.
        warmup_teacher_temp_fraction: share of training over which τ_t goes linearly from
            warmup_teacher_temp to teacher_temp (the reference: 30 of 100 epochs).
        center_momentum: momentum m of the centre's EMA (0.9 for ImageNet-initialised encoders, 0.99
            for encoders trained from scratch; Hemmingsson and Olsson's Tables 7.1, 7.8).
        momentum: teacher EMA momentum at the start; it rises to 1 on a cosine over training.
        weight_decay: weight decay of the weights (not biases and norms) at the start.
        weight_decay_end: weight decay at the end, reached on a cosine.
        freeze_last_layer: share of training during which the head's last layer gets no update (the
            reference freezes it for the first epoch).
    """

    name = "dino"

    def __init__(
        self,
        encoder: nn.Module,
        out_dim: Annotated[int, Range(2)] = 8192,
        hidden_dim: Width = 2048,
        bottleneck_dim: Width = 256,
        norm_last_layer: bool = True,
        head_batch_norm: bool = False,
        local_crops: Annotated[int, Range(0)] = 8,
        global_size: Side = None,
        local_size: Side = None,
        global_scale: Scale = (0.4, 1.0),
        local_scale: Scale = (0.05, 0.4),
        flip: Share = 0.5,
        jitter: Share = 0.4,
        student_temp: Positive = 0.1,
        teacher_temp: Positive = 0.04,
        warmup_teacher_temp: Positive = 0.04,
        warmup_teacher_temp_fraction: Share = 0.3,
        center_momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.9,
        momentum: Share = 0.996,
        weight_decay: Annotated[float, Range(0)] = 0.04,
        weight_decay_end: Annotated[float, Range(0)] = 0.2,
        freeze_last_layer: Share = 0.01,
    ):
        super().__init__()
        if not callable(getattr(encoder, "forward_features", None)) or not isinstance(
                getattr(encoder, "num_features", None), int):
            raise ParameterError(f"ssl 'dino': the encoder ({type(encoder).__name__}) needs forward_features(images) "
                                 f"-> (N, D) and an int num_features = D, as the built-in backbones have")
        for parameter, (low, high) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if low > high:
                raise ParameterError(f"ssl.{parameter}: the lower end {low} is above the upper end {high}")
        self.sizes = prepare_encoder(encoder)
        self.sizes.check("global_size", global_size)
        self.sizes.check("local_size", local_size)
        self.out_dim = out_dim
        self.head_batch_norm = head_batch_norm
        self.local_crops = local_crops
        self.global_size, self.local_size = global_size, local_size
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.flip, self.jitter = flip, jitter
        self.student_temp = student_temp
        self.teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_fraction = warmup_teacher_temp_fraction
        self.center_momentum, self.momentum = center_momentum, momentum
        self.weight_decay, self.weight_decay_end = weight_decay, weight_decay_end
        self.freeze_last_layer = freeze_last_layer

        self.encoder = encoder
        self.head = DINOHead(encoder.num_features, out_dim, hidden_dim, bottleneck_dim, norm_last_layer,
                             head_batch_norm)
        self.teacher = nn.ModuleDict({"encoder": copy.deepcopy(encoder), "head": copy.deepcopy(self.head)})
        self.teacher.requires_grad_(False)
        silence_dropout(self.teacher)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("progress", torch.zeros(()))  # of the last after_step
        self._sums: dict[str, Tensor] = {}
        self._steps = 0
        self._recent: deque[Tensor] = deque(maxlen=RECENT_STEPS)  # per step: (entropy, marginal entropy) / ln K

    # --- schedules ---------------------------------------------------------------------------------

    def current_progress(self) -> float:
        return float(self.progress)

    def momentum_at(self, progress: float) -> float:
        """λ(p) = 1 − (1 − momentum) · (1 + cos(π p)) / 2."""
        return teacher_momentum(self.momentum, progress)

    def teacher_temp_at(self, progress: float) -> float:
        """τ_t(p): linear warm-up from warmup_teacher_temp to teacher_temp, then constant."""
        return teacher_temperature(self.warmup_teacher_temp, self.teacher_temp, self.warmup_teacher_temp_fraction,
                                   progress)

    def weight_decay_at(self, progress: float) -> float:
        """wd(p) = weight_decay_end + (weight_decay − weight_decay_end) · (1 + cos(π p)) / 2."""
        return cosine(self.weight_decay, self.weight_decay_end, progress)

    def _teacher_temp_tensor(self) -> Tensor:
        """τ_t at the stored progress, computed on the buffer's device (no host synchronisation)."""
        fraction, start, end = self.warmup_teacher_temp_fraction, self.warmup_teacher_temp, self.teacher_temp
        if fraction <= 0:
            return torch.tensor(end, device=self.progress.device)
        share = (self.progress.clamp(0, 1) / fraction).clamp(max=1).float()
        return start + (end - start) * share

    # --- the contract ------------------------------------------------------------------------------

    def views(self, images: Tensor) -> list[Tensor]:
        """The 2 global views, then the local ones: a list of (N, C, side, side) tensors."""
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise DataError(f"DINO views: expected an image batch (N, C, H, W), got "
                            f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
        height, width = images.shape[-2:]
        global_size = self.sizes.global_size(self.global_size, height, width)
        local_size = self.sizes.local_size(self.local_size, global_size)
        check_sizes(height, width, global_size, local_size, self.local_crops,
                    from_vit=self.global_size is None and self.sizes.native is not None)
        return multi_crop(images, global_size, self.global_scale, self.local_crops, local_size, self.local_scale,
                          self.flip, self.jitter)

    def student(self, views: list[Tensor]) -> Tensor:
        """Student logits of every view (V·B, K), view-major; one encoder pass per crop size."""
        features = [self.encoder.forward_features(torch.cat(views[:GLOBAL_VIEWS]))]
        if len(views) > GLOBAL_VIEWS:
            features.append(self.encoder.forward_features(torch.cat(views[GLOBAL_VIEWS:])))
        return self.head(torch.cat(features))

    @torch.no_grad()
    def teacher_output(self, views: list[Tensor]) -> Tensor:
        """Teacher logits of the global views (2·B, K)."""
        return self.teacher["head"](self.teacher["encoder"].forward_features(torch.cat(views[:GLOBAL_VIEWS])))

    def loss(self, views: list[Tensor]) -> Tensor:
        """The DINO loss of a batch's views; in training mode it then updates the centre and records the teacher's
        statistics (in eval mode it only measures)."""
        if len(views) < GLOBAL_VIEWS:
            raise DataError(f"DINO loss: expected at least {GLOBAL_VIEWS} views (the global ones), got {len(views)}")
        teacher_out = self.teacher_output(views)
        student_out = self.student(views)
        loss, stats = dino_loss(student_out, teacher_out, self.center, self.student_temp, self._teacher_temp_tensor())
        if self.training:  # an evaluation (a validation loss) changes no state and waits for no other process
            self.update_center(teacher_out)
            self._record(stats)
        return loss

    def forward(self, images: Tensor) -> Tensor:
        """loss(views(images)), so that the objective can be wrapped like any module (DDP)."""
        return self.loss(self.views(images))

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """c ← m c + (1 − m) · mean of the teacher outputs (over all processes under torch.distributed)."""
        batch_sum = teacher_out.float().sum(0, keepdim=True)
        count = torch.tensor(float(teacher_out.shape[0]), device=teacher_out.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_sum)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)

    def student_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of the student: the encoder's, then the head's."""
        return chain(self.encoder.named_parameters(prefix="encoder"), self.head.named_parameters(prefix="head"))

    def param_groups(self) -> list[dict[str, Any]]:
        """The student's trainable parameters: biases and 1-D tensors (norms) without weight decay, the rest
        in the group named "decay" whose weight decay follows the schedule."""
        decay, no_decay = [], []
        for name, parameter in self.student_parameters():
            if parameter.requires_grad:
                (no_decay if name.endswith(".bias") or parameter.ndim <= 1 else decay).append(parameter)
        groups = [{"params": decay, "name": DECAY, "weight_decay": self.weight_decay_at(self.current_progress())},
                  {"params": no_decay, "name": NO_DECAY, "weight_decay": 0.0}]
        return [group for group in groups if group["params"]]

    def before_optimizer_step(self, progress: float) -> None:
        """Drop the gradients of the head's last layer while progress < freeze_last_layer."""
        if progress < self.freeze_last_layer:
            for parameter in self.head.last_layer.parameters():
                parameter.grad = None

    @torch.no_grad()
    def after_step(self, progress: float, optimizer: Any = None) -> None:
        """EMA update of the teacher with λ(progress), the weight decay of the "decay" group, and the
        progress that the teacher temperature follows."""
        progress = clamp_progress(progress)
        momentum = self.momentum_at(progress)
        teacher = chain(self.teacher["encoder"].parameters(), self.teacher["head"].parameters())
        for (_, student), following in zip(self.student_parameters(), teacher, strict=True):
            following.mul_(momentum).add_(student.detach(), alpha=1 - momentum)
        self.progress.fill_(progress)
        if optimizer is not None:
            for group in optimizer.param_groups:
                if group.get("name") == DECAY:
                    group["weight_decay"] = self.weight_decay_at(progress)

    def export_encoder(self) -> nn.Module:
        """The student's encoder alone (head and teacher left behind)."""
        return self.encoder

    # --- monitoring --------------------------------------------------------------------------------

    def _record(self, stats: dict[str, Tensor]) -> None:
        log_k = math.log(self.out_dim)
        ratios = torch.stack([stats["entropy"], stats["marginal_entropy"]]) / log_k
        collapsed = ((ratios[0] > HIGH) | (ratios[1] < LOW)).float()
        step = {"teacher_entropy": stats["entropy"], "kl": stats["kl"], "collapse_fraction": collapsed}
        for key, value in step.items():
            self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()
        self._steps += 1
        self._recent.append(ratios)

    def epoch_metrics(self) -> dict[str, float]:
        """Teacher entropy, KL and collapse share since the last call (then reset), and the schedules' values now."""
        progress = self.current_progress()
        metrics = {}
        if self._steps:
            metrics = {key: float(value) / self._steps for key, value in self._sums.items()}
            metrics["teacher_entropy_ratio"] = metrics["teacher_entropy"] / math.log(self.out_dim)
        metrics.update(momentum=self.momentum_at(progress), teacher_temp=self.teacher_temp_at(progress),
                       weight_decay=self.weight_decay_at(progress))
        self._sums, self._steps = {}, 0
        return metrics

    def collapse_warning(self) -> str | None:
        """A message naming the collapse and the settings that help, when most of the last steps collapsed; else None."""
        if not self._recent:
            return None
        ratios = torch.stack(list(self._recent)).cpu()
        uniform = ratios[:, 0] > HIGH
        one_hot = ratios[:, 1] < LOW
        steps = len(ratios)
        if int((uniform | one_hot).sum()) * 2 <= steps:
            return None
        knobs = (f"a lower teacher_temp (now {self.teacher_temp:g}; 0.04 or less), a higher momentum (now "
                 f"{self.momentum:g}; e.g. 0.998-0.9995), a smaller out_dim (now {self.out_dim})")
        if self.sizes.native is None and not self.head_batch_norm:  # a convolutional encoder, the ViT's head
            knobs += (", or for a ResNet from scratch head_batch_norm = true with bottleneck_dim = 64, out_dim = 2048 "
                      "and center_momentum = 0.99 (docs/ssl.md)")
        if int(uniform.sum()) >= int(one_hot.sum()):
            return (f"DINO collapsed to uniform outputs in {int(uniform.sum())} of the last {steps} steps: the "
                    f"teacher's entropy is {float(ratios[:, 0].mean()):.0%} of ln(out_dim) = "
                    f"{math.log(self.out_dim):.2f} and the loss stays near it. Try {knobs}.")
        return (f"DINO collapsed onto one output dimension in {int(one_hot.sum())} of the last {steps} steps: "
                f"the teacher puts every image in the same place (entropy of its batch mean "
                f"{float(ratios[:, 1].mean()):.0%} of ln(out_dim)). Try a lower center_momentum (now "
                f"{self.center_momentum:g}; the centre then follows the teacher faster), {knobs}.")

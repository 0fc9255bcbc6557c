"""What a component of each kind must provide, as ``typing.Protocol`` classes (``defectlab.<Name>``).

Each docstring states what the engine calls, with what, and what it does with the result;
docs/kinds/<kind>.md#contract says the same with examples. The dataset kind's contract is the
base class ``defectlab.DefectDataset``. This module imports neither torch nor defectlab.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor, nn


@runtime_checkable
class DistanceMetric(Protocol):
    """Kind ``distance``: how far apart two datasets are.

    ``represent(dataset)`` gets a ``defectlab.DefectDataset`` and returns a summary of any type.
    It carries the cost: ``screen`` and the ``distance`` verb call it once per dataset.
    ``metric(a, b)`` gets two summaries made by the same instance and returns a number that
    ``float()`` accepts: 0 for identical summaries, larger for datasets further apart. It should
    be symmetric: ``screen`` passes (source, target), the verb the datasets in the order given.
    ``distance --json`` prints a summary through its ``to_dict()`` if it has one, else as JSON.
    """

    def represent(self, dataset: Any) -> Any: ...

    def __call__(self, a: Any, b: Any) -> float: ...


@runtime_checkable
class ImbalanceMetric(Protocol):
    """Kind ``imbalance``: a number from counts.

    ``scope`` is a required class attribute, ``"input"`` or ``"output"``; a component without
    one of these is rejected when its plugin loads. It decides the call:

    - ``"input"``: ``metric(counts)``, one number per class in class order, empty classes
      included (the ``imbalance`` verb, and ``screen`` with the source's counts over the
      target's classes; ``screen`` refuses output-scope metrics);
    - ``"output"``: ``metric(tp, fp, fn)``, three numbers; FP is background predicted as defect.

    It returns a number that ``float()`` accepts and raises ``defectlab.DataError`` for counts it
    cannot use (empty, negative, not finite, all zero).
    """

    scope: str

    def __call__(self, *args: Any, **kwargs: Any) -> float: ...


@runtime_checkable
class Backbone(Protocol):
    """Kind ``backbone``: the network a backbone component builds.

    The component is a class or function called as ``factory(num_classes=..., in_chans=...,
    weights=..., **options)``; ``weights`` is None (random), a local file or a source name the
    factory knows, and None or a file never needs the network. ``train`` passes ``num_classes``
    (the class count; 1 for a two-class segmentation), ``in_chans`` (the spec's, else the
    factory's default, which the data's channels then follow) and, if the factory has an
    ``img_size`` parameter, the data's image size. An optional ``tasks`` attribute on the
    factory lists ``"classify"``, ``"segment"``, ``"detect"``, ``"embed"``, ``"anomaly"``: ``train`` refuses
    data of a task not listed (without ``tasks``, any task is tried).

    What it returns is a ``torch.nn.Module`` (moved, switched train/eval, optimised,
    checkpointed by ``state_dict``; ``predict`` rebuilds it with ``weights=None``) whose
    ``forward(x)`` takes float images (N, in_chans, H, W), normalised, and returns logits:
    (N, num_classes) for ``classify``, (N, num_classes, H, W) at the input's size for
    ``segment``.

    Optional members the engine uses when present: ``forward_features(x) -> (N, D)`` with a
    ``head`` submodule such that ``forward(x) == head(forward_features(x))``: evaluators that
    want embeddings get them (logits then come from ``head``); ``head``: ``--init-from`` loads
    every tensor outside ``head.``, ``--linear-probe`` trains only the head, through
    ``freeze("all_but_head") -> list[str]`` when the model has it; ``encoder`` (without
    ``head``): the part that ``--init-from`` loads and ``--linear-probe`` freezes;
    ``backbone_prefixes``: a tuple of state-dict name prefixes that are the backbone (for a
    network without ``head`` or ``encoder``; yolov5's ``model.model.0.`` to ``model.model.9.``),
    what ``--init-from`` loads and ``--linear-probe`` freezes.

    An anomaly model (``tasks = ("anomaly",)``) is fitted, not trained by gradients: it has
    ``fit(batches) -> dict[str, float]``, which ``train`` calls once, under ``torch.no_grad()``
    and in eval mode, with an iterable of the training split's image batches (good images only,
    normalised, on the model's device); it keeps what it learns as buffers (so ``state_dict``
    and ``load_state_dict`` of a freshly built model carry it) and returns numbers logged as
    ``train/<name>``. Its ``forward(x)`` returns ``{"scores": (N,), "maps": (N, H, W)}`` at the
    input's size, larger = more anomalous; ``train`` then validates, checkpoints and tests it
    like any run (``train.epochs`` is 1, no optimiser, no loss).

    ``train_externally(folder, data, settings, resolved, resume, describe) -> Run`` (optional):
    a network trained by its own engine (yolov5: ultralytics' trainer). ``train`` calls it
    instead of defectlab's engine, once config.json and splits.csv are in ``folder``, with the
    DataModule, the TrainSettings, the resolved config, whether to resume, and ``describe``
    (what every checkpoint carries besides ``model``: model_spec, task, classes, transform). It
    writes metrics.jsonl, last.pt/best.pt, run.json and the final evaluation as the engine does,
    honours ``settings.init_from`` and ``resume``, and returns the run; ``train`` then writes
    report.html.
    """

    def forward(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class SSLObjective(Protocol):
    """Kind ``ssl``: a self-supervised objective wrapping an encoder; ``defectlab pretrain`` trains it.

    An objective is a ``torch.nn.Module`` (so its own parts, a decoder, a projection head, a
    teacher, a centre, are saved, moved and resumed with it) built as ``Objective(encoder,
    **settings)``: ``encoder`` is a module from a backbone built for the ``embed`` task, whose
    ``forward_features(images)`` gives (N, D) embeddings (the built-in ViTs also expose their timm
    model as ``encoder.encoder``).

    Each training step, under the engine's autocast: ``loss(views(images))`` on a float image batch
    (N, C, H, W) gives a 0-dim tensor; the engine calls ``backward()``, then
    ``before_optimizer_step(progress)`` (optional; e.g. drop the gradients of a layer frozen for the
    first epoch), clips gradients, steps the optimiser, and calls ``after_step(progress,
    optimizer)`` (an EMA teacher, schedules of momentum, temperature or weight decay).
    ``progress`` is the fraction of all training steps done, in [0, 1].
    ``param_groups()`` lists what the optimiser trains (never a teacher), as torch optimiser
    groups; a group may set its own ``weight_decay``. ``epoch_metrics()`` (optional) returns
    numbers logged once per epoch as ``train/<name>``. ``write(folder, images)`` (optional) draws
    pictures of what the objective does with a batch; it returns what it wrote.
    ``export_encoder()`` returns the encoder alone, without pretraining-only parts: what
    ``train --init-from`` loads.
    """

    name: str

    def views(self, images: Tensor) -> Any: ...

    def loss(self, views: Any) -> Tensor: ...

    def param_groups(self) -> list[dict[str, Any]]: ...

    def after_step(self, progress: float, optimizer: Any) -> None: ...

    def export_encoder(self) -> nn.Module: ...


@runtime_checkable
class Loss(Protocol):
    """Kind ``loss``: what training minimises.

    A ``torch.nn.Module``: the engine calls ``to(device)`` on it. ``loss(pred, target)`` gets
    the model's logits and the batch's target on one device: (N, K) and long class indices (N,)
    for ``classify``; (N, C, H, W) and long class indices (N, H, W), 0 = background, for
    ``segment`` (with C = 1 a 0/1 mask). With ``train.amp`` on a GPU it runs under float16
    autocast. It returns a 0-dim tensor, the mean over the batch: the engine calls
    ``backward()`` on it, stops the run with a TrainingError when it is not finite, and logs
    ``train/loss`` and ``val/loss`` as sum(loss * N) / sum(N). A tensor with more elements
    (``reduction="none"``) is for callers by hand only.

    Optional: ``setup(*, classes: list[str], class_counts: list[int]) -> None``, called before
    the first batch of every training (also on resume) and by ``evaluate``, with the class names
    and the training split's images per class.
    """

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class Evaluator(Protocol):
    """Kind ``evaluator``: scores over a whole split, accumulated batch by batch.

    Each evaluation of a split (validation every ``eval_every`` epochs, the final test, and
    ``evaluate``) calls ``reset()``, then ``update(pred, target, **wanted)`` for every batch
    under ``torch.no_grad()``, then ``compute()``; at the end of training and in ``evaluate``
    also ``details()`` and ``write(folder)`` when present. ``pred`` is the model's output as
    float32, ``target`` the batch's target (as for losses), both on the model's device.
    ``compute()`` returns ``{name: float}`` over everything since ``reset()``; each score is
    written as ``val/<name>`` in metrics.jsonl and can be ``train.monitor``.

    Optional: ``wants``, a tuple of extra keyword arguments for ``update``: ``"keys"`` (the
    samples' keys, a list of str), ``"embeddings"`` ((N, D) from ``forward_features``; None
    for a model without ``forward_features`` and ``head``), ``"images"`` (the normalised image
    batch (N, C, H, W), on the CPU); ``setup(*, classes, class_counts)`` as for losses;
    ``details() -> dict`` (JSON-ready, saved in metrics.json under the evaluator's ``name``);
    ``write(folder: Path) -> dict[str, Path]`` (plots and tables written into ``folder``, by
    label).
    """

    def update(self, pred: Tensor, target: Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def reset(self) -> None: ...


@runtime_checkable
class Callback(Protocol):
    """Kind ``callback``: listens to the training loop's events; subclass it, and override what you need.

    Every event does nothing until overridden (so ``isinstance`` holds for a subclass). ``Trainer``
    calls ``on_<event>(trainer, ...)`` of each callback in order, after the engine's own features
    (mixup, the weight average): ``fit_start``, ``epoch_start(epoch)``, ``batch_start(batch)``,
    ``batch_end(batch)``, ``evaluation_end(split, scores)``, ``epoch_end(record)``,
    ``checkpoint(state)``, ``fit_end(run)``. What each receives and may change, and on which rank of
    a torchrun job it runs, is in docs/kinds/callback.md#contract. ``main_process_only = True``
    keeps every event of the callback on rank 0 (what a tracker wants). An exception it raises
    stops the training as failed, its plugin and the event named; last.pt keeps the last epoch.
    """

    main_process_only: bool = False

    def on_fit_start(self, trainer: Any) -> None:
        """The trainer is set up (model on its device, optimiser built, a resumed state restored)."""

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Epoch ``epoch`` (from 1) is about to start."""

    def on_batch_start(self, trainer: Any, batch: dict[str, Any]) -> None:
        """``batch["images"]`` and ``batch["targets"]`` are about to go through the model; replace them to
        change what it trains on."""

    def on_batch_end(self, trainer: Any, batch: dict[str, Any]) -> None:
        """The batch's gradients are in (``batch["loss"]``, and ``batch["stepped"]`` after an optimiser step)."""

    def on_evaluation_end(self, trainer: Any, split: str, scores: dict[str, float]) -> None:
        """``split`` was evaluated, with these scores."""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """The epoch's metrics (the line of metrics.jsonl) are written."""

    def on_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        """``state`` is about to be saved as last.pt (and best.pt); entries added here are saved too."""

    def on_fit_end(self, trainer: Any, run: Any) -> None:
        """The run has finished: tested, reported."""


#: The protocol of each kind word; the dataset kind's base is the class ``DefectDataset``.
PROTOCOLS: dict[str, type] = {
    "distance": DistanceMetric,
    "imbalance": ImbalanceMetric,
    "backbone": Backbone,
    "ssl": SSLObjective,
    "loss": Loss,
    "evaluator": Evaluator,
    "callback": Callback,
}

"""The training engine: components in, run directory out.

:class:`Trainer` trains any model from a ``backbone`` component with any ``loss`` on the batches
of a :class:`~defectlab.data.data_module.DataModule`, evaluates with ``evaluator`` components, and
writes the run directory of DESIGN.md "Runs": metrics.jsonl, atomic last.pt/best.pt, run.json
and, at the end, the test evaluation, plots and report.html. It resumes from last.pt to the same
result, stops early on a monitored metric, stops with a clear message on a non-finite loss, and
runs unchanged under ``torchrun`` (DistributedDataParallel; only rank 0 writes).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from defectlab.plugin_system.errors import DataError, DefectlabError, TrainingError, error_text
from defectlab.plugin_system.files import (
    stale_temporaries,
    write_error,
    write_json,
    write_text,
)
from defectlab.plugin_system.progress import progress
from defectlab.training import distributed
from defectlab.training.adjustment import logit_offsets
from defectlab.training.checkpoints import load_checkpoint, save_checkpoint
from defectlab.training.contracts import broken, checked_logits, checked_loss, checked_losses
from defectlab.training.evaluation import evaluate_split, to_device, write_evaluation
from defectlab.training.events import Events
from defectlab.training.features import training_features
from defectlab.training.settings import TrainSettings
from defectlab.training.transfer import (
    freeze_backbone,
    frozen_norms_to_eval,
    init_backbone_from,
)
from torch import nn

log = logging.getLogger("defectlab.training.loop")

Callback = Callable[["Trainer", dict[str, Any]], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str, world: distributed.World) -> torch.device:
    """The device a setting names; 'auto' is this process's GPU if there is one, else the CPU. 'auto' and
    'cuda' mean GPU LOCAL_RANK of this machine (RANK counts the processes of every machine)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DataError(f"train.device: {exc}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"train.device is '{name}' but PyTorch sees no GPU here; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)
        if world.local_rank >= torch.cuda.device_count():
            raise DataError(f"this process is number {world.local_rank} (LOCAL_RANK) on its machine, which has "
                            f"{torch.cuda.device_count()} GPU(s); start torchrun with --nproc_per_node "
                            f"{torch.cuda.device_count()} at most")
    return device


def make_optimizer(parameters: list[nn.Parameter] | list[dict[str, Any]], settings: TrainSettings
                   ) -> torch.optim.Optimizer:
    """The optimiser of ``settings`` over parameters, or over torch parameter groups (which may set their
    own weight decay)."""
    if not parameters:
        raise DataError("every parameter of the model is frozen: nothing to train (check model.freeze and "
                        "train.linear_probe)")
    if settings.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, settings: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: linear warm-up from lr/10, then cosine, step or constant."""
    from torch.optim import lr_scheduler

    after = settings.epochs - settings.warmup_epochs
    if settings.schedule == "cosine":
        main: lr_scheduler.LRScheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(after - 1, 1),
                                                                        eta_min=settings.min_lr)
    elif settings.schedule == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=settings.step_size, gamma=settings.gamma)
    else:
        main = lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if not settings.warmup_epochs:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=settings.warmup_epochs)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[settings.warmup_epochs])


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper and torch.compile's."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


def mixed_precision(device: torch.device) -> torch.dtype | None:
    """The autocast type ``train.amp`` means on ``device``: float16 on a GPU, bfloat16 on a CPU that computes
    it natively (AVX-512 BF16 or AMX), else None (float32)."""
    if device.type == "cuda":
        return torch.float16
    try:
        native = device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        native = False
    return torch.bfloat16 if native else None


def set_up_components(data: Any, *components: Any) -> None:
    """Give the loss and evaluators that have ``setup`` the data's class names and training counts."""
    counts = data.class_counts("train")
    for component in components:
        if component is not None and hasattr(component, "setup"):
            component.setup(classes=list(data.classes), class_counts=counts)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler, ``kill``) stops a training like Ctrl-C: last.pt kept, run.json says how
    to resume. Only in the main thread, where Python runs signal handlers; restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Trainer:
    """Train ``model`` on ``data`` with ``loss``, evaluating with ``evaluators``, into ``folder``.

    Every piece can be built on its own (``defectlab.create``) and handed in here; ``fit()``
    returns the :class:`~defectlab.runs.run.Run`. ``callbacks`` listen to the loop's events
    (:mod:`defectlab.training.events`, with the rank each runs on), after the engine's own features
    (mixup, the weight average); a plain function ``f(trainer, record)`` is called after every epoch.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, data: Any, folder: str | Path,
                 evaluators: Sequence[Any] = (), settings: TrainSettings | None = None,
                 callbacks: Sequence[Callback] = (), describe: dict[str, Any] | None = None):
        self.settings = settings or TrainSettings()
        self.world = distributed.world_from_environment()
        self.device = pick_device(self.settings.device, self.world)
        self.folder = Path(folder)
        self.model, self.loss, self.data = model, loss, data
        self.evaluators = list(evaluators)
        self.events = Events([*training_features(self.settings, data), *callbacks])
        tau = self.settings.logit_adjustment  # the offsets of train.logit_adjustment, None when it is 0
        self.offsets = logit_offsets(tau, data.class_counts("train"), data.classes) if tau else None
        self.extra = dict(describe or {})
        self.epoch = 0  # epochs completed
        self.best: dict[str, Any] = {"epoch": None, "value": None, "monitor": self.settings.monitor}
        self.bad_evaluations = 0
        self.skipped: dict[str, None] = {}
        self.transfer_report: dict[str, Any] | None = None
        self.frozen: list[str] = []
        self.warnings: list[str] = []  # what callbacks found worth telling (e.g. a collapsing pretraining)
        self.amp_dtype = mixed_precision(self.device) if self.settings.amp else None
        self.amp = self.amp_dtype is not None
        self.restored: dict[str, Any] | None = None  # the state of last.pt a resumed run started from
        self.evaluated: nn.Module | None = None  # what validation scores instead of the network (the weight average)
        self.fitted = hasattr(model, "fit")  # an anomaly model: fitted in one pass, no optimiser
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: torch.optim.lr_scheduler.LRScheduler | None = None
        self.synthesizer: Any = None  # train.tail_synthesis's queues, built in _prepare
        self.star_explained = False  # the first epoch line with a * says what it means
        self.stopped: tuple[str, str] | None = None  # (status, message) a callback's stop() asked for

    # --- set-up ----------------------------------------------------------------------------------

    def _prepare(self, resume: bool) -> None:
        set_up_components(self.data, self.loss, *self.evaluators)
        if self.settings.init_from and not resume:  # a resumed run restores every tensor from last.pt
            report = init_backbone_from(self.model, self.settings.init_from)
            self.transfer_report = report.to_dict()
            self._say(report.summary())
        if self.settings.linear_probe:
            self.frozen = freeze_backbone(self.model)
        self.model.to(self.device)
        if self.settings.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.settings.compile:
            self.model = torch.compile(self.model)
        if self.loss is not None:  # a detector computes its own losses
            self.loss.to(self.device)
        distributed.start(self.world, self.device)
        if self.fitted and self.world.distributed:
            raise TrainingError("an anomaly model is fitted in one process; run it without torchrun")
        if self.settings.tail_synthesis is not None:  # virtual tail-class features, from the training split
            from defectlab.training.tail_synthesis import TailSynthesizer

            self.synthesizer = TailSynthesizer.for_trainer(self)
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # an objective leaves parts of its encoder unused (the backbone's classifier head)
            unused = hasattr(self.model, "param_groups")
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=unused)
        if not self.fitted:  # a fitted model has nothing to optimise
            groups = getattr(self.network, "param_groups", None)  # an objective groups its own parameters
            trainable = groups() if groups is not None else [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = make_optimizer(trainable, self.settings)
            self.schedule = make_schedule(self.optimizer, self.settings)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16 and not self.fitted)

    @property
    def network(self) -> nn.Module:
        """The model being trained, without the DistributedDataParallel and torch.compile wrappers."""
        return unwrap(self.model)

    def _restore(self) -> None:
        state = load_checkpoint(self.folder / "last.pt")
        self.network.load_state_dict(state.get("trained_model", state["model"]))  # a weight average saves both
        if not self.fitted:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best, self.bad_evaluations = state["epoch"], state["best"], state["bad_evaluations"]
        self.skipped = dict.fromkeys(state.get("skipped", []))
        self.transfer_report = state.get("transfer_report")
        self.restored = state
        if self.world.is_main:
            self._truncate_metrics(self.epoch)
        self._say(f"resuming {self.folder} after epoch {self.epoch} of {self.settings.epochs}")

    # --- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> Any:
        """Train to the last epoch (or an early stop), then evaluate on the test split and write the report."""
        from defectlab.runs.run import Run, write_resolved_config

        self.folder.mkdir(parents=True, exist_ok=True)
        if self.world.is_main and not (self.folder / "config.json").is_file():  # built from Python, not a config
            write_resolved_config(self.folder, {"model": self.extra.get("model_spec"), "train": self.settings.to_dict()},
                                  self.settings.seed)
        previous = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
        if self.settings.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        try:
            with terminate_as_interrupt():
                self._run(resume)
        finally:  # the process-wide switches go back to what the caller had
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.backends.cudnn.benchmark = previous[2]
            distributed.stop(self.world)
        return Run(self.folder)

    def _run(self, resume: bool) -> None:
        """Set up, train, evaluate; whatever ends the run early is recorded in run.json with its message."""
        try:
            if resume and self.world.is_main:
                for leftover in stale_temporaries(self.folder):  # half-written files of a killed run
                    leftover.unlink(missing_ok=True)
            self._prepare(resume)
            if resume:
                self._restore()
            elif self.world.is_main:
                write_text(self.folder / "metrics.jsonl", "")
            self.events.fire("fit_start", self)
            self._status("running")
            self._loop()
            if self.stopped is None:
                self._finish()
            else:
                self._status(*self.stopped)
                if self.world.is_main:
                    from defectlab.runs.report import write_run_report

                    write_run_report(self.folder)
            from defectlab.runs.run import Run

            self.events.fire("fit_end", self, Run(self.folder))
        except KeyboardInterrupt:
            message = self._stopped("interrupted")
            self._status("interrupted", message, quiet=True)
            raise TrainingError(message) from None
        except BaseException as exc:  # a non-finite loss, a full disk, a broken plugin, a bug: all recorded
            cause = distributed.lost_peer(self.world, exc)
            if cause is not None:  # another node or process died, or the network failed
                message = self._stopped(f"lost contact with another process of this {self.world.size}-process run",
                                        f": a node or process died, or the network failed ({cause}; processes wait "
                                        f"{distributed.timeout():g} s for each other, {distributed.TIMEOUT_ENV})")
                self._status("interrupted", message, quiet=True)
                raise TrainingError(message) from exc
            self._status("failed", error_text(exc), quiet=True)
            raise

    def _loop(self) -> None:
        """Epochs until the last one or an early stop."""
        while self.epoch < self.settings.epochs:
            record = self._epoch(self.epoch + 1)
            self.epoch += 1
            stop = self._after_epoch(record)
            self.events.fire("epoch_end", self, record)
            if self.stopped is not None:
                self._say(f"stopped after epoch {self.epoch}: {self.stopped[1]}")
                break
            if stop:
                self._say(f"early stop after epoch {self.epoch}: {self.settings.monitor} has not improved for "
                          f"{self.bad_evaluations} evaluations (best {self.best['value']:.4g} at epoch "
                          f"{self.best['epoch']})")
                break

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split, then (every eval_every epochs) the validation split."""
        seed_everything(self.settings.seed * 10_007 + epoch)
        self.events.fire("epoch_start", self, epoch)
        if self.fitted:
            return self._validated(self._fit_pass(epoch))
        self.model.train()
        frozen_norms_to_eval(self.model)
        loader = self.data.loader("train", epoch=epoch, rank=self.world.rank, world_size=self.world.size)
        bar = self._progress(loader, f"epoch {epoch}/{self.settings.epochs}")
        total, seen, started = 0.0, 0, time.perf_counter()
        self.parts: dict[str, float] = {}  # a detector's named losses, summed over the epoch's images
        steps = max(len(loader), 1)
        for step, batch in enumerate(bar, 1):
            self._note_skipped("train", batch)
            images = batch["image"]
            if not len(images):
                continue
            progress = ((epoch - 1) * steps + step) / (self.settings.epochs * steps)  # of every step, for schedules
            loss = self._step(images.to(self.device, non_blocking=True), to_device(batch["target"], self.device),
                              epoch, step, progress, steps)
            total += loss * len(images)
            seen += len(images)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        seconds = time.perf_counter() - started
        total, seen = distributed.summed(self.world, total, seen)
        if not seen:
            raise DataError("no training image could be read in this epoch; run `defectlab check-data` on the dataset")
        parts = distributed.summed(self.world, *self.parts.values()) if self.parts else ()
        record = {"epoch": epoch, "train/loss": total / seen,
                  **{f"train/{name}": value / seen for name, value in zip(self.parts, parts)},
                  "lr": self.optimizer.param_groups[0]["lr"],
                  "weight_decay": self.optimizer.param_groups[0]["weight_decay"],
                  "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 2)}
        epoch_metrics = getattr(self.network, "epoch_metrics", None)
        if epoch_metrics is not None:
            record.update({f"train/{k}": float(v) for k, v in epoch_metrics().items()})
        self.schedule.step()
        return self._validated(record)

    def _validated(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with the validation split's scores, every eval_every epochs and after the last."""
        epoch = record["epoch"]
        if (epoch % self.settings.eval_every == 0 or epoch == self.settings.epochs) and "val" in self.data.splits:
            scores = evaluate_split(self.evaluated or self.network, self.loss, self.data, "val", self.evaluators,
                                    self.device, on_skipped=self._note_skipped, amp=self.amp_on_gpu, tta=self.settings.tta,
                                    offsets=self.offsets)
            record.update({f"val/{k}": v for k, v in scores.items()})
            self.events.fire("evaluation_end", self, "val", scores)
        return record

    def _fit_pass(self, epoch: int) -> dict[str, Any]:
        """A fitted model's one pass: ``fit`` gets the training split's image batches, without gradients."""
        model, seen = self.network, 0
        model.eval()

        def batches() -> Iterator[torch.Tensor]:
            nonlocal seen
            for batch in self._progress(self.data.loader("train", epoch=epoch), "fit"):
                self._note_skipped("train", batch)
                if len(batch["image"]):
                    seen += len(batch["image"])
                    yield batch["image"].to(self.device, non_blocking=True)

        started = time.perf_counter()
        with torch.no_grad():
            numbers = model.fit(batches())
        seconds = time.perf_counter() - started
        if not seen:
            raise DataError("no training image could be read for the fit; run `defectlab check-data` on the dataset")
        if not isinstance(numbers, dict):
            raise broken("backbone", model, f"fit() must return a dict of names to numbers, not "
                                            f"{type(numbers).__name__}")
        return {"epoch": epoch, **{f"train/{k}": float(v) for k, v in numbers.items()},
                "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 2)}

    def _progress(self, loader: Any, label: str) -> Any:
        """``loader`` with progress on the main process when train.progress is on: a bar on a terminal, else
        a line every PROGRESS_EVERY seconds (:mod:`defectlab.plugin_system.progress`)."""
        return progress(loader, label, self._say, shown=self.settings.progress and self.world.is_main,
                        images=lambda batch: len(batch["image"]))

    @property
    def amp_on_gpu(self) -> bool:
        """Whether evaluation runs under autocast: on a GPU only (a CPU evaluates in float32)."""
        return self.amp and self.device.type == "cuda"

    def _step(self, images: torch.Tensor, targets: Any, epoch: int, step: int, progress: float, steps: int) -> float:
        """One batch forward and backward; the optimiser steps after every ``train.accumulate`` batches (and
        after the epoch's last one), on the gradients' mean over those batches."""
        batch = {"images": images, "targets": targets, "epoch": epoch, "step": step}
        self.events.fire("batch_start", self, batch)
        images, targets = batch["images"], batch["targets"]
        if self.settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        with autocast:
            if isinstance(targets, list):  # a detector takes its targets and returns its named losses
                parts = checked_losses(self.model, self.model(images, targets))
                loss = torch.stack(list(parts.values())).sum()
                for name, value in parts.items():
                    self.parts[name] = self.parts.get(name, 0.0) + float(value.detach()) * len(images)
            elif self.synthesizer is not None:  # virtual tail-class features train the head too
                loss = checked_loss(self.loss, self.synthesizer.loss(self.model, self.loss, images, targets, epoch))
            else:
                loss = checked_loss(self.loss, self.loss(checked_logits(self.model, self.model(images)), targets))
        finite = bool(torch.isfinite(loss.detach()))
        if self.world.distributed:  # every rank stops together
            finite = distributed.summed(self.world, float(not finite))[0] == 0
        if not finite:
            last = f"last.pt keeps epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written yet"
            raise TrainingError(f"the loss became {float(loss.detach()):g} at epoch {epoch}, step {step}; training "
                                f"stopped and {last}. Lower train.lr, set train.clip_grad_norm, or check the data "
                                f"(`defectlab check-data`)")
        every = self.settings.accumulate
        first = (step - 1) // every * every + 1  # the first batch of this step's group
        group = min(every, steps - first + 1)
        stepping = step == first + group - 1
        if step == first:
            self.optimizer.zero_grad(set_to_none=True)
        syncing = self.model.no_sync() if self.world.distributed and not stepping else nullcontext()
        with syncing:  # DDP averages the gradients once per optimiser step
            self.scaler.scale(loss / group).backward()
        if stepping:
            self._optimizer_step(progress)
        batch.update(loss=float(loss.detach()), stepped=stepping)
        self.events.fire("batch_end", self, batch)
        return batch["loss"]

    def _optimizer_step(self, progress: float) -> None:
        model = self.network
        if hasattr(model, "before_optimizer_step"):  # e.g. DINO drops a frozen layer's gradients
            model.before_optimizer_step(progress)
        if self.settings.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if hasattr(model, "after_step"):  # e.g. an EMA teacher, schedules of momentum and weight decay
            model.after_step(progress, self.optimizer)

    def _after_epoch(self, record: dict[str, Any]) -> bool:
        """Log the epoch, update best/last checkpoints; True when early stopping says stop."""
        monitor = self.settings.monitor
        value = record.get(monitor)
        evaluated = any(key.startswith("val/") for key in record)
        if value is None and monitor.startswith("val/") and not evaluated and "val" not in self.data.splits:
            monitor, value = "train/loss", record.get("train/loss")  # no validation split: best = lowest train loss
            self.best["monitor"] = monitor
        if evaluated and value is None:
            known = ", ".join(k for k in record if k.startswith(("val/", "train/")))
            raise TrainingError(f"train.monitor '{monitor}' is not among the metrics ({known}); set train.monitor "
                                f"to one of them")
        improved = self.fitted  # a fitted model's one pass is its best
        if value is not None and math.isfinite(value):
            best = self.best["value"]
            sign = 1 if (self.settings.minimise if monitor == self.settings.monitor else True) else -1
            improved = improved or best is None or sign * (best - value) > self.settings.min_delta
            if improved:
                self.best.update(epoch=record["epoch"], value=value, monitor=monitor)
                self.bad_evaluations = 0
            else:
                self.bad_evaluations += 1
        record["best"] = improved
        if self.world.is_main:
            metrics = self.folder / "metrics.jsonl"
            try:
                with metrics.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            except OSError as exc:
                raise write_error(metrics, exc) from exc
            state = self._checkpoint_state()
            self.events.fire("checkpoint", self, state)
            save_checkpoint(self.folder / "last.pt", state)
            if improved:
                save_checkpoint(self.folder / "best.pt", state)
            self._status("running")
            self._say(self._epoch_line(record))
        distributed.barrier(self.world)
        patience = self.settings.patience
        return patience is not None and value is not None and self.bad_evaluations >= patience

    def _finish(self) -> None:
        """Evaluate the best weights on the test split (else val) and write plots and report.html."""
        if not self.world.is_main:
            distributed.barrier(self.world)
            return
        best = self.folder / "best.pt"
        model = self.network
        if best.is_file():
            model.load_state_dict(load_checkpoint(best)["model"])
            self.evaluated = None  # the final evaluation scores best.pt's weights, now in the network
        split = next((s for s in ("test", "val") if s in self.data.splits), None)
        results: dict[str, Any] = {}
        if split is not None:
            results = write_evaluation(model, self.loss, self.data, split, self.evaluators, self.device,
                                       self.folder / "eval" / split, on_skipped=self._note_skipped,
                                       amp=self.amp_on_gpu, tta=self.settings.tta, offsets=self.offsets)
            self.events.fire("evaluation_end", self, split, results["scores"])
            self._say(f"{split}: " + ", ".join(f"{k} {v:.4g}" for k, v in results["scores"].items()
                                               if "/" not in k and isinstance(v, float)))
        self._status("finished", evaluation={"split": split, "scores": results.get("scores", {})})
        from defectlab.runs.report import write_run_report

        write_run_report(self.folder)  # where it is, is the caller's to say (the CLI prints it)
        distributed.barrier(self.world)

    def stop(self, status: str, message: str) -> None:
        """End the run after this epoch as ``status`` (e.g. 'pruned'), for a callback: last.pt and best.pt
        are kept, the final evaluation is skipped, run.json records the status and ``message``."""
        self.stopped = (status, message)

    # --- bookkeeping -----------------------------------------------------------------------------

    def _checkpoint_state(self) -> dict[str, Any]:
        optimizer, schedule = (None, None) if self.fitted else (self.optimizer.state_dict(), self.schedule.state_dict())
        return {"model": self.network.state_dict(), "optimizer": optimizer, "schedule": schedule,
                "scaler": self.scaler.state_dict(), "epoch": self.epoch,
                "best": dict(self.best), "bad_evaluations": self.bad_evaluations, "skipped": list(self.skipped),
                "transfer_report": self.transfer_report, "settings": self.settings.to_dict(), **self.extra}

    def _stopped(self, what: str, why: str = "") -> str:
        """The message of a run that ``what`` stopped (for reason ``why``): where last.pt stands, how to go on."""
        if not self.epoch:
            return f"{what} before the first epoch ended{why}; start the run again"
        nodes = " (under torchrun: on every node, with the same torchrun options)" if self.world.distributed else ""
        return (f"{what} during epoch {self.epoch + 1}{why}; last.pt holds epoch {self.epoch}. "
                f"Continue with: defectlab train --resume {self.folder}{nodes}")

    def _note_skipped(self, split: str, batch: dict[str, Any]) -> None:
        for index in batch.get("skipped", ()):
            key = self.data.sample_key(split, int(index))
            if key not in self.skipped:
                self.skipped[key] = None
                log.warning("skipped unreadable image %s (%s split); the run goes on without it", key, split)

    def _status(self, status: str, message: str = "", quiet: bool = False, **extra: Any) -> None:
        """Write run.json; ``quiet`` (while another error is on its way out) logs a failed write instead."""
        if not self.world.is_main:
            return
        try:
            write_json(self.folder / "run.json", {
                "status": status, "message": message, "epochs_done": self.epoch, "epochs": self.settings.epochs,
                "best": self.best, "skipped_images": list(self.skipped), "transfer": self.transfer_report,
                "frozen_parameters": len(self.frozen), "data": self.data.describe(), "warnings": self.warnings,
                **extra})
        except DefectlabError as exc:
            if not quiet:
                raise
            log.warning("could not record the run's status '%s': %s", status, exc)

    def _truncate_metrics(self, epoch: int) -> None:
        """Drop metric lines of epochs after ``epoch`` (written before a kill, redone on resume)."""
        path = self.folder / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        kept = [line for line in lines if line.strip() and json.loads(line)["epoch"] <= epoch]
        write_text(path, "".join(line + "\n" for line in kept))

    def _epoch_line(self, record: dict[str, Any]) -> str:
        shown = {k: v for k, v in record.items() if k in ("train/loss", "val/loss", self.best["monitor"])}
        text = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
        line = f"epoch {record['epoch']}/{self.settings.epochs} {text} ({record['images_per_s']:.0f} img/s)"
        if not record["best"]:
            return line
        legend = "" if self.star_explained else f"  (* = best {self.best['monitor']} so far, saved as best.pt)"
        self.star_explained = True
        return f"{line} *{legend}"

    def _say(self, text: str) -> None:
        if self.world.is_main:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

"""Training YOLOv5 with ultralytics' own trainer, into a defectlab run directory.

ultralytics has the engine for YOLO (mosaic and the rest of its augmentation, task-aligned
assignment, EMA, warm-up, its validator), so defectlab does not rewrite it. defectlab owns the
rest: the data module's splits written as a YOLO layout (``yolo-data/``), the resolved config,
the transfer of another run's backbone, one line per epoch in metrics.jsonl (from ultralytics'
results.csv, named as defectlab names metrics), ``last.pt``/``best.pt`` in defectlab's
checkpoint format (the EMA weights in float32, with what ``predict`` needs to rebuild the
model), best and early stopping by ``train.monitor``, run.json, and the final evaluation of the
test split with the run's evaluators. ultralytics' own run is kept beside, in ``ultralytics/``
(its weights, results.csv and plots). ``--resume`` continues ultralytics' ``last.pt``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from defectlab import (
    DataError,
    DefectDataset,
    TrainingError,
    atomic_write,
    did_you_mean,
    init_backbone_from,
    write_json,
    write_text,
)
from defectlab_plugins.yolov5.detector import BACKBONE_LAYERS, YOLOv5
from defectlab_plugins.yolov5.environment import ultralytics_module

log = logging.getLogger("defectlab.yolov5")

#: ultralytics' own run inside the defectlab run: args.yaml, results.csv, weights/, plots.
ENGINE_FOLDER = "ultralytics"
#: The data module's splits as a YOLO layout (data.yaml, images/, labels/) for ultralytics' trainer.
DATA_FOLDER = "yolo-data"
#: The network as training starts (random, weights= or --init-from), in ultralytics' format: what YOLO() loads.
START_FILE = "start.pt"
#: ultralytics' validation columns in results.csv and defectlab's names for them.
SCORES = {"metrics/precision(B)": "val/precision", "metrics/recall(B)": "val/recall",
          "metrics/mAP50(B)": "val/map_50", "metrics/mAP50-95(B)": "val/map"}
#: ultralytics' optimiser names for defectlab's train.optimizer.
OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD"}
#: Where to set an ultralytics argument that defectlab derives, when its name says nothing of it.
SET_BY = {"nbs": " (nbs, the images per optimiser step, is data.batch_size x train.accumulate)"}


class ModuleSplits(DefectDataset):
    """The data module's splits as one dataset whose samples carry their split: what is written as YOLO's
    train/val/test folders.

    Each image is the one the data module gives the model, at its image size (before
    augmentation and normalisation), so ultralytics trains on the very pixels that defectlab's
    evaluation and ``predict`` show the model (its letterbox then changes nothing). A file that
    already is that image (8-bit grey or RGB at the image size, no EXIF rotation, read by its
    dataset as it is) keeps its path and is hard-linked; any other is resized and written as PNG.
    The boxes, normalised to the image, are the same at any size.
    """

    name = "data_module_splits"
    task = "detect"

    def __init__(self, data: Any) -> None:
        from dataclasses import replace

        super().__init__()
        self.classes = list(data.classes)
        self.root = "data module"
        self.resize = data.transform.resize
        height, width = data.transform.size
        self.sources: list[tuple[Any, int]] = []
        for split, indices in data.splits.items():
            dataset = data.datasets[split]
            plain = type(dataset).load_image is DefectDataset.load_image  # the file is what the dataset reads
            for index in indices:
                sample = dataset.samples[index]
                path = sample.path if plain and is_model_image(sample.path, width, height) else None
                self.samples.append(replace(sample, key=f"{split}/{sample.key}", split=split, path=path))
                self.sources.append((dataset, index))

    def load_image(self, index: int) -> Any:
        dataset, position = self.sources[index]
        return self.resize(dataset.load_image(position))


def is_model_image(path: str | None, width: int, height: int) -> bool:
    """Whether the image file at ``path`` is 8-bit grey or RGB, ``width`` x ``height``, without an EXIF
    rotation (which OpenCV, ultralytics' reader, would apply): ultralytics may read it as it is."""
    from defectlab import UnreadableImageError, open_image

    if path is None:
        return False
    try:
        with open_image(path) as image:
            return image.size == (width, height) and image.mode in ("L", "RGB") and \
                image.getexif().get(0x0112, 1) == 1
    except UnreadableImageError:
        return False  # load_image reports it when the image is written


def ultralytics_device(name: str) -> str:
    """ultralytics' device string for defectlab's train.device ('auto', 'cpu', 'cuda', 'cuda:N')."""
    if name == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    if name in ("cpu", "mps"):
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DataError(f"train.device is '{name}' but PyTorch sees no GPU here; use 'cpu' or 'auto'")
        return name.partition(":")[2] or "0"
    raise DataError(f"train.device: '{name}' is not a device ultralytics trains on; use 'auto', 'cpu', 'cuda' or "
                    f"'cuda:N'")


def mixed_precision(wanted: bool, device: str) -> bool | str:
    """ultralytics' ``amp`` for train.amp: off on the CPU; on a GPU float16 only when ultralytics' AMP check
    can run offline (it loads yolo26n.pt from its weights folder, and downloads it when missing), else
    bfloat16 where the GPU has it (no check, no loss scaling needed), else off, said in the log."""
    if not wanted or device in ("cpu", "mps"):
        return False
    settings = ultralytics_module("ultralytics.utils").SETTINGS
    if (Path(settings["weights_dir"]) / "yolo26n.pt").is_file():
        return True
    if torch.cuda.is_bf16_supported():
        return "bf16"
    log.warning("train.amp: training in float32; ultralytics' float16 AMP first checks the GPU with yolo26n.pt, which "
                "is not in %s and is never downloaded here", settings["weights_dir"])
    return False


def schedule_arguments(settings: Any) -> dict[str, Any]:
    """ultralytics' lr schedule for defectlab's: cosine to min_lr (cos_lr, lrf = min_lr / lr), or constant."""
    if settings.schedule == "cosine":
        return {"cos_lr": True, "lrf": settings.min_lr / settings.lr}
    if settings.schedule == "constant":
        return {"cos_lr": False, "lrf": 1.0}
    raise DataError(f"train.schedule = '{settings.schedule}': ultralytics' trainer, which trains yolov5, has no step "
                    f"schedule; use 'cosine' (down to train.min_lr) or 'constant'")


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)


def _save(path: Path, state: dict[str, Any]) -> None:
    with atomic_write(path) as temporary:
        torch.save(state, temporary)


class UltralyticsTraining:
    """One training of a :class:`YOLOv5` by ultralytics into ``folder`` (see the module docstring)."""

    def __init__(self, detector: YOLOv5, folder: Path, data: Any, settings: Any, describe: Mapping[str, Any]) -> None:
        self.detector, self.folder, self.data, self.settings = detector, Path(folder), data, settings
        self.describe = dict(describe)
        self.skipped: list[str] = []  # images that could not be read, so ultralytics never saw them
        self.engine = self.folder / ENGINE_FOLDER
        self.best: dict[str, Any] = {"epoch": None, "value": None, "monitor": settings.monitor}
        self.bad_evaluations = 0
        self.epochs_done = 0
        self.transfer_report: dict[str, Any] | None = None
        self.frozen = detector.freeze or settings.linear_probe

    # --- the run -----------------------------------------------------------------------------------------

    def fit(self, resume: bool) -> Any:
        """Train (or continue), evaluate the best weights on the test split, and return the run."""
        from defectlab import Run

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise DataError("yolov5 trains with ultralytics' trainer, which starts its own processes for several GPUs; "
                            "run defectlab train without torchrun")

        threads = torch.get_num_threads()  # ultralytics sets torch's threads for CPU training; they come back after
        try:
            arguments = self._resume_arguments() if resume else self._start_arguments()
            self._status("running")
            self._train(arguments)
            self._finish()
        except KeyboardInterrupt:
            self._status("interrupted", self._interrupted(), quiet=True)
            raise TrainingError(self._interrupted()) from None
        except BaseException as exc:
            self._status("failed", str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}",
                         quiet=True)
            raise
        finally:
            torch.set_num_threads(threads)
        return Run(self.folder)

    def _interrupted(self) -> str:
        if not self.epochs_done:
            return "interrupted before ultralytics finished its first epoch; start the run again"
        return (f"interrupted after epoch {self.epochs_done} of {self.settings.epochs} (ultralytics' last.pt and "
                f"defectlab's hold it); continue with: defectlab train --resume {self.folder}")

    def _start_arguments(self) -> dict[str, Any]:
        """Transfer, the data as a YOLO layout, the starting network as a file: ultralytics' train() arguments."""
        arguments = self._arguments(self.folder / DATA_FOLDER / "data.yaml")  # checked before any work
        if self.settings.init_from:
            report = transfer_backbone(self.detector, self.settings.init_from)
            self.transfer_report = report.to_dict()
            say(report.summary())
        self.detector.take_normalisation(self.data.transform)
        write_text(self.folder / "metrics.jsonl", "")
        start = self.engine / START_FILE
        self.engine.mkdir(parents=True, exist_ok=True)
        _save(start, self.detector.ultralytics_checkpoint())
        write_yolo_data(self.data, self.folder / DATA_FOLDER)
        self.skipped = unreadable_images(self.folder / DATA_FOLDER)
        return {**arguments, "model": str(start)}

    def _resume_arguments(self) -> dict[str, Any]:
        """Continue ultralytics' last.pt; defectlab's last.pt gives back best, patience and the transfer report."""
        import yaml

        last = self.engine / "weights" / "last.pt"
        if not last.is_file():
            raise DataError(f"'{self.folder}' has no {last.relative_to(self.folder)} to resume ultralytics' training "
                            f"from; start the run again with defectlab train")
        started = yaml.safe_load((self.engine / "args.yaml").read_text(encoding="utf-8"))
        if int(started["epochs"]) != self.settings.epochs:
            raise DataError(f"ultralytics resumes a training to the {started['epochs']} epochs it started with, not "
                            f"{self.settings.epochs}; resume without --set train.epochs, or train longer with a new "
                            f"run: defectlab train CONFIG --init-from {self.folder}")
        state = torch.load(self.folder / "last.pt", map_location="cpu", weights_only=True)
        self.best, self.bad_evaluations = state["best"], state["bad_evaluations"]
        self.epochs_done, self.transfer_report = state["epoch"], state.get("transfer_report")
        self.detector.load_state_dict(state["model"])
        self.skipped = unreadable_images(self.folder / DATA_FOLDER)
        arguments = self._arguments(self.folder / DATA_FOLDER / "data.yaml")
        return {**arguments, "model": str(last), "resume": str(last)}

    def _arguments(self, data_yaml: Path) -> dict[str, Any]:
        """ultralytics' train() arguments from the data module and the [train] settings, then the model's
        ``train_args``."""
        settings, data = self.settings, self.data
        device = ultralytics_device(settings.device)
        arguments = {
            "data": str(data_yaml), "epochs": settings.epochs, "imgsz": max(data.transform.size),
            "batch": data.batch_size, "workers": data.workers, "device": device,
            # ultralytics adds up gradients to a nominal batch of nbs = 64 images before each step (8 batches of 8:
            # about 35 steps in the 12 epochs of benchmarks/detection.py, mAP@0.5 6 instead of 29); one step per
            # train.accumulate batches instead, as defectlab's engine steps (weight decay then stays as given)
            "nbs": data.batch_size * settings.accumulate,
            "amp": mixed_precision(settings.amp, device),
            "optimizer": OPTIMIZERS[settings.optimizer], "lr0": settings.lr, "momentum": settings.momentum,
            "weight_decay": settings.weight_decay, "warmup_epochs": settings.warmup_epochs,
            **schedule_arguments(settings), "seed": settings.seed, "deterministic": settings.deterministic,
            "patience": 0,  # ultralytics' own early stopping is off: defectlab's follows train.monitor
            "freeze": BACKBONE_LAYERS if self.frozen else None,
            "project": str(self.folder.resolve()), "name": ENGINE_FOLDER, "exist_ok": True,
            "plots": True, "verbose": settings.progress, "val": True,
        }
        extra = dict(self.detector.train_args)
        known = ultralytics_module("ultralytics.cfg").DEFAULT_CFG_DICT
        for key in extra:
            if key in arguments or key in ("resume", "pretrained", "model", "mode", "task", "data"):
                raise DataError(f"model.train_args.{key}: defectlab sets it (from [data], [train] or the run); set it "
                                f"there instead{SET_BY.get(key, '')}")
            if key not in known:
                raise DataError(f"model.train_args.{key}: not a setting of ultralytics' trainer"
                                f"{did_you_mean(key, known)}")
        return {**arguments, **extra}

    def _train(self, arguments: dict[str, Any]) -> None:
        """ultralytics' ``YOLO(file).train(...)`` with defectlab's callbacks: ``file`` is the starting network
        (its weights are what ultralytics' trainer starts from, as when fine-tuning yolov5nu.pt) or, to resume,
        ultralytics' last.pt."""
        arguments = dict(arguments)
        yolo = ultralytics_module("ultralytics").YOLO(arguments.pop("model"), task="detect")
        yolo.add_callback("on_train_start", self._on_train_start)
        yolo.add_callback("on_model_save", self._after_epoch)
        yolo.train(**arguments)

    # --- ultralytics' callbacks ------------------------------------------------------------------------

    def _on_train_start(self, trainer: Any) -> None:
        """On resume, metrics.jsonl keeps the epochs ultralytics' last.pt holds, filled from results.csv where
        defectlab's files stopped one epoch before ultralytics' (a kill between the two writes)."""
        done = int(trainer.start_epoch)
        path = self.folder / "metrics.jsonl"
        kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        kept = [record for record in kept if record["epoch"] <= done]
        known = {record["epoch"] for record in kept}
        kept += [{**record, "best": False} for record in results_records(self.engine / "results.csv",
                                                                         self._train_images())
                 if record["epoch"] <= done and record["epoch"] not in known]
        write_text(path, "".join(json.dumps(record) + "\n" for record in sorted(kept, key=lambda r: r["epoch"])))
        self.epochs_done = done

    def _after_epoch(self, trainer: Any) -> None:
        """After ultralytics saved an epoch: its line in metrics.jsonl, defectlab's last.pt (and best.pt),
        run.json, and defectlab's early stopping."""
        epoch = int(trainer.epoch) + 1
        records = [r for r in results_records(self.engine / "results.csv", self._train_images()) if r["epoch"] == epoch]
        if not records:
            raise TrainingError(f"ultralytics wrote no results.csv line for epoch {epoch} in {self.engine}")
        record = records[-1]
        improved = self._judge(record)
        record["best"] = improved
        with (self.folder / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.epochs_done = epoch
        buffer = io.BytesIO()  # serialised once for last.pt and best.pt
        torch.save(self._checkpoint(trainer), buffer)
        _write_bytes(self.folder / "last.pt", buffer.getvalue())
        if improved:
            _write_bytes(self.folder / "best.pt", buffer.getvalue())
        self._status("running")
        patience = self.settings.patience
        if patience is not None and self.bad_evaluations >= patience:
            say(f"early stop after epoch {epoch}: {self.best['monitor']} has not improved for {self.bad_evaluations} "
                f"epochs (best {self.best['value']:.4g} at epoch {self.best['epoch']})")
            trainer.stop = True

    def _judge(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` improves on the best value of train.monitor (by more than min_delta)."""
        monitor = self.settings.monitor
        if monitor not in record:
            known = ", ".join(k for k in record if k.startswith(("val/", "train/")))
            raise TrainingError(f"train.monitor '{monitor}' is not among the metrics ({known}); set train.monitor to "
                                f"one of them")
        value = record[monitor]
        if not math.isfinite(value):
            self.bad_evaluations += 1
            return False
        sign = 1 if self.settings.minimise else -1
        improved = self.best["value"] is None or sign * (self.best["value"] - value) > self.settings.min_delta
        if improved:
            self.best.update(epoch=record["epoch"], value=value, monitor=monitor)
            self.bad_evaluations = 0
        else:
            self.bad_evaluations += 1
        return improved

    def _checkpoint(self, trainer: Any) -> dict[str, Any]:
        """defectlab's checkpoint: the EMA weights (what ultralytics validates and saves, here in float32) in the
        wrapper's names, with what rebuilds the model and resumes defectlab's bookkeeping."""
        own = self.detector.state_dict()  # the EMA's tensors are saved at once, so they need no copy
        weights = {f"model.{name}": tensor.detach().float().cpu() if tensor.is_floating_point() else tensor.detach().cpu()
                   for name, tensor in trainer.ema.ema.state_dict().items()}
        model = {name: weights.get(name, tensor) for name, tensor in own.items()}
        return {"model": model, "epoch": self.epochs_done, "best": dict(self.best),
                "bad_evaluations": self.bad_evaluations, "transfer_report": self.transfer_report,
                "settings": self.settings.to_dict(), "engine": "ultralytics", **self.describe}

    # --- the end -----------------------------------------------------------------------------------------

    def _finish(self) -> None:
        """The best weights into the model, the test (else val) split evaluated with the run's evaluators."""
        from defectlab import evaluate_run

        best = self.folder / "best.pt"
        if best.is_file():
            self.detector.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
        split = next((s for s in ("test", "val") if s in self.data.splits), None)
        results: dict[str, Any] = {}
        if split is not None:
            results = evaluate_run(self.folder, split=split, out=self.folder / "eval" / split, overwrite=True)
            say(f"{split}: " + ", ".join(f"{k} {v:.4g}" for k, v in results["scores"].items()
                                         if "/" not in k and isinstance(v, float)))
        self._status("finished", evaluation={"split": split, "scores": results.get("scores", {})})

    def _train_images(self) -> int:
        return len(self.data.splits["train"])

    def _status(self, status: str, message: str = "", quiet: bool = False, **extra: Any) -> None:
        """run.json, as defectlab's engine writes it; ``quiet`` (while another error is on its way out) logs a
        failed write instead of raising."""
        frozen = len(list(self.detector.backbone().parameters())) if self.frozen else 0
        try:
            write_json(self.folder / "run.json", {
                "status": status, "message": message, "epochs_done": self.epochs_done, "epochs": self.settings.epochs,
                "best": self.best, "skipped_images": self.skipped, "transfer": self.transfer_report, "frozen_parameters": frozen,
                "data": self.data.describe(), "warnings": [], "engine": f"ultralytics {ultralytics_version()}",
                **extra})
        except Exception as exc:  # noqa: BLE001  (a failed status write must not hide the error on its way out)
            if not quiet:
                raise
            log.warning("could not record the run's status '%s': %s", status, exc)


def say(text: str) -> None:
    """A line for the user on stderr, beside ultralytics' own output (as defectlab's engine tells its news)."""
    print(text, file=sys.stderr, flush=True)


def ultralytics_version() -> str:
    return str(ultralytics_module("ultralytics").__version__)


def results_records(path: Path, train_images: int) -> list[dict[str, Any]]:
    """ultralytics' results.csv as defectlab's metric records, one per line (a resumed epoch may appear twice).

    train/* and val/* losses keep their names, with their sums as train/loss and val/loss; the
    box scores become val/precision, val/recall, val/map_50 and val/map; lr/pg0 becomes lr;
    ``seconds`` is the epoch's wall time (training and validation) from the cumulative ``time``.
    """
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [{key.strip(): value.strip() for key, value in row.items() if key} for row in csv.DictReader(handle)]
    records, previous = [], 0.0
    for row in rows:
        values = {key: float(value) for key, value in row.items() if value not in ("", None)}
        elapsed = values.get("time", 0.0)
        seconds = elapsed - previous if elapsed >= previous else elapsed  # the clock starts again on resume
        previous = elapsed
        record: dict[str, Any] = {"epoch": int(values["epoch"])}
        for split in ("train", "val"):
            losses = {key: value for key, value in values.items() if key.startswith(f"{split}/")}
            if losses:
                record[f"{split}/loss"] = sum(losses.values())
                record.update(losses)
        record.update({name: values[column] for column, name in SCORES.items() if column in values})
        record["lr"] = values.get("lr/pg0")
        record["seconds"] = round(seconds, 3)
        record["images_per_s"] = round(train_images / seconds, 2) if seconds > 0 else None
        records.append(record)
    return records


def unreadable_images(folder: Path) -> list[str]:
    """The keys of the images that the YOLO layout in ``folder`` left out as unreadable (its convert.json)."""
    record = folder / "convert.json"
    unreadable = json.loads(record.read_text()).get("unreadable", {}) if record.is_file() else {}
    return [key.split("/", 1)[-1] for key in unreadable]  # ModuleSplits' keys start with the split


def write_yolo_data(data: Any, out: Path) -> Path:
    """The data module's splits as a YOLO layout in ``out`` (through ``defectlab.convert_dataset``); its data.yaml.

    ultralytics needs a validation split: without one, it validates on the test split, else on
    the training split (the monitored val/ metrics then measure the training data).
    """
    import yaml
    from defectlab import convert_dataset

    convert_dataset(ModuleSplits(data), "yolo", out, overwrite=True)
    config = out / "data.yaml"
    values = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else {}
    splits = {name: f"images/{name}" for name in ("train", "val", "test") if (out / "images" / name).is_dir()}
    values.update(path=str(out.resolve()), names=dict(enumerate(data.classes)), nc=len(data.classes),
                  channels=data.transform.channels, **splits)
    if "val" not in splits:
        values["val"] = splits.get("test", splits["train"])
        log.warning("the data have no validation split; ultralytics validates on %s", values["val"])
    write_text(config, yaml.safe_dump(values, sort_keys=False))
    return config


def transfer_backbone(detector: YOLOv5, source: str | os.PathLike[str]) -> Any:
    """Load model.model[0:10] from another run (its best.pt), a defectlab checkpoint or an ultralytics .pt
    (yolov5nu.pt, a run's ultralytics/weights/best.pt); the rest of the network stays as it is."""
    from defectlab import load_matching

    from defectlab_plugins.yolov5.detector import is_ultralytics_file, read_weights

    path = Path(source).expanduser()
    if not (path.is_file() and is_ultralytics_file(path)):
        return init_backbone_from(detector, path)
    state = {f"model.{name}": tensor for name, tensor in read_weights(path).items()}
    backbone = {name: tensor for name, tensor in state.items() if name.startswith(detector.backbone_prefixes)}
    report = load_matching(detector, backbone, str(path))
    report.unused += [name for name in state if name not in backbone]
    return report

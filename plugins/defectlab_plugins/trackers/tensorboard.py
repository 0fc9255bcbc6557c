"""TensorBoard logs of a training: the epoch's numbers, the hyperparameters and pictures of predictions.

torch.utils.tensorboard needs the ``tensorboard`` package, an optional extra: without it the
callback is refused when it is built, before the training starts, with the line to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from defectlab import Callback, DefectlabError, Range, UnreadableImageError

from defectlab_plugins.trackers.values import final_scores, flattened, numbers

INSTALL = "pip install 'defectlab[tensorboard]'"
#: Width in pixels of one image in the pictures of predictions, and the height of its caption.
PANEL, CAPTION = 96, 26


def summary_writer() -> Any:
    """torch's SummaryWriter class, or a DefectlabError saying how to install tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise DefectlabError(f"the tensorboard callback needs the tensorboard package ({exc}): {INSTALL}") from None
    return SummaryWriter


class TensorBoard(Callback):
    """TensorBoard logs: per-epoch losses, scores and learning rate, hyperparameters, predicted images.

    Args:
        log_dir: folder for the event files; default: tensorboard/ in the run folder.
        images: validation images drawn with their predicted and true class after each
            evaluation (classification only; 0: none).
    """

    name = "tensorboard"
    main_process_only = True  # one writer, on rank 0, under torchrun

    def __init__(self, log_dir: str | None = None, images: Annotated[int, Range(0)] = 4):
        self.writer_class = summary_writer()
        self.log_dir, self.images = log_dir, images
        self.writer: Any = None
        self.epoch = 0  # the epoch being trained; 0 once it has ended
        self.examples: dict[str, tuple[Any, list[int]]] = {}  # split -> (images, labels), read once

    def on_fit_start(self, trainer: Any) -> None:
        folder = Path(self.log_dir).expanduser() if self.log_dir else trainer.folder / "tensorboard"
        # a resumed run rewrites the epochs after last.pt: TensorBoard drops what a killed run logged from there
        self.writer = self.writer_class(str(folder), purge_step=trainer.epoch + 1 if trainer.restored else None)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        for key, value in numbers(record).items():
            if key != "epoch":
                self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()  # what is logged survives a run that fails later
        self.epoch = 0

    def on_evaluation_end(self, trainer: Any, split: str, scores: dict[str, float]) -> None:
        if not self.images or trainer.data.task != "classify":
            return
        tag = f"{split}/predictions" if self.epoch else f"{split}/predictions_best"  # the final one scores best.pt
        picture = self.predictions(trainer, split)
        if picture is not None:
            self.writer.add_image(tag, picture, self.epoch or trainer.epoch, dataformats="HWC")

    def on_fit_end(self, trainer: Any, run: Any) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = final_scores(run)
        for summary in hparams(flattened(run.config), final):
            self.writer.file_writer.add_summary(summary)
        for key, value in final.items():
            self.writer.add_scalar(key, value, trainer.epoch)
        self.writer.close()

    def predictions(self, trainer: Any, split: str) -> Any:
        """A row of the split's first images, each above its predicted class (and confidence) and true class."""
        import numpy as np
        import torch
        from PIL import Image, ImageDraw

        if split not in self.examples:
            self.examples[split] = self.read(trainer.data, split)
        images, labels = self.examples[split]
        if not labels:
            return None
        model = trainer.evaluated or trainer.network
        was_training = model.training
        model.eval()
        with torch.no_grad():
            probabilities = model(images.to(trainer.device)).float().softmax(dim=1).cpu()
        model.train(was_training)
        confidence, predicted = probabilities.max(dim=1)
        classes = list(trainer.data.classes)
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        grey = (images - low) / (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
        height = round(PANEL * images.shape[2] / images.shape[3])
        sheet = Image.new("RGB", (PANEL * len(labels), height + CAPTION), "white")
        draw = ImageDraw.Draw(sheet)
        shown = zip(grey, labels, predicted.tolist(), confidence.tolist())
        for column, (image, label, guess, sure) in enumerate(shown):
            pixels = (image.mean(dim=0) * 255).round().to(torch.uint8).numpy()
            panel = Image.fromarray(pixels).convert("RGB").resize((PANEL, height), Image.NEAREST)
            sheet.paste(panel, (column * PANEL, 0))
            colour = (0, 140, 0) if guess == label else (200, 0, 0)
            draw.text((column * PANEL + 2, height + 1), f"{classes[guess]} {sure:.2f}", fill=colour)
            draw.text((column * PANEL + 2, height + 13), f"true {classes[label]}", fill=(0, 0, 0))
        return np.asarray(sheet)

    def read(self, data: Any, split: str) -> tuple[Any, list[int]]:
        """The first ``images`` readable images of ``split`` (as the model sees them) and their classes."""
        import torch

        images, labels = [], []
        for index in data.splits[split]:
            if len(labels) == self.images:
                break
            try:
                image, target = data.sample(split, index)
            except UnreadableImageError:  # the loop skips it too
                continue
            images.append(image)
            labels.append(int(target))
        return (torch.stack(images) if images else torch.empty(0)), labels

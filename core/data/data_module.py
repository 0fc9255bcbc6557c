"""The data side of training: splits, label fractions, and DataLoaders of dict batches.

:class:`DataModule` opens the datasets, decides which sample serves which split (a saved CSV,
separate val/test datasets, the format's own split, or a stratified split by seed), and gives
each split a DataLoader whose batches are the dicts that docs/training.md describes. An image
that cannot be read is left out of its batch and named in ``skipped``, never a crash. The
training order is drawn from (seed, epoch) alone and sharded by rank, so a resumed or
distributed run sees the same samples in the same order.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from defectlab.data.datasets import Box, DefectDataset, UnreadableImageError, open_dataset
from defectlab.data.splits import (
    SPLIT_NAMES,
    SplitFractions,
    checked_fractions,
    label_fraction_subset,
    read_split_csv,
    stratified_split,
    write_split_csv,
)
from defectlab.data.transforms import ImageTransform
from defectlab.plugin_system.errors import DataError, ParameterError, did_you_mean
from defectlab.plugin_system.naming import first_few
from defectlab.plugin_system.parameters import Range, check_arguments
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger("defectlab.data")
SEED_STRIDE = 1000003  # epoch generators are seeded with seed * SEED_STRIDE + epoch
MEGABYTE = 2**20
ANOMALY_TARGET = ("anomaly",)  # collate's target_shape for anomaly's dict targets
GOOD_NAMES = ("good", "ok", "normal")  # an anomaly task's good class, when a class has one of these names


class EpochSampler(Sampler[int]):
    """Positions in a training split for one epoch, the same list on every rank, then this rank's share.

    The list is a permutation, or with ``weights`` a draw with replacement of the same length,
    from a generator seeded by (seed, epoch). With ``world_size`` > 1 it is padded to a
    multiple of the world size by repeating from its start, and rank r takes every
    ``world_size``-th position from r on (as DistributedSampler does).
    """

    def __init__(self, size: int, seed: int, weights: list[float] | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ParameterError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[int]:
        """Every rank's positions of this epoch, padded; rank r iterates over ``[r::world_size]``."""
        generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        total = len(self) * self.world_size
        return order.repeat(math.ceil(total / self.size))[:total].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.rank::self.world_size])

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)


class SplitImages(Dataset):
    """The samples of one split as (dataset index, image tensor, target); no image when it cannot be read.

    An unreadable image file is skipped (logged once, listed by the batch); a mask that does
    not fit its image, holds values outside the classes or is missing raises DataError, since
    training on it would silently teach the wrong thing.

    Decoded, resized uint8 images (and masks) are kept in ``cache`` when it is a dict. With
    DataLoader workers each worker fills its own copy.
    """

    def __init__(self, dataset: DefectDataset, indices: list[int], transform: ImageTransform, task: str,
                 train: bool, cache: dict[int, Any] | None, good: int | None = None,
                 labels: list[int | None] | None = None) -> None:
        self.dataset, self.indices, self.transform, self.task = dataset, indices, transform, task
        self.train, self.cache, self.good, self.labels = train, cache, good, labels
        self.masks = task == "segment" or (task == "anomaly" and has_masks(dataset))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        index = self.indices[position]
        try:
            image, target = self.item(index)
        except UnreadableImageError as exc:  # a broken file is skipped; a wrong mask is the data's error
            self.dataset.note_unreadable(index, exc)
            return index, None, None
        return index, image, target

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tensor and target of dataset sample ``index``; DataError when it cannot be used."""
        image, mask = self.resized(index)
        if self.task == "anomaly":
            label = self.labels[index] if self.labels is not None else self.dataset.samples[index].label
            target = {"labels": torch.tensor(int(label != self.good)), "classes": torch.tensor(label)}
            if mask is not None:
                image, mask = self.transform(image, mask, train=self.train)
                return image, {**target, "masks": (mask > 0).to(torch.uint8)}
            return self.transform(image, train=self.train), target
        if mask is not None:
            return self.transform(image, mask, train=self.train)
        if self.task == "detect":
            return self.detection_item(index, image)
        label = self.dataset.samples[index].label if self.task == "classify" else 0  # pretraining ignores labels
        return self.transform(image, train=self.train), torch.tensor(label)

    def resized(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The sample's image (and mask) decoded, checked and resized, from the cache when it is there."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        image = self.dataset.load_image(index)
        if self.masks:
            image, mask = self.transform.resize(image, self.checked_mask(index, image))
        else:
            image, mask = self.transform.resize(image), None
        if self.cache is not None:
            self.cache[index] = (image, mask)
        return image, mask

    def detection_item(self, index: int, image: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Image tensor and target of a detection sample. Training targets hold the objects alone (crowd
        regions are no objects to learn); evaluation targets add the crowd regions after them, marked in
        ``iscrowd``, for the evaluator to ignore as COCOeval does."""
        sample = self.dataset.samples[index]
        found = (sample.boxes or ()) + (() if self.train else sample.crowd)
        labels = torch.tensor([box.label for box in found], dtype=torch.long)
        image, boxes, labels = self.transform(image, train=self.train, boxes=self.pixel_boxes(found), labels=labels)
        target = {"boxes": boxes, "labels": labels}
        if not self.train:
            target["iscrowd"] = torch.arange(len(found)) >= len(found) - len(sample.crowd)
        return image, target

    def pixel_boxes(self, boxes: tuple[Box, ...]) -> torch.Tensor:
        """``boxes`` as (N, 4) x1, y1, x2, y2 in pixels of the resized image."""
        height, width = self.transform.size
        centres = torch.tensor([[b.x_center, b.y_center, b.width, b.height] for b in boxes],
                               dtype=torch.float32).reshape(-1, 4)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        corners = torch.cat([centres[:, :2] - centres[:, 2:] / 2, centres[:, :2] + centres[:, 2:] / 2], dim=1)
        return (corners * scale).clamp_(min=0).minimum(scale)

    def checked_mask(self, index: int, image: np.ndarray) -> np.ndarray:
        """The sample's mask; DataError unless it has the image's size and only class indices."""
        sample, classes = self.dataset.samples[index], self.dataset.classes
        mask = np.asarray(self.dataset.load_mask(index))
        if mask.shape[:2] != image.shape[:2]:
            raise DataError(f"sample '{sample.key}': the image is {image.shape[1]}x{image.shape[0]} but its mask "
                            f"is {mask.shape[1]}x{mask.shape[0]}; a mask must match its image pixel for pixel")
        values = np.unique(mask)
        bad = values[(values < 0) | (values >= len(classes))].tolist()
        if bad:
            raise DataError(f"mask '{sample.mask_path or sample.key}' has values [{first_few(bad)}] outside the "
                            f"{len(classes)} classes ({', '.join(classes)} = 0..{len(classes) - 1})")
        return mask


def collate(items: list[tuple[int, torch.Tensor | None, Any]], image_shape: tuple[int, ...],
            target_shape: tuple[int, ...] | None) -> dict[str, Any]:
    """A dict batch of the usable items; the dataset indices of the others go to ``skipped``.

    Targets are stacked, except detection's (``target_shape`` None): a list of per-image dicts;
    anomaly's per-image dicts are stacked key by key into one dict.

    A batch whose every item was skipped still has tensors of the right shape, with N = 0.
    """
    kept = [item for item in items if item[1] is not None]
    image = torch.stack([item[1] for item in kept]) if kept else torch.empty((0, *image_shape))
    if target_shape is None:  # detection: a dict of boxes and labels per image
        target: Any = [item[2] for item in kept]
    elif kept and isinstance(kept[0][2], dict):  # anomaly: labels, classes (and masks), each stacked
        target = {key: torch.stack([item[2][key] for item in kept]) for key in kept[0][2]}
    elif kept:
        target = torch.stack([item[2] for item in kept])
    elif target_shape == ANOMALY_TARGET:
        target = {"labels": torch.empty(0, dtype=torch.long), "classes": torch.empty(0, dtype=torch.long)}
    else:
        target = torch.empty((0, *target_shape), dtype=torch.long)
    return {"image": image, "target": target, "index": torch.tensor([item[0] for item in kept], dtype=torch.long),
            "skipped": [item[0] for item in items if item[1] is None]}


class DataModule:
    """Datasets, splits and DataLoaders for classifiers, segmentation models, detectors and anomaly models.

    Splits come from, first to last: ``splits_csv`` when that file exists; separate ``val`` /
    ``test`` datasets (the main dataset gives the remaining splits, by ``split`` renormalised);
    the format's own train/val/test when every sample has one (MVTec, synthetic_cracks); else a
    stratified split of the main dataset by ``split`` and ``seed``. The main dataset's split is
    saved to ``splits_csv`` when that file does not exist yet. ``label_fraction`` then keeps a
    stratified share of train (val and test unchanged). ``splits`` maps a split name to indices
    into ``datasets[name]`` and holds only the splits with samples (no 'val' for a train/test
    protocol). Predicting on files needs no data module: ``ImageTransform(image_size, channels,
    normalize, task=...)`` (the one in ``self.transform``) prepares an image.

    Args:
        dataset: The data: a path, NAME or NAME:VALUE, a dataset spec table, or a DefectDataset.
        val: A separate validation dataset (same classes), instead of a share of ``dataset``.
        test: A separate test dataset (same classes), instead of a share of ``dataset``.
        task: 'classify' (a label per image), 'segment' (a mask per image), 'detect' (boxes per image;
            a batch's target is a list of {"boxes": (N, 4) x1 y1 x2 y2 pixels, "labels": (N,)}, in val
            and test with the crowd regions after the boxes and "iscrowd": (N,) bool) or
            'pretrain' (images only, labels ignored: self-supervised pretraining) or 'anomaly' (a
            model fitted on good images: the training split keeps the good images, the defective
            ones that the split put there join test; a batch's target is {"labels": 1 = defect,
            "classes": class index, "masks": 0/1 (N, H, W) when the data have masks}); default:
            the dataset's task.
        good_class: Anomaly task: the class of the good images (default: the class named good, ok
            or normal, else the first class: '0' for elpv, 'background' for synthetic_cracks).
        split: Train/val/test fractions (or train/test: no val) for a stratified split.
        format_splits: Use the format's own train/val/test folders when it has them; False
            splits the data by ``split`` instead (MVTec AD's train folder has good images only).
        seed: Seed of the split, the label-fraction subset and the training order (>= 0).
        splits_csv: CSV of each sample's split (key,split,label): used if it exists, else written.
        label_fraction: Share of the training labels to train on, per class (Hemmingsson and Olsson 2026: 0.01 to 0.2).
        image_size: Side of the square images the model gets.
        channels: Image channels the model gets: 3 (grey repeated) or 1 (colour to luminance).
        normalize: 'imagenet' mean/std (one channel: 0.449/0.226), 'image' (each image to mean 0, standard
            deviation 1) or 'none' (values in [0, 1]).
        augment: Training augmentations, from flip, rotate, contrast, brightness, noise, resized_crop,
            randaugment, trivialaugment (docs/data.md).
        batch_size: Training batch size (per process under torchrun).
        eval_batch_size: Batch size for val and test (default: batch_size).
        workers: DataLoader worker processes (0: load in the training process).
        balance: 'oversample': draw training samples with probability 1/(size of their class),
            so every class is seen about equally often; 'sqrt': with probability 1/√(size of their
            class), a milder re-balancing; 'none': each sample once per epoch.
        cache: Keep decoded, resized images in memory when they fit in ``cache_mb``.
        cache_mb: Memory for cached images, all splits together (split by split while they fit).
        drop_last: Leave out the last training batch when it is smaller than batch_size (a last batch of
            one image is always left out: batch normalisation cannot train on one image).
    """

    def __init__(self, dataset: str | dict[str, Any] | DefectDataset, *,
                 val: str | dict[str, Any] | DefectDataset | None = None,
                 test: str | dict[str, Any] | DefectDataset | None = None,
                 task: Literal["classify", "segment", "detect", "pretrain", "anomaly"] | None = None,
                 good_class: str | None = None,
                 split: Annotated[tuple[float, ...], SplitFractions()] = (0.7, 0.15, 0.15),
                 format_splits: bool = True, seed: Annotated[int, Range(0)] = 0,
                 splits_csv: str | None = None,
                 label_fraction: Annotated[float, Range(0, 1, low_open=True)] = 1.0,
                 image_size: Annotated[int, Range(1)] = 224, channels: Literal[1, 3] = 3,
                 normalize: Literal["imagenet", "image", "none"] = "imagenet",
                 augment: tuple[str, ...] = ("flip", "rotate", "contrast", "noise"),
                 batch_size: Annotated[int, Range(1)] = 32,
                 eval_batch_size: Annotated[int | None, Range(1)] = None, workers: Annotated[int, Range(0)] = 0,
                 balance: Literal["none", "oversample", "sqrt"] = "none", cache: bool = True,
                 cache_mb: Annotated[int, Range(0)] = 1024, drop_last: bool = False) -> None:
        check_arguments(DataModule, {k: v for k, v in locals().items() if k != "dataset"}, "data")
        fractions = checked_fractions(split)
        main = open_dataset(dataset)
        self.task = task or main.task
        if self.task not in ("classify", "segment", "detect", "pretrain", "anomaly"):
            raise DataError(f"the data module does not support the task '{self.task}' of {main!r}; it handles "
                            f"classify, segment, detect, anomaly and pretrain (images only, labels ignored)")
        self.good = good_index(main, good_class) if self.task == "anomaly" else None
        geometry = "segment" if self.task == "anomaly" and has_masks(main) else self.task
        self.transform = ImageTransform(image_size, channels, normalize, augment,
                                        geometry if geometry in ("segment", "detect") else "classify")
        explicit = {name: open_dataset(spec) for name, spec in (("val", val), ("test", test)) if spec is not None}
        self.image_labels = {id(data): image_labels(data) for data in (main, *explicit.values())} \
            if self.task == "anomaly" else {}
        self.classes = list(main.classes)
        for name, data in explicit.items():
            if list(data.classes) != self.classes:
                raise DataError(f"the {name} dataset {data!r} has classes {data.classes}, but the training data "
                                f"has {self.classes}; give both the same classes in the same order")
        self.seed, self.drop_last, self.workers, self.format_splits = seed, drop_last, workers, format_splits
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.assignment = self._assignment(main, explicit, fractions, splits_csv)
        if self.task == "anomaly":
            self._move_defects_out_of_train(self.image_labels[id(main)], explicit)
        indices = {name: list(range(len(explicit[name]))) if name in explicit
                   else [i for i, part in enumerate(self.assignment) if part == name] for name in SPLIT_NAMES}
        if label_fraction != 1.0:
            indices["train"] = label_fraction_subset(indices["train"], strata_labels(main), label_fraction, seed)
        if not indices["train"]:
            raise DataError(f"the training split of {main!r} is empty; check split={list(split)} or the "
                            f"splits file" + (f" (an anomaly model is fitted on the good images, class "
                                              f"'{self.classes[self.good]}'; data.good_class names another)"
                                              if self.task == "anomaly" else ""))
        self.splits = {name: part for name, part in indices.items() if part}
        self.datasets = {name: explicit.get(name, main) for name in self.splits}
        for data in {id(d): d for d in self.datasets.values()}.values():
            self._check_targets(data)
        if self.task == "anomaly":
            self._check_anomaly_splits()
        if self.task == "classify":
            present = [c for c, n in zip(self.classes, main.class_counts()) if n]
            if len(present) < 2:
                raise DataError(f"{main!r} has images of {len(present)} class(es) ({', '.join(present) or 'none'}); a "
                                f"classifier needs at least two: add a folder of each class (e.g. good/ and "
                                f"defect/), or check the dataset's path and format")
        if splits_csv is not None and not Path(splits_csv).exists():
            self.save_splits(splits_csv)
        self._weights = None if balance == "none" else self._oversampling_weights(balance)
        self._cached = self._cache_plan(cache, cache_mb)
        self._images: dict[str, SplitImages] = {}
        self._loaders: dict[tuple[str, int, int], DataLoader] = {}

    # --- splits ----------------------------------------------------------------------------------

    def _assignment(self, main: DefectDataset, explicit: dict[str, DefectDataset], fractions: dict[str, float],
                    splits_csv: str | None) -> list[str]:
        """The split of each sample of the main dataset, by the precedence the class docstring gives."""
        if splits_csv is not None and Path(splits_csv).exists():
            return _stored_assignment(main, splits_csv, explicit)
        labels = self.image_labels.get(id(main)) or strata_labels(main)
        if explicit:
            remaining = {name: f for name, f in fractions.items() if name not in explicit}
            total = sum(remaining.values())
            if len(remaining) == 1 or total == 0:
                return ["train"] * len(main)
            return stratified_split(labels, [f / total for f in remaining.values()], self.seed, names=list(remaining))
        predefined = [sample.split for sample in main.samples]
        if self.format_splits and set(predefined) <= set(SPLIT_NAMES) and "train" in predefined:
            return predefined  # type: ignore[return-value]
        return stratified_split(labels, list(fractions.values()), self.seed)

    def _move_defects_out_of_train(self, labels: list[int | None], explicit: dict[str, DefectDataset]) -> None:
        """Anomaly task: defective images the split put in train join test (val when test is its own dataset)."""
        target = next((name for name in ("test", "val") if name not in explicit), None)
        if target is None:  # val and test are data sets of their own: _check_anomaly_splits refuses the defects
            return
        moved = 0
        for index, (label, part) in enumerate(zip(labels, self.assignment)):
            if part == "train" and label != self.good:
                self.assignment[index] = target
                moved += 1
        if moved:
            log.info("anomaly task: %d defective training image(s) moved to the %s split", moved, target)

    def _check_anomaly_splits(self) -> None:
        """DataError when the fit has no good image or an evaluated split lacks good or defective images."""
        good_name = self.classes[self.good]
        for name, indices in self.splits.items():
            labels = self.image_labels[id(self.datasets[name])]
            good = sum(labels[i] == self.good for i in indices)
            if name == "train" and len(indices) != good:
                raise DataError(f"the training data of an anomaly model must be good images only, but "
                                f"{len(indices) - good} of {len(indices)} are not of class '{good_name}'")
            if name != "train" and good in (0, len(indices)):
                kind = "good" if good else "defective"
                raise DataError(f"the {name} split holds only {kind} images ({len(indices)}); image AUROC needs good "
                                f"(class '{good_name}') and defective images. Give the {name} split both kinds "
                                f"(data.split, or a {name} dataset), or check data.good_class")

    def save_splits(self, path: str | Path) -> Path:
        """Write the main dataset's split (before ``label_fraction``) as a CSV that ``splits_csv`` reads back."""
        main = self.datasets["train"]
        return write_split_csv(path, ((sample.key, part, None if sample.label is None else self.classes[sample.label])
                                      for sample, part in zip(main.samples, self.assignment)))

    def _check_targets(self, data: DefectDataset) -> None:
        """DataError when ``data`` cannot give the task's targets (an image without a label, no masks at all)."""
        if self.task in ("classify", "anomaly"):
            labels = self.image_labels.get(id(data)) or [sample.label for sample in data.samples]
            missing = [sample.key for sample, label in zip(data.samples, labels) if label is None]
            if missing:
                what = "classification" if self.task == "classify" else "an anomaly model"
                raise DataError(f"{what} needs a class label per image, but {len(missing)} image(s) of {data!r} have "
                                f"none (e.g. {first_few(missing)})")
        elif self.task == "detect":
            missing = [sample.key for sample in data.samples if sample.boxes is None]
            if missing:
                raise DataError(f"detection needs the boxes of every image (none: an empty list), but {len(missing)} "
                                f"image(s) of {data!r} have no annotation (e.g. {first_few(missing)})")
        elif self.task == "segment" and not has_masks(data):
            raise DataError(f"segmentation needs a mask per image, but {data!r} has no masks")

    # --- what the data are ---------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, split: str = "train") -> list[int]:
        """Images per class in ``split`` (an image counts for each class it is labelled with)."""
        counts = [0] * self.num_classes
        data = self.datasets[self._known(split)]
        labels = self.image_labels.get(id(data))
        for index in self.splits[split]:
            for label in data.samples[index].labels if labels is None else [labels[index]]:
                counts[label] += 1
        return counts

    def describe(self) -> dict[str, Any]:
        """Task, classes, and each split's dataset, size and class counts, for reports."""
        return {"task": self.task, "classes": list(self.classes),
                "splits": {name: {"dataset": repr(self.datasets[name]), "size": len(indices),
                                  "class_counts": self.class_counts(name)} for name, indices in self.splits.items()}}

    def sample_key(self, split: str, index: int) -> str:
        """The key (e.g. file name) of a batch's ``index`` or ``skipped`` entry of ``split``."""
        return self.datasets[self._known(split)].samples[index].key

    def sample(self, split: str, index: int, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tensor and target of dataset sample ``index`` of ``split``; raises what a loader would skip."""
        data = self.datasets[self._known(split)]
        return SplitImages(data, [], self.transform, self.task, train, None, self.good,
                           self.image_labels.get(id(data))).item(index)

    def _known(self, split: str) -> str:
        if split not in self.splits:
            raise ParameterError(f"no split {split!r}{did_you_mean(split, self.splits)} (splits: {', '.join(self.splits)})")
        return split

    # --- loading -------------------------------------------------------------------------------

    def _cache_plan(self, cache: bool, cache_mb: int) -> set[str]:
        """The splits whose images are cached: train, val, test in turn, while their estimate fits in cache_mb."""
        budget, cached = cache_mb * MEGABYTE if cache else 0, set()
        height, width = self.transform.size
        per_image = height * width * (self.transform.channels + (self.transform.task == "segment"))
        for name, indices in self.splits.items():
            need = len(indices) * per_image
            if need <= budget:
                cached.add(name)
                budget -= need
        return cached

    def _split_images(self, split: str) -> SplitImages:
        if self._known(split) not in self._images:
            data = self.datasets[split]
            self._images[split] = SplitImages(data, self.splits[split], self.transform, self.task, split == "train",
                                              {} if split in self._cached else None, self.good,
                                              self.image_labels.get(id(data)))
        return self._images[split]

    def loader(self, split: str, epoch: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
        """The DataLoader of ``split``, set to ``epoch``; batches are dicts image/target/index/skipped.

        Train: augmented, in the (seed, epoch) order (oversampled with balance='oversample') and
        sharded by ``rank`` of ``world_size``. Val and test: not augmented, in order, whole on
        every rank. A split's loader is made once and returned again with its epoch set, so its
        workers and their cache live across epochs.
        """
        train = self._known(split) == "train"
        key = (split, rank, world_size) if train else (split, 0, 1)
        if key not in self._loaders:
            images = self._split_images(split)
            sampler = EpochSampler(len(images), self.seed, self._weights, rank, world_size) if train else None
            height, width = self.transform.size
            target_shape = {"segment": (height, width), "detect": None, "anomaly": ANOMALY_TARGET}.get(self.task, ())
            lone = train and len(sampler) > 1 and len(sampler) % self.batch_size == 1  # batch norm cannot train on it
            self._loaders[key] = DataLoader(
                images, batch_size=self.batch_size if train else self.eval_batch_size, sampler=sampler,
                num_workers=self.workers, persistent_workers=self.workers > 0,
                drop_last=train and (self.drop_last or lone),
                collate_fn=functools.partial(collate, image_shape=(self.transform.channels, height, width),
                                             target_shape=target_shape))
        loader = self._loaders[key]
        if train:
            loader.sampler.set_epoch(epoch)
        return loader

    def _oversampling_weights(self, balance: str) -> list[float]:
        """Training sampling weights 1 / n ('oversample') or 1 / √n ('sqrt'), n the images of the sample's class."""
        samples = self.datasets["train"].samples
        labels = [samples[i].label for i in self.splits["train"]]
        if None in labels:
            raise DataError(f"balance={balance!r} needs a class label per training image; this data has images "
                            "without one (use balance='none')")
        counts = self.class_counts("train")
        return [1.0 / (math.sqrt(counts[label]) if balance == "sqrt" else counts[label]) for label in labels]


def has_masks(data: DefectDataset) -> bool:
    """Whether ``data`` gives masks: its format loads them, or its samples name mask files."""
    return type(data).load_mask is not DefectDataset.load_mask or any(s.mask_path for s in data.samples)


def image_labels(data: DefectDataset) -> list[int | None]:
    """Each sample's class for the anomaly task: its label, else (masks without labels) the most common
    class in its mask, 0 when the mask is empty; None when neither is known."""
    if not has_masks(data) or all(sample.label is not None for sample in data.samples):
        return [sample.label for sample in data.samples]
    labels: list[int | None] = []
    for index, sample in enumerate(data.samples):
        if sample.label is not None:
            labels.append(sample.label)
            continue
        values, counts = np.unique(np.asarray(data.load_mask(index)), return_counts=True)
        defect = counts[values > 0]
        labels.append(int(values[values > 0][defect.argmax()]) if len(defect) else 0)
    return labels


def good_index(data: DefectDataset, name: str | None) -> int:
    """The class index of an anomaly task's good images: ``name``, else a class named good/ok/normal, else 0."""
    classes = list(data.classes)
    if name is not None:
        if name not in classes:
            raise DataError(f"data.good_class '{name}' is not a class of {data!r}{did_you_mean(name, classes)} "
                            f"(classes: {', '.join(classes)})")
        return classes.index(name)
    return next((classes.index(c) for c in classes if c.lower() in GOOD_NAMES), 0)


def strata_labels(data: DefectDataset) -> list[int | None]:
    """The class each sample is stratified by: its label, or a detection image's rarest class (None: no box)."""
    counts = data.class_counts()
    return [sample.label if sample.boxes is None else
            min(sample.labels, key=lambda c: (counts[c], c), default=None) for sample in data.samples]


def _stored_assignment(main: DefectDataset, path: str, explicit: dict[str, DefectDataset]) -> list[str]:
    """The split of each sample of ``main`` from a splits CSV; DataError unless the keys match exactly."""
    stored = read_split_csv(path)
    keys = [sample.key for sample in main.samples]
    missing, extra = [k for k in keys if k not in stored], sorted(set(stored) - set(keys))
    if missing or extra:
        raise DataError(f"splits file '{path}' does not match {main!r}: {len(missing)} sample(s) are not in it"
                        f"{f' (e.g. {first_few(missing)})' if missing else ''} and {len(extra)} key(s) are not in "
                        f"the data{f' (e.g. {first_few(extra)})' if extra else ''}; delete the file to split "
                        f"again, or fix the data")
    clash = sorted({stored[k] for k in keys} & set(explicit))
    if clash:
        raise DataError(f"splits file '{path}' puts samples in {', '.join(clash)}, which here come from their "
                        f"own dataset; delete the file to split again")
    return [stored[k] for k in keys]

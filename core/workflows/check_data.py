"""Checking a dataset file by file: ``defectlab check-data`` lists every image, mask or label it cannot use."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from defectlab.plugin_system.errors import DefectlabError

PROBLEM_COLUMNS = ("key", "path", "problem")
Problem = tuple[str, str, str]


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, DefectlabError) else f"{type(exc).__name__}: {exc}"


def check_sample(dataset: Any, index: int) -> list[Problem]:
    """What is wrong with one sample: a label outside the classes, an image or mask that cannot be used."""
    sample = dataset.samples[index]
    path = sample.path or ""
    problems = []
    outside = sorted(label for label in sample.labels if not 0 <= label < len(dataset.classes))
    if outside:
        problems.append((sample.key, path, f"label {outside} is not a class index 0..{len(dataset.classes) - 1}"))
    image = None
    try:
        image = dataset.load_image(index)
    except Exception as exc:  # a report lists every failure and goes on
        problems.append((sample.key, path, _reason(exc)))
    if sample.mask_path is not None or dataset.task == "segment":
        mask_path = sample.mask_path or path
        try:
            mask = dataset.load_mask(index)
        except Exception as exc:
            problems.append((sample.key, mask_path, _reason(exc)))
        else:
            if image is not None and tuple(mask.shape[:2]) != tuple(image.shape[:2]):
                problems.append((sample.key, mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image "
                                                        f"is {image.shape[1]}x{image.shape[0]}"))
    return problems


def conflicting_labels(dataset: Any) -> list[Problem]:
    """Samples whose file is listed more than once with different labels."""
    listed: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for sample in dataset.samples:
        if sample.path and sample.label is not None:
            listed[sample.path].append((sample.key, sample.label))
    problems = []
    for path, entries in listed.items():
        labels = sorted({label for _, label in entries})
        if len(labels) > 1:
            names = ", ".join(dataset.classes[i] if 0 <= i < len(dataset.classes) else str(i) for i in labels)
            problems.extend((key, path, f"listed {len(entries)} times with different labels: {names}")
                            for key, _ in entries)
    return problems


def find_problems(dataset: Any, workers: int = 1) -> Iterator[list[Problem]]:
    """The problems of each sample, in order, decoding in ``workers`` threads; then conflicting labels."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(lambda i: check_sample(dataset, i), range(len(dataset)))
    yield conflicting_labels(dataset)

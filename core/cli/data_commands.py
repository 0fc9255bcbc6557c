"""``defectlab check-data``: decode every image and mask of a dataset and list the files it cannot use."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

PROBLEM_COLUMNS = ("key", "path", "problem")
Problem = tuple[str, str, str]


def _reason(exc: Exception) -> str:
    from defectlab.plugin_system.errors import DefectlabError

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


@click.command("check-data")
@click.argument("dataset")
@click.option("--out", type=click.Path(dir_okay=False, writable=True),
              help="Write the CSV of problems to FILE instead of stdout.")
@click.option("--workers", type=click.IntRange(min=1), default=min(8, os.cpu_count() or 1), show_default=True,
              help="Threads decoding images.")
def check_data_command(dataset: str, out: str | None, workers: int) -> None:
    """Decode every image and mask of DATASET and list unreadable or mislabelled files as CSV.

    DATASET is a path (its format is detected) or NAME[:VALUE], e.g. `elpv:mono`. The CSV has
    the columns key,path,problem; a summary line goes to stderr. Problems do not make the
    command fail: it is a report.
    """
    from defectlab.data.datasets import open_dataset

    data = open_dataset(dataset)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PROBLEM_COLUMNS)
    count = 0
    results = find_problems(data, workers)
    progress = (click.progressbar(results, length=len(data) + 1, label="checking", file=sys.stderr)
                if sys.stderr.isatty() else nullcontext(results))
    with progress as rows:
        for problems in rows:
            writer.writerows(problems)
            count += len(problems)
    if out:
        Path(out).write_text(buffer.getvalue(), encoding="utf-8")
    else:
        click.echo(buffer.getvalue(), nl=False)
    click.echo(f"checked {len(data)} images: {count} problems", err=True)


COMMANDS = [check_data_command]

"""Converting a detection dataset to another on-disk format (``defectlab convert``).

Any dataset component can be read; the target format is a dataset component with a ``write``
class method (the core never imports plugins, so each format's writer lives with its reader).
The output folder is claimed like a run directory: a non-empty folder is refused unless it
holds an earlier conversion and ``overwrite`` is set. ``convert.json`` in it records what was
converted, the counts per split and any image that could not be read.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from defectlab.data.datasets import DefectDataset, open_dataset
from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import write_json

RECORD = "convert.json"


def writers() -> list[str]:
    """Names of the dataset formats that can write a dataset."""
    from defectlab.plugin_system.components import list_components

    return [c.name for c in list_components("dataset") if callable(getattr(c.obj, "write", None))]


def convert_dataset(dataset: Any, to: str, out: str | Path, *, overwrite: bool = False,
                    splits: Mapping[str, Sequence[int]] | None = None) -> Path:
    """Write detection ``dataset`` (a dataset, path, ``NAME[:VALUE]`` or spec) in format ``to`` into ``out``.

    Images are hard-linked where the file system allows it, else copied; generated images are
    saved as PNG. Each sample keeps its split, unless ``splits`` maps split names to sample
    indices (samples in none are left out). Returns the output folder, which the format's
    reader opens; for ``yolo`` it holds the data.yaml that ultralytics reads when every image
    has a split.
    """
    from defectlab.plugin_system.components import get_component
    from defectlab.runs.run import environment_versions, new_run_dir

    data = open_dataset(dataset)
    if data.task != "detect":
        raise DataError(f"{data!r} is a '{data.task}' dataset; convert writes detection formats, which need boxes")
    component = get_component("dataset", to)
    write = getattr(component.obj, "write", None)
    if not callable(write):
        raise DataError(f"the dataset format '{to}' cannot write a dataset; formats that can: {', '.join(writers())}")
    view, indices = _with_splits(data, splits)
    folder = new_run_dir("convert", out, overwrite=overwrite)
    record: dict[str, Any] = {"source": data.root or repr(data), "to": to, "status": "writing",
                              "versions": environment_versions()}
    write_json(folder / RECORD, record)
    write(view, folder, indices)
    written = [i for i in indices if view.samples[i].key not in view.unreadable]
    images = Counter(view.samples[i].split or "none" for i in written)
    boxes = Counter(view.samples[i].split or "none" for i in written for _ in view.samples[i].boxes or ())
    record.update(status="done", classes=list(view.classes), images=len(written),
                  boxes=sum(boxes.values()), splits={s: {"images": n, "boxes": boxes[s]} for s, n in images.items()},
                  unreadable=dict(view.unreadable))
    write_json(folder / RECORD, record)
    return folder


def _with_splits(data: DefectDataset, splits: Mapping[str, Sequence[int]] | None) -> tuple[DefectDataset, list[int]]:
    """The dataset with each sample's split set from ``splits`` (a copy), and the indices to write."""
    if splits is None:
        return data, list(range(len(data)))
    assigned: dict[int, str] = {}
    for name, members in splits.items():
        for index in members:
            if not 0 <= index < len(data):
                raise DataError(f"splits['{name}'] has index {index}, but {data!r} has {len(data)} samples")
            if index in assigned:
                raise DataError(f"sample {index} ('{data.samples[index].key}') is in both splits "
                                f"'{assigned[index]}' and '{name}'")
            assigned[index] = name
    view = copy.copy(data)
    view.samples = [dataclasses.replace(s, split=assigned.get(i, s.split)) for i, s in enumerate(data.samples)]
    return view, sorted(assigned)

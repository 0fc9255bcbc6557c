"""Source-dataset screening by domain similarity (Valle Salgado et al. 2023 §2.3-2.4).

disc(D_T, D_S) = distance(s_S, s_T) * imbalance_S / (|Y_T ∩ Y_S| + eps), lower is closer; the
chosen source is, among the ``top`` lowest scores, the one with the most samples. Every part of
the score is reported, and the cases where the score misleads are flagged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from defectlab.data.datasets import DefectDataset, open_dataset
from defectlab.data.subsets import (
    Balance,
    balancing_plan,
    source_subset,
    with_image_files,
    write_subset_csv,
)
from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import write_text
from defectlab.plugin_system.parameters import Range, default_of

FLAG_NO_SHARED = "no shared class: not selectable"
FLAG_ZERO_IMBALANCE = "imbalance is 0: the score is 0 whatever the distance"


def discrepancy_score(distance: float, imbalance: float, shared_classes: int, epsilon: float = 1e-6) -> float:
    """Eq. 21: distance * imbalance / (shared classes + epsilon)."""
    if epsilon <= 0:
        raise DataError("epsilon must be > 0, or a source with no shared class divides by zero")
    return distance * imbalance / (shared_classes + epsilon)


def counts_over(source: DefectDataset, classes: Sequence[str]) -> list[int]:
    """The source's sample counts for each class name in ``classes`` (0 where it has none)."""
    own = dict(zip(source.classes, source.class_counts()))
    return [own.get(name, 0) for name in classes]


@dataclass
class SourceScore:
    """One candidate source: the parts of its score, the score, and where it ranks."""

    source: str
    distance: float
    imbalance: float | None
    shared_classes: list[str]
    samples: int
    score: float | None
    flags: list[str] = field(default_factory=list)
    rank: int | None = None
    chosen: bool = False

    @property
    def selectable(self) -> bool:
        return self.score is not None


def select_source(scores: Sequence[SourceScore], top: int = 3) -> SourceScore | None:
    """Rank by score; among the ``top`` lowest, choose the most samples (ties: lower score, then name)."""
    ranked = sorted((s for s in scores if s.selectable), key=lambda s: (s.score, s.source))
    for rank, item in enumerate(ranked, start=1):
        item.rank = rank
    if not ranked:
        return None
    best = min(ranked[:top], key=lambda s: (-s.samples, s.score, s.source))
    best.chosen = True
    return best


@dataclass
class ScreeningResult:
    """Scores of every source against one target, with the chosen source."""

    target: str
    target_classes: list[str]
    distance: str
    imbalance: str
    epsilon: float
    scores: list[SourceScore]
    pairs: dict[str, dict[str, float | None]] | None = None
    datasets: dict[str, DefectDataset] = field(default_factory=dict, repr=False)

    @property
    def best(self) -> SourceScore | None:
        return next((s for s in self.scores if s.chosen), None)

    def table(self) -> str:
        """A text table, one row per source in rank order, the chosen one marked with '*'."""
        from defectlab.runs.tables import format_table

        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        order = sorted(self.scores, key=lambda s: (s.rank is None, s.rank or 0, s.source))
        rows = [("*" if s.chosen else "", s.source, number(s.distance), number(s.imbalance),
                 ",".join(s.shared_classes) or "-", s.samples, number(s.score), s.rank or "-", "; ".join(s.flags))
                for s in order]
        headers = ["", "source", self.distance, self.imbalance, "shared", "samples", "score", "rank", "flags"]
        return format_table(headers, rows)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "datasets"}
        data["scores"] = [asdict(score) for score in self.scores]
        data["best"] = self.best.source if self.best else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, folder: str | Path, *, balance: Balance = "none", seed: int = 0) -> dict[str, Path]:
        """Write screen.json, the chosen source's subset as a CSV index, and the all-pairs heatmap.

        Images of a generated source (no file) are saved in subset-images/ beside the CSV.

        Args:
            balance: re-balancing plan written into the subset CSV: none, uniform or target.
            seed: seed of the balancing plan.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = {"json": folder / "screen.json"}
        write_text(written["json"], self.to_json())
        if self.best is not None:
            target = self.datasets[self.target]
            source = self.datasets[self.best.source]
            rows = with_image_files(source_subset(source, target.classes), source, folder / "subset-images")
            rows = balancing_plan(rows, balance, dict(zip(target.classes, target.class_counts())), seed)
            written["subset"] = write_subset_csv(rows, folder / "subset.csv")
        if self.pairs:
            from defectlab.workflows.screen_plots import plot_pair_scores

            written["heatmap"] = plot_pair_scores(self.pairs, folder / "pairs.png",
                                                  title=f"discrepancy ({self.distance} x {self.imbalance})")
        return written


def _build(kind: str, spec: str | Mapping[str, Any]) -> tuple[str, Any]:
    from defectlab.plugin_system.components import create, split_spec

    name, _ = split_spec(spec, kind)
    return name, create(kind, spec)


def screen(target: Any, sources: Sequence[Any], distance: str | Mapping[str, Any] = "emd",
           imbalance: str | Mapping[str, Any] = "gini", *, epsilon: Annotated[float, Range(0)] = 1e-6,
           top: Annotated[int, Range(1)] = 3, all_pairs: bool = False) -> ScreeningResult:
    """Score every source against ``target`` and choose one by the paper's rule.

    ``target`` and ``sources`` are datasets or DATASET specs (paths, ``elpv:mono``, dicts);
    ``distance`` and ``imbalance`` are component names or specs of those kinds.

    Args:
        epsilon: added to the shared-class count in the score's denominator.
        top: the chosen source is the largest among this many lowest scores.
        all_pairs: also score every dataset against every other (heatmap).
    """
    if not sources:
        raise DataError("no source dataset given; pass at least one --source")
    distance_name, metric = _build("distance", distance)
    imbalance_name, imbalance_metric = _build("imbalance", imbalance)
    if getattr(imbalance_metric, "scope", "input") != "input":
        raise DataError(f"imbalance '{imbalance_name}' is output-scope; screening needs an input-scope metric")
    target_dataset = open_dataset(target)
    source_datasets = [open_dataset(s) for s in sources]
    names = [_label(target)] + [_label(s) for s in sources]
    if len(set(names)) != len(names):
        raise DataError(f"each dataset may appear once; got {names}")
    datasets = dict(zip(names, [target_dataset, *source_datasets]))
    summaries = {name: metric.represent(dataset) for name, dataset in datasets.items()}
    scores = [
        score_source(names[0], target_dataset, name, datasets[name], summaries, metric, imbalance_metric, epsilon)
        for name in names[1:]
    ]
    select_source(scores, top)
    pairs: dict[str, dict[str, float | None]] | None = None
    if all_pairs:
        pairs = {
            t: {s: (None if s == t else score_source(t, datasets[t], s, datasets[s], summaries, metric,
                                                       imbalance_metric, epsilon).score) for s in names}
            for t in names
        }
    return ScreeningResult(names[0], list(target_dataset.classes), distance_name, imbalance_name, epsilon,
                           scores, pairs, datasets)


def score_source(target_name: str, target: DefectDataset, source_name: str, source: DefectDataset,
                 summaries: Mapping[str, Any], metric: Any, imbalance_metric: Any, epsilon: float) -> SourceScore:
    """All parts of one source's score against one target."""
    shared = [c for c in target.classes if c in set(source.classes)]
    value = float(metric(summaries[source_name], summaries[target_name]))
    counts = counts_over(source, target.classes)
    imbalance_value = float(imbalance_metric(counts)) if sum(counts) else None
    flags = []
    score: float | None = None
    if not shared or imbalance_value is None:
        flags.append(FLAG_NO_SHARED)
    else:
        score = discrepancy_score(value, imbalance_value, len(shared), epsilon)
        if imbalance_value == 0:
            flags.append(FLAG_ZERO_IMBALANCE)
    samples = len(source_subset(source, target.classes))
    return SourceScore(source_name, value, imbalance_value, shared, samples, score, flags)


def _label(spec: Any) -> str:
    if isinstance(spec, DefectDataset):
        return spec.root or repr(spec)
    if isinstance(spec, Mapping):
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name')}({params})"
    return str(spec)


def screen_schema() -> dict[str, Any]:
    """What a screening config holds; ``[screen]`` takes the keyword settings of :func:`screen` and of saving."""
    from defectlab.plugin_system.config import Section, keyword_settings

    return {
        "target": Section(kind="dataset", required=True),
        "sources": Section(kind="dataset", many=True, required=True),
        "distance": Section(kind="distance"),
        "imbalance": Section(kind="imbalance"),
        "screen": Section(settings=keyword_settings(screen, ScreeningResult.save)),
    }


def run_screen(settings: Mapping[str, Any], out: str | Path | None = None, source: str = "config",
               overwrite: bool = False) -> tuple[ScreeningResult, Path, dict[str, Path]]:
    """A whole screening from a config's values: validate, screen, write the run folder.

    Missing distance/imbalance names take :func:`screen`'s defaults; every problem is reported
    at once as a ConfigError naming ``source``.
    """
    from defectlab.plugin_system.config import validate
    from defectlab.plugin_system.errors import ConfigError
    from defectlab.runs.run import new_run_dir, write_resolved_config

    settings = copy.deepcopy(dict(settings))
    for kind in ("distance", "imbalance"):
        spec = settings.setdefault(kind, {"name": default_of(screen, kind)})
        if isinstance(spec, dict):
            spec.setdefault("name", default_of(screen, kind))
    problems = validate(settings, screen_schema())
    if problems:
        raise ConfigError(problems, source=source)
    folder = new_run_dir("screen", out, overwrite=overwrite)  # claimed before the work, not after
    options = dict(settings.get("screen", {}))
    saving = {k: options.pop(k) for k in ("balance", "seed") if k in options}
    result = screen(settings["target"], settings["sources"], distance=settings["distance"],
                    imbalance=settings["imbalance"], **options)
    write_resolved_config(folder, settings, saving.get("seed", default_of(ScreeningResult.save, "seed")))
    return result, folder, result.save(folder, **saving)

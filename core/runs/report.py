"""Pictures and pages of runs: learning curves, report.html, and side-by-side comparisons of runs."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.plugin_system.files import write_json, write_text
from defectlab.plugin_system.naming import natural_key
from defectlab.runs.tables import format_table

#: Scores shown first in comparison tables when a run has them.
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "map_50", "map", "f1_best", "f1", "precision", "iou", "pa",
            "recall", "dice", "oii")


def curve_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """The per-epoch metric names worth a curve: losses first, then validation scores (no per-class ones)."""
    names: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "/" in key:
                if key.count("/") == 1 and not key.endswith(("/tp", "/fp", "/fn", "/tn")):
                    names[key] = None
    losses = [n for n in names if n.endswith("/loss")]
    return losses + [n for n in names if n not in losses]


def _panels(names: list[str]) -> dict[str, list[str]]:
    """Curves grouped into panels: one for the losses, one per score (train and val of it together)."""
    panels: dict[str, list[str]] = {}
    for name in names:
        panels.setdefault(name.split("/", 1)[1], []).append(name)
    return panels


def plot_curves(runs: dict[str, Sequence[dict[str, Any]]], path: Path, title: str = "") -> Path | None:
    """One panel per metric with a line per run (and per split); None when there is nothing to draw."""
    from defectlab.plugin_system.plotting import pyplot, save_figure

    plt = pyplot()

    names = curve_names([r for records in runs.values() for r in records])
    if not names:
        return None
    panels = _panels(names)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False,
                                layout="constrained")
    for axis, (metric, series) in zip(axes.flat, panels.items()):
        for run, records in runs.items():
            for name in series:
                points = [(r["epoch"], r[name]) for r in records if isinstance(r.get(name), (int, float))]
                if points:
                    label = name if len(runs) == 1 else f"{run} {name.split('/')[0]}"
                    axis.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=label)
        axis.set_title(metric, fontsize=10)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=11)
    return save_figure(figure, path)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape("" if value is None else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}}
img{{max-width:100%;border:1px solid #eee;margin:.5em 0}} pre{{background:#f7f7f7;padding:1em;overflow:auto}}
</style></head><body><h1>{title}</h1>{body}</body></html>"""


def write_run_report(folder: Path) -> Path:
    """curves.png and report.html of one run: status, data, final scores, curves, the evaluators' plots."""
    from defectlab.runs.run import Run

    run = Run(folder)
    status, evaluation = run.status, run.evaluation
    parts = [f"<p>status: <b>{html.escape(str(status.get('status', 'unknown')))}</b> "
             f"{html.escape(status.get('message', ''))} — epochs {status.get('epochs_done')}/{status.get('epochs')}, "
             f"best {html.escape(str(status.get('best')))}</p>"]
    if status.get("warnings"):
        parts.append("<h2>warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in status["warnings"])
                     + "</ul>")
    curves = plot_curves({run.name: run.metrics}, folder / "curves.png", title=run.name)
    if evaluation:
        scores = {k: v for k, v in evaluation["scores"].items() if "/" not in k}
        parts.append(f"<h2>{evaluation['split']} split ({evaluation['samples']} samples), best weights</h2>")
        parts.append(_table([scores], list(scores)))
        for name, details in evaluation.get("details", {}).items():
            if isinstance(details, dict) and details.get("f1_best_text"):
                parts.append(f"<p>{html.escape(name)}: F1 at its best confidence {details['f1_best_text']}</p>")
    if curves:
        parts.append(f'<h2>curves</h2><img src="{curves.name}">')
    for label, path in evaluation.get("files", {}).items():
        relative = Path(path).resolve().relative_to(folder.resolve())
        if relative.suffix == ".png":
            parts.append(f'<h3>{html.escape(label)}</h3><img src="{relative.as_posix()}">')
        else:
            parts.append(f'<p><a href="{relative.as_posix()}">{html.escape(label)}</a></p>')
    pictures = sorted((folder / "pictures").glob("epoch-*/*.png"), key=lambda p: natural_key(p.as_posix()))
    if pictures:  # what a pretraining objective drew (MAE's reconstructions), the last epoch's
        last = pictures[-1].parent
        parts.append(f"<h2>{html.escape(last.name)}</h2>" + "".join(
            f'<img src="{p.relative_to(folder).as_posix()}">' for p in pictures if p.parent == last))
    if status.get("skipped_images"):
        parts.append("<h2>unreadable images (skipped)</h2><p>" + ", ".join(
            html.escape(k) for k in status["skipped_images"]) + "</p>")
    if status.get("transfer"):
        transfer = status["transfer"]
        parts.append(f"<h2>transfer</h2><p>from {html.escape(transfer['source'])}: loaded {len(transfer['loaded'])} "
                     f"tensors, skipped {len(transfer['skipped'])}, head/other left at init {len(transfer['missing'])}</p>")
    if status.get("data"):
        parts.append(f"<h2>data</h2><pre>{html.escape(json.dumps(status['data'], indent=1))}</pre>")
    parts.append(f"<h2>config</h2><pre>{html.escape(json.dumps(run.config, indent=1, default=str))}</pre>")
    path = folder / "report.html"
    write_text(path, PAGE.format(title=html.escape(f"defectlab run {run.name}"), body="\n".join(parts)))
    return path


def comparison_rows(runs: Sequence[Any], labels: Mapping[str, Mapping[str, Any]] | None = None
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per run (name, its ``labels`` such as a sweep's settings, status, best epoch, final
    scores) and the columns worth showing."""
    rows, seen, labelled = [], {}, {}
    for run in runs:
        scores = {k: v for k, v in run.scores.items() if "/" not in k}
        status = run.status
        extra = dict((labels or {}).get(run.name, {}))
        labelled.update(dict.fromkeys(extra))
        rows.append({"run": run.name, **extra, "status": status.get("status"), "epochs": status.get("epochs_done"),
                     "best epoch": (status.get("best") or {}).get("epoch"), **scores})
        seen.update(dict.fromkeys(scores))
    ordered = [k for k in HEADLINE if k in seen] + [k for k in seen if k not in HEADLINE and k != "loss"]
    return rows, ["run", *labelled, "status", "epochs", "best epoch", *ordered]


@dataclass(frozen=True)
class Comparison:
    """Runs side by side: one row per run, the columns worth showing, and the report written."""

    rows: list[dict[str, Any]]
    columns: list[str]
    report: Path

    def table(self) -> str:
        """The rows as an aligned text table."""
        return format_table(self.columns, self.rows)


def write_comparison(runs: Sequence[Any], folder: Path, title: str = "comparison",
                     labels: Mapping[str, Mapping[str, Any]] | None = None, figures: Sequence[Path] = ()
                     ) -> Comparison:
    """report.html, curves.png and comparison.json comparing ``runs`` side by side (final scores, overlaid
    curves); ``labels`` add columns per run name, ``figures`` are shown above the curves."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, columns = comparison_rows(runs, labels)
    curves = plot_curves({run.name: run.metrics for run in runs}, folder / "curves.png", title=title)
    body = [_table(rows, columns)]
    body += [f'<img src="{Path(figure).relative_to(folder).as_posix()}">' for figure in figures]
    if curves:
        body.append(f'<img src="{curves.name}">')
    body += [f'<p><a href="{Path(run.folder.resolve() / "report.html").as_uri()}">{html.escape(run.name)}</a></p>'
             for run in runs]
    write_json(folder / "comparison.json", {"columns": columns, "rows": rows})
    path = folder / "report.html"
    write_text(path, PAGE.format(title=html.escape(title), body="\n".join(body)))
    return Comparison(rows, columns, path)

"""A verb per component kind that runs one component directly, e.g. ``defectlab imbalance gini``."""

from __future__ import annotations

from typing import Any

import click
from defectlab.cli.output import echo_json
from defectlab.runs.tables import format_number

SET_HELP = "Set a component parameter, KEY=VALUE (repeatable)."


def parse_counts(text: str) -> list[float]:
    """``349,62,250`` -> [349.0, 62.0, 250.0] with a clear error for anything else."""
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 349,62,250, got '{text}'",
                                 param_hint="--counts") from None


def component_params(settings: tuple[str, ...]) -> dict[str, Any]:
    """``('alpha=0.3',)`` -> {'alpha': 0.3}; dotted keys are not parameters of one component."""
    from defectlab.plugin_system.config import parse_override
    from defectlab.plugin_system.errors import DefectlabError

    params = {}
    for text in settings:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise DefectlabError(f"--set {text}: a component parameter has no dots in its name")
        params[keys[0]] = value
    return params


@click.command("imbalance")
@click.argument("name")
@click.option("--counts", help="Class counts, comma-separated (input-scope metrics).")
@click.option("--data", help="A dataset (path or NAME[:VALUE]) whose class counts to use (input-scope metrics).")
@click.option("--tp", type=float, help="True positives (output-scope metrics).")
@click.option("--fp", type=float, help="False positives: background predicted as defect.")
@click.option("--fn", type=float, help="False negatives: defects predicted as background.")
@click.option("--set", "settings", multiple=True, help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def imbalance_command(name: str, counts: str | None, data: str | None, tp: float | None, fp: float | None,
                      fn: float | None, settings: tuple[str, ...], as_json: bool) -> None:
    """Compute the imbalance metric NAME.

    Input-scope metrics (gini, imbalance_ratio) take --counts or --data; output-scope metrics (oii)
    take --tp, --fp and --fn. Example: `defectlab imbalance oii --tp 2 --fp 5 --fn 1`.
    """
    from defectlab.plugin_system.components import create, get_component

    component = get_component("imbalance", name)
    metric = create("imbalance", name, **component_params(settings))
    if component.obj.scope == "input":
        if (counts is None) == (data is None):
            raise click.UsageError(f"'{name}' is an input-scope metric: pass --counts (e.g. --counts 349,62,250) "
                                   f"or --data DATASET, one of them")
        unreadable = 0
        if data is not None:  # only the images that can be read count
            from defectlab.data.datasets import open_dataset

            dataset = open_dataset(data)
            values = [float(c) for c in dataset.class_counts(index for index, _ in dataset.iter_images())]
            unreadable = len(dataset.unreadable)
        else:
            values = parse_counts(counts)
        value = float(metric(values))
        result = {"metric": name, "scope": "input", "counts": values, "value": value, "unreadable": unreadable}
        text = f"{name} = {format_number(value)}  ({len(values)} classes, {sum(values):g} samples" + (
            f", {unreadable} unreadable images left out)" if unreadable else ")")
    else:
        missing = [flag for flag, v in (("--tp", tp), ("--fp", fp), ("--fn", fn)) if v is None]
        if missing:
            raise click.UsageError(f"'{name}' is an output-scope metric: pass {', '.join(missing)}")
        value = float(metric(tp, fp, fn))
        result = {"metric": name, "scope": "output", "tp": tp, "fp": fp, "fn": fn, "value": value}
        text = f"{name} = {format_number(value)}  (TP {tp:g}, FP {fp:g}, FN {fn:g})"
    if as_json:
        echo_json(result)
    else:
        click.echo(text)


def _summary_dict(summary: Any) -> Any:
    """A distance component's dataset summary as JSON data (``to_dict()`` when it has one)."""
    return summary.to_dict() if hasattr(summary, "to_dict") else summary


@click.command("distance")
@click.argument("name")
@click.option("--data", "data", multiple=True, metavar="DATASET",
              help="A dataset: a path or NAME[:VALUE] such as elpv:mono. Give exactly two.")
@click.option("--set", "settings", multiple=True, help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the distance and both summaries (signatures).")
def distance_command(name: str, data: tuple[str, ...], settings: tuple[str, ...], as_json: bool) -> None:
    """Measure the distance NAME between two datasets (lower = more similar).

    Each dataset is summarised by the component (for emd and sinkhorn: its colour signature,
    cached on disk) and the two summaries are compared. Example:
    `defectlab distance emd --data elpv:mono --data elpv:poly --set k=5`.
    """
    from defectlab.data.datasets import open_dataset
    from defectlab.plugin_system.components import create
    from defectlab.runs.tables import format_table

    if len(data) != 2:
        raise click.UsageError(f"pass exactly two datasets, --data A --data B (got {len(data)})")
    metric = create("distance", name, **component_params(settings))
    summaries = [metric.represent(open_dataset(spec)) for spec in data]
    value = float(metric(*summaries))
    if as_json:
        echo_json({"metric": name, "data": list(data), "value": value,
                   "signatures": [_summary_dict(s) for s in summaries]})
        return
    click.echo(f"{name} = {format_number(value)}")
    rows = []
    for spec, summary in zip(data, summaries):
        meta = getattr(summary, "meta", {})
        rows.append([spec, getattr(summary, "k", ""), meta.get("channels", ""), meta.get("images", ""),
                     "yes" if meta.get("cached") else "no"])
    click.echo(format_table(["dataset", "K", "channels", "images", "cached"], rows))


COMMANDS = [imbalance_command, distance_command]

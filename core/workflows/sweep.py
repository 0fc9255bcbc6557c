"""A grid of runs from one config, and one report: ``defectlab sweep`` and ``dl.sweep``.

Every combination of the grid's values is one run of ``train`` (or ``pretrain``, for a config
with ``[ssl]``), in a folder of its own under the sweep's. A sweep started again with the same
config and grid continues: finished runs are kept, killed ones resumed, the rest started. The
report is ``report``'s table and curves, plus each score against the first axis (for Hemmingsson and Olsson 2026,
balanced accuracy and macro-F1 against the label fraction), one line per value of the others.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import ConfigError, DataError

SWEEP_FILE = "sweep.json"
DEFAULT_SCORES = ("balanced_accuracy", "macro_f1")


@dataclass
class SweepResult:
    """The runs of a sweep in grid order, each with its settings, and the comparison written."""

    folder: Path
    axes: dict[str, list[Any]]
    runs: list[Any] = field(default_factory=list)
    settings: list[dict[str, Any]] = field(default_factory=list)
    comparison: Any = None

    def table(self) -> str:
        return self.comparison.table()


def parse_grid(texts: Sequence[str]) -> dict[str, list[Any]]:
    """``['data.label_fraction=0.1,1', 'train.init_from=none,runs/mae']`` -> {key: [values]}.

    Values are split at commas outside brackets and read as TOML, else as strings, as ``--set`` does.
    """
    from defectlab.plugin_system.config import parse_override

    axes: dict[str, list[Any]] = {}
    for text in texts:
        if "=" not in text:
            raise ConfigError([f"--grid '{text}': expected KEY=V1,V2,..., e.g. data.label_fraction=0.1,0.2,1"],
                              "command line")
        key, values = text.split("=", 1)
        if key.strip() in axes:
            raise ConfigError([f"--grid {key.strip()}: given twice; put every value in one --grid"], "command line")
        parts = [part.strip() for part in re.split(r",(?![^\[]*\])", values) if part.strip()]
        if not parts:
            raise ConfigError([f"--grid {key.strip()}: no values"], "command line")
        axes[key.strip()] = [parse_override(f"{key}={part}")[1] for part in parts]
    if not axes:
        raise ConfigError(["a sweep needs at least one --grid KEY=V1,V2,..."], "command line")
    return axes


def run_name(settings: Mapping[str, Any]) -> str:
    """A folder name for one combination: ``label_fraction-0.1_init_from-mae_linear_probe-true``."""
    def short(value: Any) -> str:
        text = Path(value).name if isinstance(value, str) and "/" in value else str(value).lower()
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"

    return "_".join(f"{key.rsplit('.', 1)[-1]}-{short(value)}" for key, value in settings.items())


def sweep(config: str | Path | Mapping[str, Any], grid: Mapping[str, Sequence[Any]] | Sequence[str], *,
          out: str | Path | None = None, overrides: Sequence[str] = (), scores: Sequence[str] = DEFAULT_SCORES,
          overwrite: bool = False) -> SweepResult:
    """Run every combination of ``grid`` (key -> values, or ``KEY=V1,V2`` texts) over ``config``.

    Every combination is checked before the first run; the first axis is the x-axis of the
    sweep's plot of ``scores``. ``out`` defaults to runs/sweep-<time>; a folder that holds the same
    sweep is continued, one that holds anything else is refused unless ``overwrite``.
    """
    from defectlab.plugin_system.config import apply_overrides, load_toml, set_value
    from defectlab.runs.report import write_comparison
    from defectlab.workflows.train import check_config

    axes = parse_grid(grid) if not isinstance(grid, Mapping) else {k: list(v) for k, v in grid.items()}
    source = str(config) if isinstance(config, (str, Path)) else "config"
    base = apply_overrides(load_toml(config) if isinstance(config, (str, Path)) else copy.deepcopy(dict(config)),
                           list(overrides))
    combinations = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    configs = []
    for settings in combinations:
        values = copy.deepcopy(base)
        for key, value in settings.items():
            set_value(values, key.split("."), value)
        check_config(values, f"{source} with {run_name(settings)}")
        configs.append(values)
    spec = {"config": base, "grid": axes, "scores": list(scores)}
    folder = _claim(out, spec, overwrite)
    result = SweepResult(folder, axes)
    for settings, values in zip(combinations, configs):
        run_folder = folder / run_name(settings)
        result.runs.append(_finished_or_run(run_folder, values))
        result.settings.append(settings)
    labels = {run.name: {key.rsplit(".", 1)[-1]: value for key, value in settings.items()}
              for run, settings in zip(result.runs, result.settings)}
    figure = plot_sweep(result, list(scores), folder / "sweep.png")
    result.comparison = write_comparison(result.runs, folder, title=f"sweep of {source}", labels=labels,
                                         figures=[figure] if figure else [])
    return result


def _claim(out: str | Path | None, spec: Mapping[str, Any], overwrite: bool) -> Path:
    """The sweep's folder: new, or the same sweep's to continue (its sweep.json equal to ``spec``)."""
    from defectlab.plugin_system.files import write_json
    from defectlab.runs.run import new_run_dir

    if out is not None and not overwrite and (Path(out) / SWEEP_FILE).is_file():
        saved = json.loads((Path(out) / SWEEP_FILE).read_text())
        if saved == json.loads(json.dumps(spec, default=str)):
            return Path(out)
        raise DataError(f"'{out}' holds another sweep (its config or grid differ); choose another --out, or pass "
                        f"--overwrite to replace it")
    folder = new_run_dir("sweep", out, overwrite=overwrite)
    write_json(folder / SWEEP_FILE, spec)
    return folder


def _finished_or_run(folder: Path, config: Mapping[str, Any]) -> Any:
    """A finished run as it is, a killed one resumed, anything else trained."""
    from defectlab.runs.run import Run
    from defectlab.workflows.train import train
    status = json.loads((folder / "run.json").read_text()).get("status") if (folder / "run.json").is_file() else None
    if status == "finished":
        return Run(folder)
    if status in ("interrupted", "failed", "running") and (folder / "last.pt").is_file():
        return train(resume=folder)
    return train(config, out=folder)


def plot_sweep(result: SweepResult, scores: list[str], path: Path) -> Path | None:
    """Each score against the first axis, one line per combination of the other axes; None if nothing to draw."""
    from defectlab.plugin_system.plotting import pyplot, save_figure

    shown = [s for s in scores if any(s in run.scores for run in result.runs)]
    if not shown:
        return None
    x_key, *others = list(result.axes)
    lines: dict[str, list[tuple[Any, float, str]]] = {}
    for run, settings in zip(result.runs, result.settings):
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={settings[k]}" for k in others) or "runs"
        for score in shown:
            if score in run.scores:
                lines.setdefault(label, []).append((settings[x_key], float(run.scores[score]), score))
    plt = pyplot()
    figure, panels = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False, layout="constrained")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in result.axes[x_key])
    for axis, score in zip(panels[0], shown):
        for label, points in lines.items():
            xy = [(x, y) for x, y, s in points if s == score]
            xs = [x for x, _ in xy] if numeric else [str(x) for x, _ in xy]
            axis.plot(xs, [y for _, y in xy], marker="o", label=label)
        if numeric and min(result.axes[x_key]) > 0 and max(result.axes[x_key]) / min(result.axes[x_key]) >= 10:
            axis.set_xscale("log")
        axis.set_xlabel(x_key)
        axis.set_ylabel(score)
        axis.grid(alpha=0.3)
    panels[0][0].legend(fontsize=7)
    return save_figure(figure, path)

"""OII-guided tuning of a segmentation loss's α by bisection (Yi et al. 2022 App. C): ``defectlab tune-oii``.

α weights defect pixels predicted as background (false negatives), β background predicted as
defect, in every loss that has them (Yi et al. 2022's reading). Raising α makes missed defects cost
more, so FN falls and the output imbalance index (OII > 0 when FN > FP) goes down. Given a
target interval [m0, m1] of the OII and a range [a, b] of α, the search trains at the middle
of [a, b]; an OII above m1 means too many missed defects, so α goes up (a ← α), one below m0
means too many false alarms, so α goes down (b ← α); α ← (a + b)/2 again until a run's OII
lies in [m0, m1] or ``max_trials`` runs have trained. n trainings reach α to (b − a)/2^n,
where a grid search of that step trains 2^n + 1 models.

Each trial is one call of a ``trainer(config, folder) -> scores`` function, ``train_trial`` (a
full ``defectlab.train``) unless another is given, so the search itself is tested without
training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import (
    ConfigError,
    DataError,
    ParameterError,
    TrainingError,
)
from defectlab.plugin_system.files import write_json

#: The scores each trial reports, in this order.
TRIAL_SCORES = ("iou", "pa", "recall", "oii")
DEFAULT_INTERVAL = (0.15, 0.25)  # App. C's target for THC448
DEFAULT_RANGE = (0.1, 0.9)  # App. C's range of α
DEFAULT_MAX_TRIALS = 6  # α to (b − a)/64 = 0.0125 on [0.1, 0.9]; a grid of that step trains 65 models

TrialTrainer = Callable[[dict[str, Any], Path], Mapping[str, Any]]


@dataclass
class Trial:
    """One training of the search: its α (and β), the bracket it bisected, and its scores."""

    index: int
    alpha: float
    beta: float | None
    low: float
    high: float
    scores: dict[str, float]
    split: str
    in_interval: bool
    folder: str | None = None
    epoch: int | None = None  # the epoch whose validation scores were read

    @property
    def oii(self) -> float:
        return self.scores["oii"]


@dataclass
class OIITuning:
    """The result of a search: every trial in order, and what a grid search would have cost."""

    interval: tuple[float, float]
    alpha_range: tuple[float, float]
    max_trials: int
    loss: str
    tie_beta: bool
    trials: list[Trial] = field(default_factory=list)
    folder: str | None = None

    @property
    def found(self) -> Trial | None:
        """The trial whose OII fell in the interval (the search stops there), or None."""
        return next((t for t in self.trials if t.in_interval), None)

    @property
    def chosen(self) -> Trial | None:
        """The trial found, else the one whose OII came closest to the interval."""
        if self.found is not None or not self.trials:
            return self.found
        low, high = self.interval
        return min(self.trials, key=lambda t: max(low - t.oii, t.oii - high))

    @property
    def resolution(self) -> float:
        """The step (b − a)/2^n of α that n bisection trainings reach."""
        return (self.alpha_range[1] - self.alpha_range[0]) / 2 ** len(self.trials)

    @property
    def grid_trainings(self) -> int:
        """Models a grid search over [a, b] with the same step trains: 2^n + 1 (App. C)."""
        return 2 ** len(self.trials) + 1

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {"interval": list(self.interval), "alpha_range": list(self.alpha_range),
                "max_trials": self.max_trials, "loss": self.loss, "tie_beta": self.tie_beta,
                "trials": [asdict(t) for t in self.trials], "found": self.found is not None,
                "chosen": None if chosen is None else chosen.index,
                "bisection_trainings": len(self.trials), "alpha_resolution": self.resolution,
                "grid_search_trainings": self.grid_trainings, "folder": self.folder}

    def rows(self) -> list[dict[str, Any]]:
        """One record per trial for a table: trial, α, β, scores, whether the OII is in the interval, next move."""
        low, high = self.interval
        rows = []
        for trial in self.trials:
            move = "stop" if trial.in_interval else ("raise α" if trial.oii > high else "lower α")
            if not trial.in_interval and trial is self.trials[-1]:
                move = "stop (max trials)" if len(self.trials) >= self.max_trials else move
            rows.append({"trial": trial.index, "alpha": trial.alpha, "beta": trial.beta,
                         **{k: trial.scores.get(k) for k in TRIAL_SCORES},
                         "in interval": "yes" if trial.in_interval else "no", "next": move})
        return rows

    def summary(self) -> list[str]:
        """What was found and how many trainings a grid search would have needed, in sentences."""
        low, high = self.interval
        a, b = self.alpha_range
        split = self.trials[0].split if self.trials else "val"
        n = len(self.trials)
        lines = [f"target: OII in [{low:g}, {high:g}] on the {split} split, α in [{a:g}, {b:g}], loss '{self.loss}'"
                 + (" with β = 1 - α" if self.tie_beta else "")]
        found, chosen = self.found, self.chosen
        if found is not None:
            lines.append(f"found: trial {found.index}, α = {found.alpha:.4g} (OII {found.oii:.4f}, "
                         f"IoU {found.scores.get('iou', float('nan')):.4f})")
        elif chosen is not None:
            lines.append(f"not reached in {n} trials; closest: trial {chosen.index}, α = {chosen.alpha:.4g} "
                         f"(OII {chosen.oii:.4f})")
        lines.append(f"trainings: {n} by OII-guided bisection (this search, α to a step of "
                     f"({b:g} - {a:g})/2^{n} = {self.resolution:.4g}); a grid search over [{a:g}, {b:g}] with "
                     f"the same step would train 2^{n} + 1 = {self.grid_trainings}")
        return lines


# --- the search ------------------------------------------------------------------------------------

def next_bracket(low: float, high: float, alpha: float, oii: float, interval: tuple[float, float]
                 ) -> tuple[float, float]:
    """The bracket after a trial at ``alpha``: OII above the interval raises α (low ← α), below lowers it."""
    if oii > interval[1]:
        return alpha, high
    if oii < interval[0]:
        return low, alpha
    return low, high


def checked_pair(name: str, pair: Sequence[float], low: float | None = None, high: float | None = None
                 ) -> tuple[float, float]:
    """Two increasing numbers (within [low, high] when given), else a ParameterError naming ``name``."""
    values = tuple(float(v) for v in pair)
    if len(values) != 2 or not values[0] < values[1]:
        raise ParameterError(f"{name} must be two increasing numbers LOW,HIGH, got {list(pair)}")
    if (low is not None and values[0] < low) or (high is not None and values[1] > high):
        if low is not None and high is not None:
            bounds = f"in [{low:g}, {high:g}]"
        else:
            bounds = f">= {low:g}" if low is not None else f"<= {high:g}"
        raise ParameterError(f"{name} must lie {bounds}, got {list(values)}")
    return values  # type: ignore[return-value]


def tunable_losses() -> list[str]:
    """Names of the registered losses that have an ``alpha`` parameter."""
    from defectlab.plugin_system.components import list_components

    return [c.name for c in list_components("loss") if any(p.name == "alpha" for p in c.parameters)]


def loss_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's loss as a {name = ...} table (a segmentation config without one trains with dibe)."""
    from defectlab.workflows.train import DEFAULT_LOSS

    spec = config.get("loss") or DEFAULT_LOSS["segment"]
    return {"name": spec} if isinstance(spec, str) else dict(spec)


def with_alpha(config: Mapping[str, Any], alpha: float, tie_beta: bool) -> tuple[dict[str, Any], float | None]:
    """A copy of ``config`` whose loss has ``alpha`` (and β = 1 − α when tied and the loss has β); and β."""
    from defectlab.plugin_system.components import resolve_spec

    result = copy.deepcopy(dict(config))
    spec = loss_spec(result)
    spec["alpha"] = alpha
    component, _ = resolve_spec("loss", spec, "loss")
    beta = None
    if tie_beta and any(p.name == "beta" for p in component.parameters):
        beta = spec["beta"] = 1.0 - alpha
    result["loss"] = spec
    return result, beta


def prepared_config(config: str | Path | Mapping[str, Any], overrides: Sequence[str], alpha_range: tuple[float, float],
                    tie_beta: bool) -> dict[str, Any]:
    """The config with overrides applied, checked as a whole before the first training.

    Refuses staged configs, losses without ``alpha``, evaluators without ``segmentation`` (the
    OII comes from it), and a range of α the loss cannot take (it is built at both ends).
    """
    from defectlab.data.datasets import open_dataset
    from defectlab.plugin_system.components import get_component
    from defectlab.plugin_system.config import apply_overrides, load_toml
    from defectlab.workflows.train import check_config

    source = str(config) if isinstance(config, (str, Path)) else "config"
    values = load_toml(config) if isinstance(config, (str, Path)) else copy.deepcopy(dict(config))
    values = apply_overrides(values, list(overrides))
    if values.get("stages"):
        raise ConfigError(["stages: tune-oii tunes one training; remove [[stages]] (or tune the last stage's "
                           "config on its own)"], source)
    check_config(values, source)
    task = values["data"].get("task") or open_dataset(values["data"]["dataset"]).task
    if task != "segment":
        raise ConfigError([f"data: tune-oii tunes a segmentation loss by the OII of predicted masks, but these data "
                           f"are for '{task}'; give a segmentation config (image and mask pairs)"], source)
    name = loss_spec(values)["name"]
    component = get_component("loss", name.split(":", 1)[0])
    if not any(p.name == "alpha" for p in component.parameters):
        raise ConfigError([f"loss.name: loss '{component.name}' has no alpha parameter, so its output imbalance "
                           f"cannot be tuned; use one of {', '.join(tunable_losses())}"], source)
    evaluators = values.get("evaluators")
    if evaluators and not any((e if isinstance(e, str) else e.get("name")) == "segmentation" for e in evaluators):
        raise ConfigError(["evaluators: tune-oii reads the OII of the 'segmentation' evaluator; add "
                           "[[evaluators]] name = \"segmentation\""], source)
    check_config(with_alpha(values, sum(alpha_range) / 2, tie_beta)[0], source)
    for end in alpha_range:  # the loss checks its own values (dibe: α in [0, 1]; tied: β = 1 − α >= 0)
        try:
            component.build({k: v for k, v in with_alpha(values, end, tie_beta)[0]["loss"].items() if k != "name"},
                            where="loss")
        except ParameterError as exc:
            raise ParameterError(f"--range: α = {end:g} does not fit loss '{component.name}': {exc}") from None
    return values


def tune_oii(config: str | Path | Mapping[str, Any], *, interval: Sequence[float] = DEFAULT_INTERVAL,
             alpha_range: Sequence[float] = DEFAULT_RANGE, max_trials: int = DEFAULT_MAX_TRIALS,
             out: str | Path | None = None, overrides: Sequence[str] = (), tie_beta: bool = True,
             split: str = "val", trainer: TrialTrainer | None = None,
             on_trial: Callable[[Trial], None] | None = None, overwrite: bool = False) -> OIITuning:
    """Bisect the loss's α until a run's OII lies in ``interval`` (at most ``max_trials`` trainings).

    Each trial trains into ``out``/trial-<k>-alpha-<α> with ``trainer`` (default: ``train_trial``
    reading the ``split`` scores, 'val' as in App. C or 'test'); ``tie_beta`` sets β = 1 − α in
    losses that have β (DIBE ties them itself). Writes tune.json, tune.png and a comparison
    report of the trials into ``out``, and returns the :class:`OIITuning`.
    """
    from defectlab.runs.run import new_run_dir

    target = checked_pair("interval", interval, -1.0, 1.0)
    bracket = checked_pair("range", alpha_range, 0.0)
    if max_trials < 1:
        raise ParameterError(f"max_trials must be >= 1, got {max_trials}")
    if split not in ("val", "test"):
        raise ParameterError(f"split must be 'val' or 'test', got {split!r}")
    values = prepared_config(config, overrides, bracket, tie_beta)
    train = trainer or (lambda trial_config, folder: train_trial(trial_config, folder, split))
    folder = new_run_dir("tune-oii", out, overwrite=overwrite)
    result = OIITuning(target, bracket, max_trials, loss_spec(values)["name"], tie_beta, folder=str(folder))
    low, high = bracket
    try:
        for index in range(1, max_trials + 1):
            alpha = (low + high) / 2
            trial_config, beta = with_alpha(values, alpha, tie_beta)
            trial_folder = folder / f"trial-{index}-alpha-{alpha:.4g}"
            reported = dict(train(trial_config, trial_folder))
            split_read, epoch = str(reported.pop("split", split)), reported.pop("epoch", None)
            if "oii" not in reported:
                raise DataError(f"trial {index} reported no OII (scores: {', '.join(reported) or 'none'}); tune-oii "
                                f"needs the 'segmentation' evaluator")
            scores = {k: float(v) for k, v in reported.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            trial = Trial(index, alpha, beta, low, high, scores, split_read, target[0] <= scores["oii"] <= target[1],
                          str(trial_folder) if trial_folder.is_dir() else None, epoch)
            result.trials.append(trial)
            if on_trial is not None:
                on_trial(trial)
            if trial.in_interval:
                break
            low, high = next_bracket(low, high, alpha, trial.oii, target)
    finally:  # the trials done so far are saved even when one fails or the search is interrupted
        write_tuning(result, folder)
    return result


# --- one trial -------------------------------------------------------------------------------------

def train_trial(config: dict[str, Any], folder: Path, split: str = "val") -> dict[str, Any]:
    """Train ``config`` into ``folder`` and return the scores of ``split`` (see :func:`run_scores`)."""
    from defectlab.workflows.train import train

    run = train(config, out=folder)
    if run.status.get("status") != "finished":
        raise TrainingError(f"the training in '{folder}' ended as {run.status.get('status')}: "
                            f"{run.status.get('message', '')}")
    return run_scores(run, split)


def run_scores(run: Any, split: str = "val") -> dict[str, Any]:
    """A run's scores on ``split`` with the split's name under 'split'.

    'val': the validation scores of the best epoch (the weights of best.pt; the last evaluated
    epoch if no epoch was best), as App. C computes the OII on the validation set. 'test', or a
    run without validation scores: the final evaluation of best.pt (test split, else val).
    """
    if split == "val":
        evaluated = [r for r in run.metrics if "val/oii" in r]
        best = (run.status.get("best") or {}).get("epoch")
        record = next((r for r in evaluated if r["epoch"] == best), evaluated[-1] if evaluated else None)
        if record is not None:
            return {**{k[4:]: v for k, v in record.items() if k.startswith("val/")}, "split": "val",
                    "epoch": record["epoch"]}
    return {**run.scores, "split": run.evaluation.get("split", "test")}


# --- what a search writes --------------------------------------------------------------------------

def write_tuning(result: OIITuning, folder: Path) -> dict[str, Path]:
    """tune.json, tune.png and (when the trials are run directories) the comparison report.html."""
    from defectlab.runs.report import write_comparison
    from defectlab.runs.run import Run

    written = {"tune": folder / "tune.json"}
    write_json(written["tune"], result.to_dict())
    if result.trials:
        written["plot"] = plot_tuning(result, folder / "tune.png")
    runs = [Run(t.folder) for t in result.trials if t.folder and (Path(t.folder) / "config.json").is_file()]
    if runs:
        written["report"] = write_comparison(runs, folder, title=f"OII-guided tuning of α ({result.loss})").report
    return written


def plot_tuning(result: OIITuning, path: Path) -> Path:
    """α per trial (with the bracket it bisected) above the OII per trial (with the target band)."""
    from defectlab.plugin_system.plotting import pyplot, save_figure

    plt = pyplot()

    trials = result.trials
    index = [t.index for t in trials]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True, layout="constrained")
    top.vlines(index, [t.low for t in trials], [t.high for t in trials], linewidth=8, alpha=0.25,
               label="bracket [a, b] bisected")
    top.plot(index, [t.alpha for t in trials], marker="o", label="α trained")
    top.set_ylim(result.alpha_range[0] - 0.05, result.alpha_range[1] + 0.05)
    top.set_ylabel("α (weight of missed defects)")
    top.legend(fontsize=8)
    low, high = result.interval
    bottom.axhspan(low, high, color="tab:green", alpha=0.2, label=f"target [{low:g}, {high:g}]")
    bottom.plot(index, [t.oii for t in trials], color="grey", zorder=1)
    bottom.scatter(index, [t.oii for t in trials], zorder=2,
                   c=["tab:green" if t.in_interval else "tab:red" for t in trials])
    bottom.axhline(0, color="black", linewidth=0.5)
    bottom.set_ylim(-1.05, 1.05)  # the OII lies in [-1, 1]
    bottom.set_ylabel(f"OII ({trials[0].split})")
    bottom.set_xlabel("trial")
    bottom.set_xticks(index)
    bottom.legend(fontsize=8)
    figure.suptitle(f"OII-guided bisection of α, loss '{result.loss}': {len(trials)} trainings "
                    f"(grid search of the same step: {result.grid_trainings})", fontsize=10)
    return save_figure(figure, path)

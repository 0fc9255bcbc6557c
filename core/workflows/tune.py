"""A hyperparameter search on Optuna: ``defectlab tune`` and ``dl.tune``.

The search space maps config keys to ranges or choices (``--param KEY=SPEC`` or ``[tune.params]``).
Each trial is one ``train`` of the config with the values that TPE samples, in a run folder of
its own under the tune folder, scored by ``metric`` at its best epoch (``train.monitor`` follows
the metric, so best.pt is chosen by it too). The median pruner stops a trial whose metric after
an epoch is worse than the median of the earlier trials' at that epoch: its run ends there and
run.json says 'pruned'. The study lives in an Optuna storage, an SQLite file in the tune folder
unless ``storage`` names another: processes that share a storage and a study name are workers of
one study, and the same command run again continues it, up to ``trials`` trials in all. Keys,
ranges, the metric and the storage are checked before the first trial trains.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from defectlab.plugin_system.errors import (
    ConfigError,
    DataError,
    DefectlabError,
    ParameterError,
    TrainingError,
    did_you_mean,
)
from defectlab.plugin_system.parameters import Range
from defectlab.training.events import Callback

TUNE_FILE = "tune.json"
STUDY_FILE = "study.db"
SPEC_FORMS = "'LOW:HIGH', 'log:LOW:HIGH', 'int:LOW:HIGH', 'choice:A,B,...' or a list of choices"
#: Seconds between a trial's heartbeats; a trial silent for GRACE_SECONDS (its process died) is failed
#: and its place in the study is taken by a new one.
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 120
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# --- the [tune] table ------------------------------------------------------------------------------

def seconds(value: float | str, where: str) -> float:
    """``90``, ``"90s"``, ``"30m"``, ``"1.5h"`` or ``"1d"`` in seconds, else a ParameterError naming ``where``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", str(value))
    if match is None or float(match.group(1)) <= 0:
        raise ParameterError(f"{where}: expected a positive time such as 3600, '90s', '30m' or '1.5h', got {value!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


@dataclass(frozen=True)
class Duration:
    """The check of a time setting: a positive number of seconds, or a number with s, m, h or d."""

    def __str__(self) -> str:
        return "(seconds, or e.g. '30m', '1.5h')"

    def check(self, value: Any, where: str) -> None:
        seconds(value, where)


@dataclass(frozen=True)
class SearchSpaces:
    """The check of ``tune.params``: every value a search space (see :func:`parse_space`)."""

    def __str__(self) -> str:
        return f"(config key -> {SPEC_FORMS})"

    def check(self, value: Any, where: str) -> None:
        for key, spec in value.items():
            parse_space(key, spec, f"{where}.{key}")


def tune_settings(*, params: Annotated[dict | None, SearchSpaces()] = None, trials: Annotated[int, Range(1)] = 20,
                  timeout: Annotated[float | str | None, Duration()] = None, metric: str | None = None,
                  direction: Literal["auto", "minimize", "maximize"] = "auto", storage: str | None = None,
                  study: str | None = None, seed: int | None = None, pruning: bool = True,
                  prune_startup_trials: Annotated[int, Range(0)] = 5,
                  prune_warmup_epochs: Annotated[int, Range(0)] = 0) -> None:
    """The ``[tune]`` table of a config: the search that ``defectlab tune`` runs.

    Args:
        params: The search space, config key -> 'LOW:HIGH' (floats), 'log:LOW:HIGH' (floats on a log
            scale), 'int:LOW:HIGH' (integers), 'choice:A,B,...' or a list of choices of any TOML values;
            in TOML a table of quoted keys, ``[tune.params]`` ``"train.lr" = "log:1e-5:1e-2"``.
        trials: Trials of the study in all, over every worker and every run of the command.
        timeout: This process starts no trial after this long: seconds, or '90s', '30m', '1.5h', '1d'.
        metric: What a trial scores, as metrics.jsonl names it ('val/macro_f1'); default the run's
            train.monitor, which follows it in every trial.
        direction: Whether a trial with a lower or a higher metric is better; auto: as train.mode
            says for the monitor, else minimize a loss and maximize anything else.
        storage: An Optuna storage URL (sqlite:///tune.db, postgresql://user@host/db) that workers on
            several machines share; default an SQLite file study.db in the tune folder.
        study: The study's name in the storage; default the config file's name.
        seed: The seed of the TPE sampler (None: each worker draws its own).
        pruning: Stop trials whose metric is worse than the median of earlier trials at the same epoch.
        prune_startup_trials: Trials that finish before any is pruned.
        prune_warmup_epochs: Epochs of every trial that are never pruned.
    """


# --- the search space ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Space:
    """The values one config key may take: a range of floats ('float', 'log'), of integers ('int'), or choices."""

    key: str
    kind: Literal["float", "log", "int", "choice"]
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value that the Optuna ``trial`` samples for this key."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log")

    def ends(self) -> tuple[Any, ...]:
        """The values that bound what a trial may get: both ends of a range, every choice."""
        return self.choices if self.kind == "choice" else (self.low, self.high)


def parse_space(key: str, spec: Any, where: str) -> Space:
    """``'log:1e-5:1e-2'``, ``'0:0.5'``, ``'int:8:64'``, ``'choice:ce,focal'`` or ``['ce', 'focal']`` as a Space.

    Choices are read as TOML, else as strings, as ``--set`` and ``--grid`` read values.
    """
    from defectlab.workflows.sweep import parse_grid

    if isinstance(spec, str) and spec.startswith("choice:"):
        if not spec[len("choice:"):].strip():
            raise ParameterError(f"{where}: 'choice:' names no value; give choice:A,B,...")
        spec = parse_grid([f"{key}={spec[len('choice:'):]}"])[key]
    if isinstance(spec, list):
        if not spec:
            raise ParameterError(f"{where}: an empty list of choices; give at least one")
        odd = [v for v in spec if not (v is None or isinstance(v, (bool, int, float, str)))]
        if odd:
            raise ParameterError(f"{where}: a choice must be a number, a string or a boolean, got {odd[0]!r}")
        if len(set(map(repr, spec))) < len(spec):
            raise ParameterError(f"{where}: a choice is given twice in {spec}")
        return Space(key, "choice", choices=tuple(spec))
    if isinstance(spec, dict):
        raise ParameterError(f"{where}: a table; write each key whole and in quotes, [tune.params] "
                             f"\"{key}.{next(iter(spec), 'name')}\" = \"LOW:HIGH\", not [tune.params.{key}]")
    if not isinstance(spec, str):
        raise ParameterError(f"{where}: expected {SPEC_FORMS}, got {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind not in ("log", "int"):
        kind, rest = "float", spec
    parts = rest.split(":")
    if len(parts) != 2:
        raise ParameterError(f"{where}: expected {SPEC_FORMS}, got {spec!r}")
    try:
        low, high = (int(p) if kind == "int" else float(p) for p in parts)
    except ValueError:
        raise ParameterError(f"{where}: in {spec!r} LOW and HIGH must be {'integers' if kind == 'int' else 'numbers'}"
                             ) from None
    if not low < high:
        raise ParameterError(f"{where}: the range {low:g}:{high:g} is empty; LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise ParameterError(f"{where}: a log range needs LOW > 0, got {low:g}")
    return Space(key, kind, low, high)  # type: ignore[arg-type]


def param_table(params: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """``['train.lr=log:1e-5:1e-2', ...]`` (or a mapping already) as the key -> spec table of ``tune.params``."""
    if isinstance(params, Mapping):
        return dict(params)
    table: dict[str, Any] = {}
    for text in params:
        key, sign, spec = text.partition("=")
        if not sign or not key.strip():
            raise ConfigError([f"--param '{text}': expected KEY=SPEC with SPEC {SPEC_FORMS}, e.g. "
                               f"--param train.lr=log:1e-5:1e-2"], "command line")
        if key.strip() in table:
            raise ConfigError([f"--param {key.strip()}: given twice"], "command line")
        table[key.strip()] = spec.strip()
    return table


def with_values(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with each dotted key of ``values`` set."""
    from defectlab.plugin_system.config import set_value

    result = copy.deepcopy(dict(config))
    for key, value in values.items():
        set_value(result, key.split("."), value)
    return result


# --- what a trial can be scored by -----------------------------------------------------------------

class FirstBatch:
    """A data module whose loaders end after their first batch: enough to learn the names of the scores."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)

    def loader(self, split: str, **options: Any) -> Any:
        import itertools

        return itertools.islice(self.data.loader(split, **options), 1)


def epoch_metrics(data: Any, model: Any, loss: Any, evaluators: Sequence[Any]) -> list[str] | None:
    """The metrics of every validated epoch's record: train/loss and, with a validation split, val/loss and
    each evaluator's val/<score>, named by scoring the untrained model on one validation batch; None for a
    model that is fitted in one pass or trained by an engine of its own, which cannot be scored untrained."""
    import torch
    from defectlab.training.evaluation import evaluate_split
    from defectlab.training.loop import set_up_components

    if hasattr(model, "fit") or hasattr(model, "train_externally"):
        return None
    if "val" not in data.splits:
        return ["train/loss"]
    set_up_components(data, loss, *evaluators)
    scores = evaluate_split(model, loss, FirstBatch(data), "val", evaluators, torch.device("cpu"))
    return ["train/loss", *(f"val/{name}" for name in scores)]


class PruneTrial(Callback):
    """Reports a trial's metric after every epoch that has it, and stops the run as 'pruned' when the pruner says so."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        value = record.get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), record["epoch"])
        if self.trial.should_prune():
            trainer.stop("pruned", f"trial {self.trial.number} pruned after epoch {record['epoch']}: {self.metric} "
                                   f"{value:.4g} is worse than the median of earlier trials at this epoch")


# --- the result ------------------------------------------------------------------------------------

@dataclass
class Tuning:
    """A study as it stands: every trial (number, state, value, params, epochs, run folder) and the best."""

    folder: Path
    study: str
    storage: str
    given: str | None  # the storage given (None: the folder's own study.db), by which the folder is claimed
    metric: str
    direction: str
    keys: list[str]
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One record per trial for a table."""
        return [{"trial": t["number"], "state": t["state"], "value": t["value"], **t["params"],
                 "epochs": t["epochs"], "run": Path(t["folder"]).name if t["folder"] else None} for t in self.trials]

    def table(self) -> str:
        from defectlab.runs.tables import format_table

        return format_table(["trial", "state", "value", *self.keys, "epochs", "run"], self.rows())

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage, "storage_given": self.given, "metric": self.metric,
                "direction": self.direction,
                "params": self.keys, "trials": self.trials, "best": self.best,
                "files": {label: str(path) for label, path in self.files.items()}}


class OverLimit(Exception):
    """A trial that another worker's took the study's last place before it: recorded as failed, never trained."""


class TrialFailed(Exception):
    """A trial whose training failed (a non-finite loss, a combination the data cannot take); the study goes on."""


# --- the study -------------------------------------------------------------------------------------

def tune_extra() -> Any:
    """The optuna module (and tomli_w, which writes best.toml), or a DataError naming the extra to install."""
    try:
        import optuna
        import tomli_w  # noqa: F401
    except ModuleNotFoundError as exc:
        raise DataError(f"defectlab tune needs {exc.name}, which is not installed: pip install 'defectlab[tune]'"
                        ) from None
    return optuna


def shown_url(url: str) -> str:
    """A storage URL as it may be printed and saved: without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_storage(url: str) -> Any:
    """An Optuna storage on ``url`` with heartbeats, connected and with its tables made, else a DataError."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    dialect = url.split(":", 1)[0].split("+", 1)[0]
    connect = {"sqlite": {"timeout": 60}, "postgresql": {"connect_timeout": 10}, "mysql": {"connect_timeout": 10}}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(url, engine_kwargs={"connect_args": connect[dialect]} if dialect in connect else None,
                                  heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
        except ImportError as exc:
            raise DataError(f"storage '{shown_url(url)}': its database driver is not installed ({exc}); for "
                            f"postgresql:// URLs pip install 'defectlab[tune]'") from None
        except (SQLAlchemyError, ValueError) as exc:
            # two workers making the tables of a new storage at once: the second finds them made
            if attempt < 2 and (isinstance(exc, IntegrityError) or "already exists" in str(exc)):
                time.sleep(1 + attempt)
                continue
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise DataError(f"storage '{shown_url(url)}' cannot be reached: {reason}. Check the URL (an Optuna storage "
                            f"URL such as sqlite:///path/tune.db or postgresql://user@host/db), that the server "
                            f"runs and that the database exists") from None


def counted(trial: Any) -> bool:
    """Whether a trial takes a place of the study's limit: every trial but those that never trained (over the
    limit) or were cut off by their worker's end (interrupted, or failed by a missing heartbeat)."""
    from optuna.trial import TrialState

    return trial.state != TrialState.FAIL or "error" in trial.user_attrs


def within_limit(study: Any, trial: Any, limit: int) -> bool:
    """Whether ``trial`` is among the first ``limit`` counted trials. Numbers are given in order by the storage,
    so two workers that ask at once never both get the last place."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and counted(t)) < limit


def tune(config: str | Path | Mapping[str, Any], params: Mapping[str, Any] | Sequence[str] = (), *,
         out: str | Path | None = None, overrides: Sequence[str] = (),
         on_trial: Callable[[dict[str, Any]], None] | None = None, **settings: Any) -> Tuning:
    """Search ``params`` (key -> spec, or ``KEY=SPEC`` texts) over ``config`` with Optuna and return the study.

    ``settings`` are keys of the ``[tune]`` table (:func:`tune_settings`: trials, timeout, metric,
    direction, storage, study, seed, pruning, ...); they and ``params`` are laid over the config's own
    table. ``out`` (default runs/tune-<time>) holds a folder per trial, the SQLite study unless
    ``storage`` is given, tune.json, best.toml and report.html; a folder of the same study is continued.
    ``on_trial`` gets each finished trial's record.
    """
    from defectlab.plugin_system.config import apply_overrides, load_toml
    from defectlab.runs.run import removed_if_unstarted
    from defectlab.workflows.train import check_config, resolved_settings

    optuna = tune_extra()
    source = str(config) if isinstance(config, (str, Path)) else "config"
    values = apply_overrides(load_toml(config) if isinstance(config, (str, Path)) else copy.deepcopy(dict(config)),
                             list(overrides))
    table = values.setdefault("tune", {})
    if isinstance(table, dict):
        table.update(settings)
        if params:
            table["params"] = {**(table.get("params") or {}), **param_table(params)}
    check_config(values, source)
    if values.get("stages"):
        raise ConfigError(["stages: tune searches one training; remove [[stages]] (or tune one stage's config on its "
                           "own)"], source)
    options = resolved_settings(values.pop("tune"), tune_settings)
    spaces = [parse_space(key, spec, f"tune.params.{key}") for key, spec in (options["params"] or {}).items()]
    if not spaces:
        raise ConfigError(["tune.params: no search space; give --param KEY=SPEC (e.g. --param "
                           "train.lr=log:1e-5:1e-2) or a [tune.params] table"], source)
    for space in spaces:  # every end of every range and every choice is a config that validates
        for value in space.ends():
            check_config(with_values(values, {space.key: value}), f"{source} with {space.key} = {value!r}")
    values, metric, direction = scored_config(values, options, source)
    name = options["study"] or (Path(config).stem if isinstance(config, (str, Path)) else "tune")
    folder, made = claim(out, name, options["storage"])
    with removed_if_unstarted(folder, made), quiet(optuna):  # a failed start leaves no folder behind
        url = options["storage"] or f"sqlite:///{(folder / STUDY_FILE).resolve()}"
        study = optuna.create_study(
            storage=open_storage(url), study_name=name, direction=direction, load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=options["seed"]),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=options["prune_startup_trials"],
                                               n_warmup_steps=options["prune_warmup_epochs"])
            if options["pruning"] else optuna.pruners.NopPruner())
        join(study, {"config": values, "params": [asdict(s) for s in spaces], "metric": metric,
                     "direction": direction}, shown_url(url))
        result = Tuning(folder, name, shown_url(url), options["storage"] and shown_url(options["storage"]), metric,
                        direction, [s.key for s in spaces])
        try:
            run_study(study, values, spaces, metric, options, folder, on_trial)
        finally:  # the study so far is written even when a trial is interrupted
            write_tuning(study, result, values, source)
        return result


@contextmanager
def quiet(optuna: Any) -> Iterator[None]:
    """Optuna's own log lines off (each trial is reported by ``on_trial``, a failed one in its run.json)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def scored_config(values: dict[str, Any], options: Mapping[str, Any], source: str) -> tuple[dict[str, Any], str, str]:
    """The config whose train.monitor is the metric, the metric (default the monitor) and the direction.

    The metric must be one that an epoch's record holds: this builds the config's components and
    scores one validation batch with the untrained model to learn the names (:func:`epoch_metrics`).
    """
    from defectlab.training.settings import TrainSettings
    from defectlab.workflows.train import build_stage

    resolved, data, model, loss, evaluators = build_stage(values)
    train = resolved["train"]
    metric = options["metric"] or train["monitor"]
    written = epoch_metrics(data, model, loss, evaluators)
    if written is not None and metric not in written:
        raise ConfigError([f"tune.metric: no evaluator of this config writes '{metric}'{did_you_mean(metric, written)} "
                           f"(an epoch's record has {', '.join(written)})"], source)
    mode = train["mode"] if metric == train["monitor"] else "auto"  # train.mode is the monitor's
    minimise = TrainSettings(**{**train, "monitor": metric, "mode": mode}).minimise
    direction = options["direction"] if options["direction"] != "auto" else ("minimize" if minimise else "maximize")
    changed = {"train.monitor": metric} if metric != train["monitor"] else {}
    if minimise != (direction == "minimize") or mode != train["mode"]:
        changed["train.mode"] = "min" if direction == "minimize" else "max"
    return with_values(values, changed), metric, direction


def claim(out: str | Path | None, study: str, storage: str | None) -> tuple[Path, bool]:
    """The tune folder, new or the same study's to continue (its tune.json names it); and whether it is made here."""
    from defectlab.plugin_system.files import write_json
    from defectlab.runs.run import new_run_dir

    storage = None if storage is None else shown_url(storage)
    saved = json.loads((Path(out) / TUNE_FILE).read_text()) if out and (Path(out) / TUNE_FILE).is_file() else {}
    if "study" in saved:  # a tune folder (tune-oii's tune.json is refused by new_run_dir)
        if (saved["study"], saved.get("storage_given")) == (study, storage):
            return Path(out), False
        raise DataError(f"'{out}' holds the trials of study '{saved['study']}' in "
                        f"{saved.get('storage_given') or 'its own study.db'}; choose another --out, or give the same "
                        f"--study and --storage to continue it")
    made = out is None or not Path(out).exists()
    folder = new_run_dir("tune", out)
    write_json(folder / TUNE_FILE, {"study": study, "storage_given": storage})
    return folder, made


def join(study: Any, search: dict[str, Any], url: str) -> None:
    """Record the search on a new study; on an existing one, refuse a search that differs from its own."""
    search = json.loads(json.dumps(search, default=str))
    saved = study.user_attrs.get("search")
    if saved is None and study.get_trials(deepcopy=False):
        raise DataError(f"study '{study.study_name}' in '{url}' was not made by defectlab tune; give another --study")
    if saved is None:
        study.set_user_attr("search", search)
    elif saved != search:
        differ = [k for k in search if saved.get(k) != search[k]]
        raise DataError(f"study '{study.study_name}' in '{url}' searches another {' and '.join(differ)}; give the same "
                        f"config, params and metric to continue it, or another --study for a new search")


def run_study(study: Any, config: dict[str, Any], spaces: list[Space], metric: str, options: Mapping[str, Any],
              folder: Path, on_trial: Callable[[dict[str, Any]], None] | None) -> None:
    """Train trials until the study has ``trials`` of them (with every other worker's) or the timeout is past."""
    import optuna
    from defectlab.runs.run import Run
    from defectlab.workflows.train import train

    limit = options["trials"]

    def objective(trial: Any) -> float:
        if not within_limit(study, trial, limit):
            trial.set_user_attr("over_limit", True)
            study.stop()
            raise OverLimit(f"the study had its {limit} trials")
        trial_folder = folder / f"trial-{trial.number}"
        trial.set_user_attr("folder", str(trial_folder.resolve()))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial_config = with_values(config, {space.key: space.suggest(trial) for space in spaces})
        try:
            run = train(trial_config, out=trial_folder, callbacks=[PruneTrial(trial, metric)])
        except DefectlabError as exc:
            if (trial_folder / "run.json").is_file() and Run(trial_folder).status.get("status") == "interrupted":
                raise TrainingError(f"trial {trial.number} was interrupted ({trial_folder}); run the same command "
                                    f"again to continue the study") from None
            trial.set_user_attr("error", str(exc))
            raise TrialFailed(str(exc)) from exc
        if run.status.get("status") == "pruned":
            raise optuna.TrialPruned(run.status.get("message", ""))
        best = run.status.get("best") or {}
        if best.get("monitor") != metric or not isinstance(best.get("value"), (int, float)) or \
                not math.isfinite(best["value"]):
            message = f"no finite {metric} in any epoch of {trial_folder} (its best: {best})"
            trial.set_user_attr("error", message)
            raise TrialFailed(message)
        return float(best["value"])

    def after(study: Any, trial: Any) -> None:
        if "over_limit" not in trial.user_attrs and on_trial is not None:
            on_trial(trial_record(trial))
        if sum(1 for t in study.get_trials(deepcopy=False) if counted(t)) >= limit:
            study.stop()

    if sum(1 for t in study.get_trials(deepcopy=False) if counted(t)) >= limit:
        return
    timeout = None if options["timeout"] is None else seconds(options["timeout"], "tune.timeout")
    study.optimize(objective, timeout=timeout, catch=(OverLimit, TrialFailed), callbacks=[after])


# --- what a study writes ---------------------------------------------------------------------------

def trial_record(trial: Any) -> dict[str, Any]:
    """A trial from the storage as JSON: number, state, value, params, epochs reported and the last epoch's
    metric, run folder, worker (host:pid), error."""
    epochs = max(trial.intermediate_values, default=None)
    return {"number": trial.number, "state": trial.state.name.lower(),
            "value": trial.value if trial.state.name == "COMPLETE" else None, "params": dict(trial.params),
            "epochs": epochs, "last": None if epochs is None else trial.intermediate_values[epochs],
            "folder": trial.user_attrs.get("folder"), "worker": trial.user_attrs.get("worker"),
            "error": trial.user_attrs.get("error")}


def write_tuning(study: Any, result: Tuning, config: dict[str, Any], source: str) -> None:
    """tune.json, best.toml (the config with the best trial's values), history.png, importance.png (once two
    complete trials differ) and report.html (the trials that ran on this machine side by side) into the folder."""
    import tomli_w
    from defectlab.plugin_system.files import write_json, write_text
    from defectlab.runs.report import write_comparison
    from defectlab.runs.run import Run
    from optuna.trial import TrialState

    folder = result.folder
    result.trials = [trial_record(t) for t in study.get_trials(deepcopy=False) if "over_limit" not in t.user_attrs]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        result.best = trial_record(best)
        result.files["best"] = write_text(folder / "best.toml", tomli_w.dumps(with_values(config, best.params)))
    figures = [plot_history(result, folder / "history.png")]
    if len({t.value for t in complete}) >= 2:  # importances share out the metric's variance: none, none to share
        figures.append(plot_importance(study, folder / "importance.png"))
    result.files.update(zip(("history", "importance"), figures))
    runs = [Run(t["folder"]) for t in result.trials if t["folder"] and (Path(t["folder"]) / "config.json").is_file()]
    labels = {Path(t["folder"]).name: {"trial": t["number"], "state": t["state"], "value": t["value"], **t["params"]}
              for t in result.trials if t["folder"]}
    result.files["report"] = write_comparison(runs, folder, title=f"tuning of {source}: study {result.study}, "
                                              f"{result.direction} {result.metric}", labels=labels,
                                              figures=figures).report
    write_json(folder / TUNE_FILE, result.to_dict())


def plot_history(result: Tuning, path: Path) -> Path:
    """Each trial's metric by trial number (pruned ones at their last epoch's value) and the best so far."""
    from defectlab.plugin_system.plotting import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4), layout="constrained")
    done = [t for t in result.trials if t["state"] == "complete"]
    axis.scatter([t["number"] for t in done], [t["value"] for t in done], label="complete", zorder=3)
    pruned = [t for t in result.trials if t["state"] == "pruned" and t["last"] is not None]
    if pruned:
        axis.scatter([t["number"] for t in pruned], [t["last"] for t in pruned], marker="x",
                     color="grey", label="pruned (last epoch)", zorder=2)
    if done:
        choose = max if result.direction == "maximize" else min
        best = [choose(t["value"] for t in done[: i + 1]) for i in range(len(done))]
        axis.step([t["number"] for t in done], best, where="post", color="tab:red", label="best so far")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_xlabel("trial")
    axis.set_ylabel(result.metric)
    axis.set_title(f"optimisation history of study {result.study} ({result.direction})", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def plot_importance(study: Any, path: Path) -> Path:
    """Each parameter's share of the variance of the metric over the complete trials (Optuna's fANOVA)."""
    import optuna
    from defectlab.plugin_system.plotting import pyplot, save_figure

    importances = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 0.5 * len(importances) + 1.5), layout="constrained")
    names = list(importances)[::-1]
    axis.barh(names, [importances[n] for n in names])
    axis.set_xlabel("importance (share of the metric's variance, fANOVA)")
    axis.set_title(f"parameter importances of study {study.study_name}", fontsize=10)
    axis.grid(alpha=0.3, axis="x")
    return save_figure(figure, path)

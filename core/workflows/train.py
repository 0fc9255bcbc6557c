"""From a config (or components) to a finished run: ``defectlab train`` and ``defectlab.train``.

A training config has the sections ``data`` (a dataset and the data module's settings),
``model`` (a backbone spec), ``loss``, ``[[evaluators]]``, ``[[callbacks]]`` (listeners to the loop's
events, such as experiment trackers), ``train`` (engine settings) and, for
the staged transfer of Valle Salgado et al. 2023 §8, ``[[stages]]``: each stage is a partial config merged into
the rest, trained into its own sub-folder, and initialised from the previous stage's backbone.
Every stage is validated before the first one trains.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from defectlab.plugin_system.config import Section, validate
from defectlab.plugin_system.errors import (
    ConfigError,
    DataError,
    DefectlabError,
    ParameterError,
    did_you_mean,
)
from defectlab.plugin_system.parameters import Range
from defectlab.workflows.export import ExportError, export_run, export_settings

DEFAULT_LOSS = {"classify": {"name": "cross_entropy"}, "segment": {"name": "dibe"}}
DEFAULT_EVALUATORS = {"classify": [{"name": "classification"}], "segment": [{"name": "segmentation"}],
                      "detect": [{"name": "detection"}], "anomaly": [{"name": "anomaly"}]}
#: What best.pt is chosen by, per task, when train.monitor is left at its default (else val/loss).
TASK_MONITORS = {"detect": "val/map_50", "anomaly": "val/image_auroc"}
#: Settings that may change when a run is resumed (the rest must stay as trained).
RESUMABLE = ("epochs", "progress", "device", "patience")


def data_settings_function() -> Any:
    from defectlab.data.data_module import DataModule

    return DataModule


def train_settings_function() -> Any:
    from defectlab.training.settings import TrainSettings

    return TrainSettings


def pretrain_settings(*, picture_every: Annotated[int, Range(0)] = 5) -> None:
    """The ``[pretrain]`` table of a config with an ``[ssl]`` objective.

    Args:
        picture_every: draw what the objective does with a batch (MAE: images, masks and
            reconstructions) every this many epochs and after the last one; 0: never.
    """


def tune_settings_function() -> Any:
    from defectlab.workflows.tune import tune_settings

    return tune_settings


def train_schema() -> dict[str, Section]:
    """Sections of a training config (the data and train tables are checked against their classes); ``[tune]``
    is the search of ``defectlab tune``, which ``train`` leaves alone."""
    return {
        "data": Section(settings=data_settings_function(), required=True),
        "model": Section(kind="backbone", required=True),
        "loss": Section(kind="loss"),
        "evaluators": Section(kind="evaluator", many=True),
        "callbacks": Section(kind="callback", many=True),
        "train": Section(settings=train_settings_function()),
        "ssl": Section(kind="ssl", supplied=("encoder",)),
        "pretrain": Section(settings=pretrain_settings),
        "stages": Section(value_type=list[dict]),
        "export": Section(settings=export_settings),
        "tune": Section(settings=tune_settings_function()),
    }


def describe_section(section: str, table: str | None = None) -> dict[str, Any]:
    """The settings of a config section with settings ('data', 'train', 'pretrain', 'export') or of one of
    the [train] tables ('ema', 'mixup', 'tail_synthesis'), as ``defectlab show`` prints a component."""
    from defectlab.plugin_system.parameters import description_of, parameters_of, summary_of
    from defectlab.training.settings import SettingsTable

    from defectlab.plugin_system.kinds import KINDS

    sections = {name: part.settings for name, part in train_schema().items() if part.settings is not None}
    if section not in sections:
        raise ParameterError(f"'{section}' is neither a kind nor a config section with settings"
                             f"{did_you_mean(section, [*KINDS, *sections])} (kinds: {', '.join(KINDS)}; sections: "
                             f"{', '.join(sections)})")
    target, name = sections[section], section
    if table is not None:
        tables = {p.name: check.settings for p in parameters_of(target) for check in p.checks
                  if isinstance(check, SettingsTable)}
        if table not in tables:
            listed = f" (tables: {', '.join(tables)})" if tables else ""
            raise ParameterError(f"[{section}] has no table '{table}'{did_you_mean(table, tables)}{listed}")
        target, name = tables[table], f"{section}.{table}"
    return {"kind": "settings", "name": name, "summary": summary_of(target),
            "parameters": [p.to_dict() for p in parameters_of(target)], "doc": description_of(target)}


def merged(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it: tables merge key by key, anything else is replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def stage_configs(config: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, full config) of every stage; a config without stages is one stage named ''.

    A stage after the first does not inherit ``model.weights``: its backbone comes from the
    stage before (``train.init_from``), unless it sets weights of its own.
    """
    base = {k: v for k, v in config.items() if k != "stages"}
    stages = config.get("stages") or []
    if not stages:
        return [("", base)]
    result, names = [], set()
    for index, stage in enumerate(stages):
        stage = dict(stage)
        name = str(stage.pop("name", f"stage{index + 1}"))
        if not name or "/" in name or name in names:
            raise ConfigError([f"stages.{index}.name: {name!r} must be a unique folder name"])
        names.add(name)
        config = merged(base, stage)
        if index and "weights" not in stage.get("model", {}) and isinstance(config.get("model"), Mapping):
            config["model"].pop("weights", None)  # a later stage's backbone comes from the stage before
        result.append((name, config))
    return result


def check_config(config: Mapping[str, Any], source: str = "config") -> None:
    """Every problem of a training config (all stages), raised at once as a ConfigError."""
    problems: list[str] = []
    try:
        stages = stage_configs(config)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source) from None
    for name, stage in stages:
        where = f"stages.{name}." if name else ""
        found = validate(stage, train_schema())
        if isinstance(stage.get("train", {}), Mapping) and not any(p.startswith("train.") for p in found):
            found.extend(_settings_problems(stage.get("train", {})))
            init_from = stage.get("train", {}).get("init_from")
            if init_from and str(init_from).lower() not in ("none", "null") and \
                    not Path(init_from).expanduser().exists():
                found.append(f"train.init_from: '{init_from}' is neither a run directory nor a weights file")
        data = stage.get("data")
        if isinstance(data, Mapping):
            found.extend(_channel_problems(data, stage.get("model")))
            if "dataset" not in data:
                found.append("data.dataset: required: a path, NAME, NAME:VALUE or a {name = ...} table")
            elif isinstance(data["dataset"], Mapping):
                found.extend(_spec_problems("dataset", data["dataset"], "data.dataset"))
        problems.extend(where + p for p in found if where + p not in problems)
    if problems:
        raise ConfigError(problems, source)


def _settings_problems(values: Mapping[str, Any]) -> list[str]:
    """What the [train] table breaks across its settings (warm-up longer than the training, ...)."""
    from defectlab.training.settings import TrainSettings

    try:
        TrainSettings(**resolved_settings(values, TrainSettings))
    except ParameterError as exc:
        return [str(exc)]
    return []


def _channel_problems(data: Mapping[str, Any], model: Any) -> list[str]:
    """data.channels and model.in_chans, when both are set, must agree (either alone is followed by the other)."""
    in_chans = model.get("in_chans") if isinstance(model, Mapping) else None
    channels = data.get("channels")
    if in_chans is None or channels is None or str(in_chans) == str(channels):
        return []
    return [f"model.in_chans: {in_chans} differs from data.channels = {channels}; the model would get "
            f"{channels}-channel images. Set one of them (the other follows), or both alike"]


def _spec_problems(kind: str, spec: Mapping[str, Any], where: str) -> list[str]:
    from defectlab.plugin_system.components import resolve_spec

    try:
        component, params = resolve_spec(kind, spec, where)
    except DefectlabError as exc:
        return [str(exc) if str(exc).startswith(where) else f"{where}: {exc}"]
    return component.check_params(params, where)[1]


def resolved_settings(values: Mapping[str, Any], function: Any) -> dict[str, Any]:
    """Every setting of ``function`` with the given values laid over its defaults."""
    from defectlab.plugin_system.parameters import parameters_of

    result = {}
    for parameter in parameters_of(function):
        if parameter.name in values:
            result[parameter.name] = parameter.coerce(values[parameter.name], parameter.name)
        elif not parameter.required:
            result[parameter.name] = parameter.default
    return result


def build_stage(config: Mapping[str, Any], splits_csv: Path | None = None) -> tuple[dict[str, Any], Any, Any, Any, list[Any]]:
    """(resolved config, data module, model, loss, evaluators) of one stage's config."""
    from defectlab.data.data_module import DataModule
    from defectlab.plugin_system.components import create, resolve_spec
    from defectlab.training.loop import seed_everything
    from defectlab.training.settings import TrainSettings
    from defectlab.training.tta import TASKS as TTA_TASKS

    settings = TrainSettings(**resolved_settings(config.get("train", {}), TrainSettings))
    seed_everything(settings.seed)
    component, model_params = resolve_spec("backbone", config["model"], "model")
    defaults = {p.name: p.default for p in component.parameters if not p.required}
    data_values = dict(config["data"])
    tasks = getattr(component.obj, "tasks", None)
    if tasks is not None and tuple(tasks) == ("anomaly",):  # fitted on good images, as they are
        data_values.setdefault("task", "anomaly")
        data_values.setdefault("augment", ())
    if "ssl" in config:  # pretraining reads images only; a folder is read as plain images, whatever is in it
        data_values["task"] = "pretrain"
        data_values.setdefault("augment", ())  # the objective makes its own views
        if isinstance(data_values["dataset"], str) and Path(data_values["dataset"]).is_dir():
            data_values["dataset"] = {"name": "images", "root": data_values["dataset"]}
    # the model's input channels and the data's channels follow whichever of the two is set
    in_chans = int(model_params.get("in_chans", data_values.get("channels", defaults.get("in_chans", 3))))
    data_values.setdefault("channels", in_chans)
    if splits_csv is not None:
        data_values["splits_csv"] = str(splits_csv)
    data = DataModule(**data_values)
    needed = "embed" if data.task == "pretrain" else data.task
    if tasks is not None and needed not in tasks:
        raise ConfigError([f"model.name: '{component.name}' is a backbone for {', '.join(tasks)}, but the data "
                           f"are for '{needed}'; pick a {needed} backbone (`defectlab list backbone`)"])
    classes = len(data.classes)
    num_classes = classes if data.task in ("classify", "detect") or classes > 2 else 1
    if data.task == "anomaly":  # one score per image: how far from good
        num_classes = 1
    if data.task == "pretrain":  # the encoder's head is never trained, and is left behind by init_from
        num_classes = 2
    model_params = {**model_params, "in_chans": in_chans}
    model_params.setdefault("num_classes", num_classes)
    if "img_size" in defaults:  # a ViT's position embeddings are made for the data's image size
        model_params.setdefault("img_size", data.transform.size[0])
    model = component.build(model_params, where="model")
    resolved = {
        "data": {"dataset": data_values["dataset"], **resolved_settings(data_values, DataModule)},
        "model": {"name": component.name, **model_params},
        "train": settings.to_dict(),
    }
    resolved["data"].pop("splits_csv", None)
    if config.get("callbacks"):
        if hasattr(model, "train_externally"):
            raise ConfigError([f"callbacks: '{component.name}' trains with its own engine, which fires none of the "
                               f"loop's events; remove [[callbacks]]"])
        resolved["callbacks"] = [_as_spec(spec) for spec in config["callbacks"]]
    if "export" in config:
        if data.task == "pretrain":
            raise ConfigError(["export: a pretraining run has no trained head to export; export the run you train "
                               "on its encoder (--init-from)"])
        resolved["export"] = resolved_settings(config["export"], export_settings)
    if settings.tta != "none" and data.task not in TTA_TASKS:
        raise ConfigError([f"train.tta: test-time augmentation is for classification and segmentation only; the "
                           f"data are for '{data.task}'. Remove it from [train]"])
    if settings.logit_adjustment and data.task != "classify":
        raise ConfigError([f"train.logit_adjustment: a logit adjustment is for classifiers only; the data are for "
                           f"'{data.task}'. Remove it from [train]"])
    if data.task == "pretrain":
        from defectlab.training.objective import ObjectiveLoss, ObjectiveModel

        if len(data.splits["train"]) < data.batch_size:
            raise DataError(f"the training split has {len(data.splits['train'])} images, fewer than one batch of "
                            f"{data.batch_size}; lower data.batch_size or give more images")

        objective = create("ssl", config["ssl"], encoder=model)
        resolved.update(ssl=_as_spec(config["ssl"]), pretrain=resolved_settings(config.get("pretrain", {}),
                                                                                   pretrain_settings))
        return resolved, data, ObjectiveModel(objective), ObjectiveLoss(), []
    for name, what in (("tail_synthesis", "makes virtual features for a classifier's head"),
                       ("mixup", "mixes the images and class labels of a classifier's batches")):
        if getattr(settings, name) is not None and data.task != "classify":
            raise ConfigError([f"train.{name}: {what}; the data are for '{data.task}'. Remove it from [train]"])
    if settings.ema is not None and data.task == "anomaly":
        raise ConfigError([f"train.ema: '{component.name}' is fitted in one pass, so there are no steps to average; "
                           f"remove train.ema"])
    evaluator_specs = config["evaluators"] if config.get("evaluators") is not None else DEFAULT_EVALUATORS[data.task]
    if data.task in ("detect", "anomaly"):  # a detector computes its own losses; an anomaly model has none
        what = "is a detector and computes its own losses" if data.task == "detect" else "is fitted, not trained " \
            "by a loss"
        if config.get("loss"):
            raise ConfigError([f"loss: '{component.name}' {what}; remove the [loss] section (see `defectlab show "
                               f"backbone {component.name}` for its settings)"])
        if "monitor" not in config.get("train", {}):
            resolved["train"]["monitor"] = TASK_MONITORS[data.task]
        if data.task == "anomaly":
            if config.get("train", {}).get("epochs", 1) != 1:
                raise ConfigError([f"train.epochs: '{component.name}' is fitted in one pass over the good images; "
                                   f"remove train.epochs (or set it to 1)"])
            resolved["train"].update(epochs=1, warmup_epochs=0)
        resolved.update(evaluators=[_as_spec(s) for s in evaluator_specs])
        return resolved, data, model, None, [create("evaluator", spec) for spec in evaluator_specs]
    loss_spec = config.get("loss") or DEFAULT_LOSS[data.task]
    resolved.update(loss=_as_spec(loss_spec), evaluators=[_as_spec(s) for s in evaluator_specs])
    loss = create("loss", loss_spec)
    if settings.mixup is not None and not getattr(loss, "soft_targets", False):
        raise ConfigError([f"train.mixup: the loss '{_as_spec(loss_spec)['name']}' takes class indices only, but mixed "
                           f"batches have soft targets (class probabilities); use cross_entropy, multiclass_focal or "
                           f"logit_adjusted, or remove train.mixup"])
    return resolved, data, model, loss, [create("evaluator", spec) for spec in evaluator_specs]


def _as_spec(spec: Any) -> dict[str, Any]:
    return {"name": spec} if isinstance(spec, str) else dict(spec)


def checkpoint_description(resolved: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """What a checkpoint needs to rebuild its model and preprocessing without the config; a classifier's also has
    the training split's class counts (the prior that ``train.logit_adjustment`` divides out)."""
    model = {**resolved["model"], "weights": None}
    description = {"model_spec": model, "task": data.task, "classes": list(data.classes),
                   "transform": {k: resolved["data"][k] for k in ("image_size", "channels", "normalize")}}
    if data.task == "classify":
        description["class_counts"] = [int(n) for n in data.class_counts("train")]
    return description


def train(config: str | Path | Mapping[str, Any] | None = None, *, out: str | Path | None = None,
          overrides: Sequence[str] = (), resume: str | Path | None = None, init_from: str | Path | None = None,
          linear_probe: bool | None = None, callbacks: Sequence[Any] = (), overwrite: bool = False) -> Any:
    """Train from a TOML file or a config dict (or resume a run) and return the finished :class:`Run`.

    ``overrides`` are ``KEY=VALUE`` strings as on the command line; ``init_from`` and
    ``linear_probe`` set ``train.init_from`` / ``train.linear_probe``. A staged config returns
    the top run, whose ``stages`` are the stage runs. An ``out`` folder that holds a run is
    refused unless ``overwrite`` is set.
    """
    from defectlab.plugin_system.config import apply_overrides, load_toml
    from defectlab.runs.run import new_run_dir, removed_if_unstarted
    from defectlab.training.distributed import one_folder, world_from_environment

    if resume is not None:
        return _resume(Path(resume), overrides, callbacks)
    if config is None:
        raise DefectlabError("train needs a config (a TOML file or a dict) or resume=RUN")
    source = str(config) if isinstance(config, (str, Path)) else "config"
    values = load_toml(config) if isinstance(config, (str, Path)) else copy.deepcopy(dict(config))
    values = apply_overrides(values, list(overrides))
    if init_from is not None:
        values.setdefault("train", {})["init_from"] = str(init_from)
    if linear_probe is not None:
        values.setdefault("train", {})["linear_probe"] = linear_probe
    check_config(values, source)
    one_folder(world_from_environment(), out)
    made = world_from_environment().is_main and not (out is not None and Path(out).exists())
    folder = new_run_dir("train", out, overwrite=overwrite, check=world_from_environment().is_main)
    stages = stage_configs(values)
    with removed_if_unstarted(folder, made):  # a failed start leaves no empty run folder behind
        if stages[0][0] == "":
            return _train_stage(values, folder, callbacks)
        _write_top(folder, values, [name for name, _ in stages])
        return _run_stages(folder, stages, callbacks, start=0)


def _write_top(folder: Path, values: Mapping[str, Any], names: list[str]) -> None:
    from defectlab.plugin_system.files import write_json
    from defectlab.runs.run import environment_versions

    write_json(folder / "config.json", {"config": values, "stages": names, "versions": environment_versions()})


def _run_stages(folder: Path, stages: list[tuple[str, dict[str, Any]]], callbacks: Sequence[Any], start: int,
                resume_first: bool = False) -> Any:
    from defectlab.runs.report import write_comparison
    from defectlab.runs.run import Run

    previous = folder / stages[start - 1][0] if start else None
    for index in range(start, len(stages)):
        name, stage = stages[index]
        stage = copy.deepcopy(stage)
        if previous is not None and not stage.get("train", {}).get("init_from"):
            stage.setdefault("train", {})["init_from"] = str(previous)
        if index == start and resume_first:
            _resume(folder / name, (), callbacks)
        else:
            _train_stage(stage, folder / name, callbacks)
        previous = folder / name
    top = Run(folder)
    write_comparison(top.stages, folder, title=f"stages of {folder.name}")
    return top


def _train_stage(config: Mapping[str, Any], folder: Path, callbacks: Sequence[Any], resume: bool = False) -> Any:
    from defectlab.plugin_system.components import create
    from defectlab.runs.run import write_resolved_config
    from defectlab.training.distributed import world_from_environment
    from defectlab.training.loop import Trainer
    from defectlab.training.settings import TrainSettings

    folder.mkdir(parents=True, exist_ok=True)
    splits = folder / "splits.csv"
    resolved, data, model, loss, evaluators = build_stage(config, splits if resume and splits.is_file() else None)
    settings = TrainSettings(**resolved["train"])
    callbacks = [*callbacks, *(create("callback", spec) for spec in resolved.get("callbacks", []))]
    if not resume and world_from_environment().is_main:  # under torchrun only rank 0 writes
        write_resolved_config(folder, resolved, settings.seed)
        data.save_splits(splits)
    if hasattr(model, "train_externally"):  # a network with its own engine (yolov5: ultralytics' trainer)
        from defectlab.runs.report import write_run_report

        run = model.train_externally(folder, data, settings, resolved, resume, checkpoint_description(resolved, data))
        write_run_report(folder)
        _export_finished(folder, resolved)
        return run
    if data.task == "pretrain":
        callbacks = [*callbacks, *pretrain_callbacks(model.objective, data, folder, resolved)]
    trainer = Trainer(model, loss, data, folder, evaluators, settings, callbacks,
                      describe=checkpoint_description(resolved, data))
    run = trainer.fit(resume=resume)
    if data.task == "pretrain" and world_from_environment().is_main:
        export_encoder(model, folder)
    _export_finished(folder, resolved)
    return run


def _export_finished(folder: Path, resolved: Mapping[str, Any]) -> None:
    """The files an ``[export]`` table asks for, written by the main process once the run has finished."""
    from defectlab.training.distributed import world_from_environment

    if resolved.get("export") and world_from_environment().is_main:
        try:
            export_run(folder, resolved["export"])
        except DefectlabError as exc:
            raise ExportError(f"training finished (the run is in {folder}), but [export] failed: {exc}") from exc


def pretrain_callbacks(objective: Any, data: Any, folder: Path, resolved: Mapping[str, Any]) -> list[Any]:
    """After each epoch: the objective's pictures every ``picture_every`` epochs, and its collapse
    warning (printed, and kept in run.json for the report)."""
    import logging

    every = resolved["pretrain"]["picture_every"]
    log = logging.getLogger("defectlab.pretrain")

    def pictures(trainer: Any, record: Mapping[str, Any]) -> None:
        epoch = record["epoch"]
        if not trainer.world.is_main or not hasattr(objective, "write") or not every or (
                epoch % every and epoch != trainer.settings.epochs):
            return
        split = "val" if "val" in data.splits else "train"
        images = next(iter(data.loader(split)))["image"][:8].to(trainer.device)
        objective.write(folder / "pictures" / f"epoch-{epoch}", images)

    def collapse(trainer: Any, record: Mapping[str, Any]) -> None:
        message = objective.collapse_warning() if hasattr(objective, "collapse_warning") else None
        if message and trainer.world.is_main:
            log.warning("epoch %s: %s", record["epoch"], message)
            trainer.warnings.append(f"epoch {record['epoch']}: {message}")

    return [pictures, collapse]


def export_encoder(model: Any, folder: Path) -> Path:
    """``encoder.pt``: the objective's encoder alone with the best weights, what ``--init-from`` loads."""
    from defectlab.training.checkpoints import ENCODER_FILE, checkpoint_path, load_checkpoint, save_checkpoint

    model.load_state_dict(load_checkpoint(checkpoint_path(folder))["model"])
    return save_checkpoint(folder / ENCODER_FILE, {"model": model.objective.export_encoder().state_dict()})


def _resume(folder: Path, overrides: Sequence[str], callbacks: Sequence[Any]) -> Any:
    """Continue a killed run (or the unfinished stages of a staged one) from last.pt."""
    import json

    from defectlab.plugin_system.config import apply_overrides
    from defectlab.runs.run import Run
    from defectlab.training.distributed import world_from_environment

    world = world_from_environment()
    if not world.is_main and not (folder / "config.json").is_file():  # every process reads the run to resume it
        raise DataError(f"'{folder}' holds no run on the machine of process {world.rank}: under torchrun on several "
                        f"machines the run folder must be on a filesystem every node sees (NFS, Lustre, a shared "
                        f"volume)")
    run = Run(folder)
    saved = json.loads((folder / "config.json").read_text())
    if saved.get("stages"):
        stages = stage_configs(saved["config"])
        done = [s for s in run.stages if (s.folder / "run.json").is_file() and s.status.get("status") == "finished"]
        start = len(done)
        if start == len(stages):
            raise DataError(f"every stage of '{folder}' has finished; nothing to resume")
        started = (folder / stages[start][0] / "last.pt").is_file()
        return _run_stages(folder, stages, callbacks, start, resume_first=started)
    config = run.config
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if not (key.startswith("train.") and key.split(".", 1)[1] in RESUMABLE):
            raise DataError(f"--set {key}: a resumed run keeps its config; only train.{', train.'.join(RESUMABLE)} "
                            f"may change")
    config = apply_overrides(config, list(overrides))
    if not (folder / "last.pt").is_file():
        raise DataError(f"'{folder}' has no last.pt (it stopped before its first epoch ended); start it again "
                        f"with defectlab train")
    if run.status.get("status") == "finished" and config["train"]["epochs"] <= run.status.get("epochs_done", 0):
        raise DataError(f"'{folder}' has finished all {run.status.get('epochs_done')} epochs; to train longer, "
                        f"resume with --set train.epochs=N (N > {run.status.get('epochs_done')})")
    return _train_stage(config, folder, callbacks, resume=True)

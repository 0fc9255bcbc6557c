"""MLflow tracking of a training: the resolved config as parameters, each epoch's numbers as metrics, the run
folder's files as artifacts, defectlab's and the plugins' versions as tags.

mlflow is an optional extra: without it the callback is refused when it is built, before the training starts,
and so is a tracking server that does not answer. The MLflow run's id is kept in the run folder's mlflow.json:
a resumed run goes on in the same MLflow run, and ``defectlab mlflow-log RUN`` adds the files written after
the training (exported models) to it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from defectlab import Callback, DataError, DefectlabError, Run, write_json

from defectlab_plugins.trackers.values import final_scores, flattened, numbers

INSTALL = "pip install 'defectlab[mlflow]'"
#: The run folder's file that names the MLflow run it logs to.
RECORD = "mlflow.json"
#: The run folder's files (and folders) logged as artifacts where they exist: the report and its pictures, the
#: records, the best weights, a pretraining's encoder, and the models exported into the folder.
ARTIFACTS = ("report.html", "curves.png", "eval", "config.json", "run.json", "metrics.jsonl", "best.pt", "encoder.pt",
             "*.onnx", "*.torchscript")
#: MLflow's limits: the characters of a parameter's value and of a name; parameters and metrics in one request.
VALUE_LENGTH, NAME_LENGTH, PARAMS_PER_BATCH, METRICS_PER_BATCH = 6000, 250, 100, 1000
TRUNCATED = " ... (truncated: config.json has it whole)"
#: Seconds the check of a tracking server waits for it to answer.
TIMEOUT = 5


def imported_mlflow() -> Any:
    """The mlflow package, or a DefectlabError saying how to install it."""
    try:
        import mlflow
    except ImportError as exc:
        raise DefectlabError(f"the mlflow callback needs the mlflow package ({exc}): {INSTALL}") from None
    return mlflow


def check_answers(uri: str) -> None:
    """A DefectlabError, within TIMEOUT seconds, when ``uri`` is a tracking server (http, https) that does not
    answer: mlflow's own client would retry for minutes."""
    if not uri.startswith(("http://", "https://")):
        return  # a local store
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=TIMEOUT).close()
    except urllib.error.HTTPError:
        return  # it answers: a proxy or a login in front of it may refuse the health request
    except (OSError, ValueError) as exc:
        raise DefectlabError(
            f"the MLflow tracking server {uri} does not answer ({getattr(exc, 'reason', exc)}); start it (`mlflow "
            f"server --host 127.0.0.1 --port 5000` serves http://127.0.0.1:5000), or set the mlflow callback's "
            f"tracking_uri (or MLFLOW_TRACKING_URI) to one that runs; leave both unset for the local store "
            f"mlflow.db") from None


def mlflow_name(name: str) -> str:
    """``name`` with what MLflow refuses in a metric's, parameter's or tag's name replaced by ``_``."""
    return re.sub(r"[^\w./ -]", "_", name).strip("/")[:NAME_LENGTH]


def param_value(value: Any) -> str:
    """``value`` as text that fits a parameter, cut with a note when too long."""
    text = str(value)
    return text if len(text) <= VALUE_LENGTH else text[:VALUE_LENGTH - len(TRUNCATED)] + TRUNCATED


def batches(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in requests of at most ``size``."""
    return [items[start:start + size] for start in range(0, len(items), size)]


def run_tags(run: Run) -> dict[str, str]:
    """The versions the run was trained with and its folder."""
    versions = run.versions
    tags = {"defectlab.version": versions.get("defectlab"), "defectlab.python": versions.get("python"),
            **{f"defectlab.plugin.{name}": version for name, version in versions.get("plugins", {}).items()},
            "defectlab.run_folder": str(run.folder.resolve())}
    return {mlflow_name(key): str(value) for key, value in tags.items()}


def read_record(folder: Path) -> dict[str, Any] | None:
    """The run folder's mlflow.json: tracking_uri, run_id and the last epoch logged; None without one."""
    path = folder / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def log_files(client: Any, run_id: str, folder: Path) -> list[str]:
    """Log the run folder's ARTIFACTS that exist, at their places in the folder; their names."""
    logged = []
    for pattern in ARTIFACTS:
        for path in sorted(folder.glob(pattern)):
            if path.is_dir():
                client.log_artifacts(run_id, str(path), path.name)
            else:
                client.log_artifact(run_id, str(path))
            logged.append(path.name)
    return logged


def log_run_files(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """``defectlab mlflow-log``: log the run folder's files to the MLflow run its mlflow.json names; that record
    and the names logged."""
    record = read_record(folder)
    if record is None:
        raise DataError(f"'{folder}' has no {RECORD}: it was not trained with the mlflow callback "
                        f"([[callbacks]] name = \"mlflow\")")
    imported_mlflow()
    check_answers(record["tracking_uri"])
    from mlflow import MlflowClient

    return record, log_files(MlflowClient(record["tracking_uri"]), record["run_id"], folder)


class MLflow(Callback):
    """MLflow tracking: the config as parameters, each epoch's numbers as metrics, the run's files as artifacts.

    Args:
        tracking_uri: where the runs are recorded: a tracking server (http://HOST:PORT) or a
            local store (sqlite:///FILE); default: MLFLOW_TRACKING_URI, else mlflow's own
            default, mlflow.db in the working folder.
        experiment: the MLflow experiment the run goes into (made when missing).
        run_name: the MLflow run's name; default: the run folder's name.
        artifacts: at the end, log report.html, best.pt, metrics.jsonl, config.json and the
            models exported into the run folder.
    """

    name = "mlflow"
    main_process_only = True  # one MLflow run, logged from rank 0, under torchrun

    def __init__(self, tracking_uri: str | None = None, experiment: str = "defectlab", run_name: str | None = None,
                 artifacts: bool = True):
        mlflow = imported_mlflow()
        self.uri = tracking_uri or mlflow.get_tracking_uri()  # fixed now: the default names the working folder
        check_answers(self.uri)
        self.experiment, self.run_name, self.artifacts = experiment, run_name, artifacts
        self.client: Any = None
        self.run_id = ""

    def on_fit_start(self, trainer: Any) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(self.uri)
        run = Run(trainer.folder)
        record = read_record(trainer.folder) if trainer.restored else None
        if record is not None and record["tracking_uri"] == self.uri:  # resumed: the same MLflow run goes on
            self.run_id, logged = record["run_id"], record["epoch"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = self.client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=self.run_name or run.name,
                                                 tags=run_tags(run)).info.run_id
            logged = 0
        self.log_params(run.config)
        self.save_record(trainer.folder, logged)
        for earlier in run.metrics:  # a resumed run's epochs that its MLflow run has not got
            if earlier["epoch"] > logged:
                self.on_epoch_end(trainer, earlier)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.log_metrics({k: v for k, v in numbers(record).items() if k != "epoch"}, record["epoch"])
        self.save_record(trainer.folder, record["epoch"])

    def on_fit_end(self, trainer: Any, run: Any) -> None:
        self.log_metrics(final_scores(run), trainer.epoch)
        if self.artifacts:
            log_files(self.client, self.run_id, trainer.folder)
        self.client.set_terminated(self.run_id, "FINISHED")

    def log_params(self, config: dict[str, Any]) -> None:
        """The flattened config as parameters, in batches; a resumed run keeps those it has (MLflow refuses a
        parameter's change)."""
        from mlflow.entities import Param

        known = self.client.get_run(self.run_id).data.params
        params = [Param(mlflow_name(k), param_value(v)) for k, v in flattened(config).items()]
        for batch in batches([p for p in params if p.key not in known], PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=batch)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for batch in batches([Metric(mlflow_name(k), v, now, step) for k, v in values.items()], METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch)

    def save_record(self, folder: Path, epoch: int) -> None:
        """mlflow.json: the MLflow run of the run folder and the last epoch it has."""
        write_json(folder / RECORD, {"tracking_uri": self.uri, "run_id": self.run_id, "epoch": epoch})

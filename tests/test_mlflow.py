"""The mlflow callback: what a local store and a real `mlflow server` hold after a training (the config as
parameters, metrics.jsonl's numbers per epoch, the run's files, the versions), a resumed run in the same MLflow
run, `defectlab mlflow-log` for an exported model, and the refusals: no mlflow package, no server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import defectlab as dl
import pytest
from click.testing import CliRunner
from defectlab import DataError, DefectlabError

from defectlab_plugins.trackers import mlflow as tracker
from defectlab_plugins.trackers.values import flattened

needs_mlflow = pytest.mark.skipif(find_spec("mlflow") is None,
                                  reason="the mlflow package is not installed: pip install 'defectlab[mlflow]'")


def config(data, **settings):
    return {"data": {"dataset": str(data), "image_size": 16, "batch_size": 8},
            "model": {"name": "tiny_cnn"}, "train": {"epochs": 2, "lr": 0.05, "progress": False},
            "callbacks": [{"name": "mlflow", **settings}]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder whose mlflow.db every local test shares (made once: its tables take seconds), each test in an
    experiment of its own."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def local(store, monkeypatch):
    """The working folder is the store's, with no MLFLOW_TRACKING_URI: the callback's default is mlflow.db there."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(store)
    return f"sqlite:///{store / 'mlflow.db'}"


def logged_run(uri, folder):
    """The MLflow run that the run folder's mlflow.json names, read back with MLflow's own client."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    record = json.loads((Path(folder) / "mlflow.json").read_text())
    assert record["tracking_uri"] == uri
    return client, client.get_run(record["run_id"])


def history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def artifacts(client, run_id, path=None):
    return sorted(f.path for f in client.list_artifacts(run_id, path))


def check_logged(client, mlflow_run, run):
    """The MLflow run holds the run's config, every number of metrics.jsonl at step = epoch, the final scores,
    the versions, and its files."""
    run_id, data = mlflow_run.info.run_id, mlflow_run.data
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == run.name
    assert data.params["train.lr"] == "0.05" and data.params["model.name"] == "tiny_cnn"
    assert data.params["data.image_size"] == "16" and data.params["data.val"] == "None"
    assert data.params["train.epochs"] == str(len(run.metrics)) and len(data.params) == len(flattened(run.config))
    for key in ("train/loss", "val/loss", "val/accuracy", "lr", "weight_decay", "seconds", "images_per_s"):
        assert history(client, run_id, key) == [(r["epoch"], r[key]) for r in run.metrics], key  # exactly
    assert "best" not in data.metrics and "epoch" not in data.metrics  # a flag and the step are no metrics
    assert history(client, run_id, "test/accuracy") == [(len(run.metrics), run.scores["accuracy"])]
    assert data.tags["defectlab.version"] == dl.__version__
    assert data.tags["defectlab.plugin.trackers"] == run.versions["plugins"]["trackers"]
    assert data.tags["defectlab.run_folder"] == str(run.folder.resolve())
    assert artifacts(client, run_id) == ["best.pt", "config.json", "curves.png", "eval", "metrics.jsonl",
                                         "report.html", "run.json"]
    assert "eval/test/metrics.json" in artifacts(client, run_id, "eval/test")


@needs_mlflow
def test_a_local_store_holds_the_runs_config_numbers_versions_and_files(tiny, two_classes, local, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(tracker, "PARAMS_PER_BATCH", 10)  # MLflow's 100 a request, met by the 56 parameters here
    monkeypatch.setattr(tracker, "VALUE_LENGTH", 60)  # and its 6000 characters a value, by the dataset's path
    run = dl.train(config(two_classes, experiment="local"), out=tmp_path / "run")
    client, mlflow_run = logged_run(local, run.folder)
    check_logged(client, mlflow_run, run)
    path = mlflow_run.data.params["data.dataset"]
    assert len(path) == 60 and path == str(two_classes)[:60 - len(tracker.TRUNCATED)] + tracker.TRUNCATED
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "local"


@needs_mlflow
def test_a_resumed_run_goes_on_in_the_same_mlflow_run(tiny, two_classes, store, tmp_path, monkeypatch):
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # honoured when tracking_uri is not set
    monkeypatch.chdir(tmp_path)  # where the default would be another mlflow.db (and the files go under mlruns/)
    first = dl.train(config(two_classes, experiment="resumed", run_name="first try", artifacts=False),
                     out=tmp_path / "run")
    client, before = logged_run(uri, first.folder)
    assert before.info.run_name == "first try" and artifacts(client, before.info.run_id) == []
    run = dl.train(resume=first.folder, overrides=["train.epochs=3"])
    client, after = logged_run(uri, run.folder)
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    assert [r.info.run_id for r in client.search_runs([after.info.experiment_id])] == [after.info.run_id]
    assert history(client, after.info.run_id, "train/loss") == [(r["epoch"], r["train/loss"]) for r in run.metrics]
    assert [step for step, _ in history(client, after.info.run_id, "train/loss")] == [1, 2, 3]
    assert after.data.params["train.epochs"] == "2"  # MLflow keeps a parameter's first value; config.json has 3


@needs_mlflow
def test_a_run_resumed_with_the_tracker_logs_its_earlier_epochs_too(tiny, two_classes, local, tmp_path):
    untracked = config(two_classes)
    del untracked["callbacks"]
    first = dl.train(untracked, out=tmp_path / "run")
    late = dl.create("callback", "mlflow", experiment="late")
    run = dl.train(resume=first.folder, overrides=["train.epochs=3"], callbacks=[late])
    client, mlflow_run = logged_run(local, run.folder)
    assert history(client, mlflow_run.info.run_id, "val/loss") == [(r["epoch"], r["val/loss"]) for r in run.metrics]
    assert len(run.metrics) == 3


@needs_mlflow
def test_mlflow_log_adds_an_exported_model_to_the_mlflow_run(tiny, two_classes, local, tmp_path):
    run = dl.train(config(two_classes, experiment="exported", artifacts=False), out=tmp_path / "run")
    dl.export(run.folder, "torchscript", check=False)
    result = CliRunner().invoke(dl.cli_group, ["mlflow-log", str(run.folder)])
    assert result.exit_code == 0, result.output
    client, mlflow_run = logged_run(local, run.folder)
    assert result.output == (f"logged report.html, curves.png, eval, config.json, run.json, metrics.jsonl, best.pt, "
                             f"best.torchscript to MLflow run {mlflow_run.info.run_id} at {local}\n")
    assert "best.torchscript" in artifacts(client, mlflow_run.info.run_id)
    result = CliRunner().invoke(dl.cli_group, ["mlflow-log", str(two_classes)])
    assert isinstance(result.exception, DataError) and "has no mlflow.json" in str(result.exception)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_mlflow
def test_an_unreachable_server_stops_before_training(tiny, two_classes, tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(DefectlabError, match=rf"MLflow tracking server {uri} does not answer .*mlflow server"):
        dl.train(config(two_classes, tracking_uri=uri), out=tmp_path / "run")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(DefectlabError, match="does not answer"):
        dl.train(config(two_classes), out=tmp_path / "run")
    assert time.perf_counter() - started < 30  # not mlflow's minutes of retries
    assert not (tmp_path / "run").exists()  # refused before the run folder was started


def test_without_the_mlflow_package_it_says_what_to_install(tiny, two_classes, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # the import fails as without the package
    with pytest.raises(DefectlabError, match=r"needs the mlflow package .*pip install 'defectlab\[mlflow\]'"):
        dl.create("callback", "mlflow")
    with pytest.raises(DefectlabError, match="needs the mlflow package"):
        dl.train(config(two_classes), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (a free port), its runs in an sqlite file and its artifacts in a folder
    of tmp_path; its URI, once /health answers; stopped afterwards."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "artifacts")]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@needs_mlflow
@pytest.mark.slow
def test_a_real_mlflow_server_holds_the_run(tiny, two_classes, server, tmp_path):
    run = dl.train(config(two_classes, tracking_uri=server), out=tmp_path / "run")
    client, mlflow_run = logged_run(server, run.folder)
    check_logged(client, mlflow_run, run)
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "defectlab"
    assert (tmp_path / "artifacts").is_dir()  # the server stored the files it was sent

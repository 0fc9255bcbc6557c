"""A run written by defectlab 0.1.0, before the core was split into layers, still loads everywhere.

``tests/data/run_v0_1`` is a tiny_cnn run on ``write_two_class_folder(Path("data"), per_class=12)``
whose config names its dataset relative to the working directory, as a user's config may.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.tiny_models import TinyModels, write_two_class_folder

OLD_RUN = Path(__file__).parent / "data" / "run_v0_1"


@pytest.fixture
def old_run(defectlab_plugin, tmp_path, monkeypatch):
    """A copy of the 0.1.0 run beside a regenerated copy of its data, with the working directory there."""
    defectlab_plugin(TinyModels(), "tiny_models")
    write_two_class_folder(tmp_path / "data", per_class=12)
    shutil.copytree(OLD_RUN, tmp_path / "run", ignore=shutil.ignore_patterns("README.md"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "run"


def test_evaluate_predict_and_report_take_an_old_run(old_run, run_cli, tmp_path):
    evaluated = run_cli("evaluate", str(old_run), "--split", "test", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.output)
    assert scores["samples"] == 3  # the test split saved in the old splits.csv
    assert scores["scores"]["accuracy"] == pytest.approx(1.0)  # as the old run.json recorded

    predicted = run_cli("predict", str(old_run), "data", "--out", str(tmp_path / "predictions.csv"))
    assert predicted.exit_code == 0, predicted.output
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 24

    reported = run_cli("report", str(old_run))
    assert reported.exit_code == 0 and (old_run / "report.html").is_file()


def test_resume_continues_an_old_run(old_run, run_cli):
    result = run_cli("train", "--resume", str(old_run), "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    status = json.loads((old_run / "run.json").read_text())
    assert status["status"] == "finished" and status["epochs_done"] == 3
    epochs = [json.loads(line)["epoch"] for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_init_from_an_old_run_loads_its_backbone(old_run, run_cli, tmp_path):
    config = tmp_path / "target.toml"
    config.write_text('[data]\ndataset = "data"\nimage_size = 16\nbatch_size = 8\n'
                      '[model]\nname = "tiny_cnn"\n[train]\nepochs = 1\nprogress = false\n')
    result = run_cli("train", str(config), "--init-from", str(old_run), "--out", str(tmp_path / "target"))
    assert result.exit_code == 0, result.output
    transfer = json.loads((tmp_path / "target" / "run.json").read_text())["transfer"]
    assert sorted(transfer["loaded"]) == ["features.0.bias", "features.0.weight", "features.1.bias",
                                          "features.1.num_batches_tracked", "features.1.running_mean",
                                          "features.1.running_var", "features.1.weight"]

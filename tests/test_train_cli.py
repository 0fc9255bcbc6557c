"""`defectlab train / evaluate / predict / report / validate` from the command line, on tiny data."""

from __future__ import annotations

import csv
import json

import pytest

from tests.tiny_models import write_two_class_folder


@pytest.fixture
def trained(tiny, tmp_path, run_cli):
    data = write_two_class_folder(tmp_path / "data")
    config = tmp_path / "tiny.toml"
    config.write_text(f'[data]\ndataset = "{data}"\nimage_size = 16\nbatch_size = 8\n'
                      f'[model]\nname = "tiny_cnn"\n[train]\nepochs = 2\nlr = 0.05\nprogress = false\n')
    result = run_cli("train", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    return tmp_path / "run", data, config


def test_train_prints_the_scores_and_the_report_once(tiny, two_classes, tmp_path, run_cli):
    config = tmp_path / "tiny.toml"
    config.write_text(f'[data]\ndataset = "{two_classes}"\nimage_size = 16\nbatch_size = 8\n'
                      f'[model]\nname = "tiny_cnn"\n[train]\nepochs = 2\nlr = 0.05\nprogress = false\n')
    result = run_cli("train", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"report: {tmp_path / 'run' / 'report.html'}\n"
    assert result.output.count("report:") == 1 and result.output.count("macro_f1") == 1
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs[0].endswith(" *  (* = best val/loss so far, saved as best.pt)")  # said once, on the first *
    assert sum("(* = " in line for line in result.stderr.splitlines()) == 1


def test_report_of_one_run(trained, run_cli):
    run, data, config = trained
    assert (run / "report.html").is_file()
    result = run_cli("report", str(run))
    assert result.exit_code == 0 and "report.html" in result.output


def test_evaluate_on_a_dataset_prints_and_saves_everything(trained, run_cli, tmp_path):
    run, data, _ = trained
    (data / "dark" / "dark_00.png").write_bytes(b"broken")
    result = run_cli("evaluate", str(run), "--data", str(data), "--out", str(tmp_path / "ev"))
    assert result.exit_code == 0, result.output
    for word in ("accuracy", "balanced_accuracy", "macro_f1", "confusion matrix", "F1 at its best confidence"):
        assert word in result.output
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    matrix = saved["details"]["classification"]["confusion_matrix"]
    assert sum(map(sum, matrix)) == 39  # 40 images, one unreadable
    assert (tmp_path / "ev" / "misclassified.csv").is_file()


def test_evaluate_own_split_and_json(trained, run_cli):
    run, _, _ = trained
    result = run_cli("evaluate", str(run), "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["samples"] == 6
    missing = run_cli("evaluate", str(run), "--split", "holdout")
    assert missing.exit_code == 1 and "has no 'holdout' split" in missing.output


def test_predict_writes_probabilities_and_reports_unreadable_files(trained, run_cli, tmp_path):
    run, data, _ = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"broken")
    out = tmp_path / "pred.csv"
    result = run_cli("predict", str(run), str(data / "bright"), str(broken), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 21 and rows[0].keys() >= {"path", "predicted", "confidence", "p_bright", "p_dark"}
    good = [r for r in rows if not r["error"]]
    assert all(abs(float(r["p_bright"]) + float(r["p_dark"]) - 1) < 1e-5 for r in good)
    numbers = [r[key] for r in good for key in ("confidence", "p_bright", "p_dark")]
    assert all(len(n.lstrip("-0.").replace(".", "").split("e")[0]) <= 6 for n in numbers), numbers  # 6 digits
    assert sum(r["predicted"] == "bright" for r in good) >= 18
    assert [r["path"] for r in rows if r["error"]] == [str(broken)]


def test_predict_resume_continues_a_killed_prediction_of_the_run(trained, run_cli, tmp_path):
    run, data, _ = trained
    out = tmp_path / "pred.csv"
    assert run_cli("predict", str(run), str(data), "--out", str(out), "--batch-size", "8").exit_code == 0
    whole = out.read_bytes()
    cut = whole.index(b"\r\n", len(whole) // 2) + 9
    out.write_bytes(whole[:cut])  # killed while writing a row
    result = run_cli("predict", str(run), str(data), "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    kept = whole[:cut].count(b"\r\n") - 1  # the whole rows before the cut, the header aside
    assert f"40 predicted, 0 failed ({kept} of the images by the earlier prediction)" in result.output
    assert out.read_bytes() == whole
    refused = run_cli("predict", str(run), str(data), "--out", str(out), "--resume", "--overwrite")
    assert refused.exit_code == 1 and "pass one of them" in refused.output
    other = run_cli("predict", str(run), str(data), "--out", str(out), "--resume", "--checkpoint", "last")
    assert other.exit_code == 1 and "last.pt" in other.output and "best.pt" in other.output


def test_resume_cli_and_finished_run(trained, run_cli):
    run, _, _ = trained
    again = run_cli("train", "--resume", str(run))
    assert again.exit_code == 1 and "finished all 2 epochs" in again.output
    longer = run_cli("train", "--resume", str(run), "--epochs", "3")
    assert longer.exit_code == 0, longer.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    changed = run_cli("train", "--resume", str(run), "--set", "train.lr=0.1")
    assert changed.exit_code == 1 and "keeps its config" in changed.output


def test_report_compares_runs(trained, run_cli, tmp_path):
    run, _, config = trained
    other = run_cli("train", str(config), "--out", str(tmp_path / "other"), "--set", "train.lr=0.01")
    assert other.exit_code == 0, other.output
    result = run_cli("report", str(run), str(tmp_path / "other"), "--out", str(tmp_path / "cmp"))
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [row["run"] for row in table["rows"]] == ["run", "other"]
    assert (tmp_path / "cmp" / "curves.png").is_file()


def test_validate_checks_training_configs(tiny, tmp_path, run_cli):
    path = tmp_path / "c.toml"
    path.write_text('[data]\ndataset = "elpv:mono"\nimage_sise = 3\n[model]\nname = "tiny_cnn"\n'
                    '[train]\noptimizer = "adam"\n[[stages]]\nname = "a"\n[stages.loss]\nname = "crossentropy"\n')
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    for text in ("data.image_sise", "image_size", "train.optimizer", "stages.a.loss"):
        assert text in result.output


def test_train_needs_a_config_or_resume(run_cli):
    result = run_cli("train")
    assert result.exit_code == 2 and "CONFIG" in result.output

"""`defectlab sweep`: one run per combination, resumable, one report with the scores against the first axis."""

from __future__ import annotations

import json

import defectlab as dl
import pytest

from tests.tiny_models import write_two_class_folder


def config(tmp_path, data):
    path = tmp_path / "base.toml"
    path.write_text(f'[data]\ndataset = "{data}"\nimage_size = 16\nbatch_size = 8\n[model]\nname = "tiny_cnn"\n'
                    f'[train]\nepochs = 1\nlr = 0.05\nprogress = false\n')
    return path


def test_a_grid_runs_every_combination_once_and_compares_them(tiny, tmp_path, run_cli):
    data = write_two_class_folder(tmp_path / "data")
    base = config(tmp_path, data)
    grid = ["--grid", "data.label_fraction=0.5,1", "--grid", "train.linear_probe=true,false"]
    result = run_cli("sweep", str(base), *grid, "--out", str(tmp_path / "sweep"))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir() if (p / "run.json").is_file())
    assert names == ["label_fraction-0.5_linear_probe-false", "label_fraction-0.5_linear_probe-true",
                     "label_fraction-1_linear_probe-false", "label_fraction-1_linear_probe-true"]
    table = json.loads((tmp_path / "sweep" / "comparison.json").read_text())
    assert table["columns"][:3] == ["run", "label_fraction", "linear_probe"]
    assert {(r["label_fraction"], r["linear_probe"]) for r in table["rows"]} == {(0.5, True), (0.5, False),
                                                                                 (1, True), (1, False)}
    for name in names:  # each run got its own settings
        run = dl.Run(tmp_path / "sweep" / name)
        assert run.config["data"]["label_fraction"] == (0.5 if "0.5" in name else 1)
        assert run.config["train"]["linear_probe"] == name.endswith("true")
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 10_000
    assert "sweep.png" in (tmp_path / "sweep" / "report.html").read_text()
    # the same sweep again: nothing is trained twice
    before = {n: (tmp_path / "sweep" / n / "last.pt").stat().st_mtime_ns for n in names}
    again = run_cli("sweep", str(base), *grid, "--out", str(tmp_path / "sweep"))
    assert again.exit_code == 0, again.output
    assert {n: (tmp_path / "sweep" / n / "last.pt").stat().st_mtime_ns for n in names} == before
    # another grid in the same folder is refused
    other = run_cli("sweep", str(base), "--grid", "train.lr=0.1,0.01", "--out", str(tmp_path / "sweep"))
    assert other.exit_code == 1 and "holds another sweep" in other.output


def test_a_killed_run_of_a_sweep_is_resumed_and_none_means_no_initialisation(tiny, tmp_path):
    data = write_two_class_folder(tmp_path / "data")
    base = config(tmp_path, data)
    source = dl.train(base, out=tmp_path / "source")
    grid = {"train.init_from": ["none", str(source.folder)]}
    first = dl.sweep(base, grid, out=tmp_path / "sweep", overrides=["train.epochs=2"])
    assert [r.status["transfer"] is None for r in first.runs] == [True, False]
    killed = first.runs[1].folder
    status = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**status, "status": "interrupted", "epochs_done": 1}))
    resumed = dl.sweep(base, grid, out=tmp_path / "sweep", overrides=["train.epochs=2"])
    assert resumed.runs[1].status["status"] == "finished"
    assert resumed.runs[0].status["epochs_done"] == 2


def test_every_combination_is_checked_before_the_first_run(tiny, tmp_path):
    data = write_two_class_folder(tmp_path / "data")
    with pytest.raises(dl.ConfigError, match="train.epochs: must be >= 1, got 0"):
        dl.sweep(config(tmp_path, data), ["train.epochs=1,0"], out=tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(dl.ConfigError, match="expected KEY=V1,V2"):
        dl.sweep(config(tmp_path, data), ["train.epochs"], out=tmp_path / "sweep")

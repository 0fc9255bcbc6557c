"""Screening from the command line on generated datasets whose closest domain is known by construction."""

from __future__ import annotations

import csv
import json

import defectlab as dl
import numpy as np
import pytest
from PIL import Image


def textured_folder(root, classes: dict[str, int], rgb: tuple[int, int, int], seed: int):
    """An image folder: per class, noisy 24x24 textures around one colour, with a dark 'defect' stroke."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(rng.normal(rgb, 12, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            pixels[rng.integers(0, 24), :, :] //= 3
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def domains(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECTLAB_CACHE", str(tmp_path / "cache"))
    balanced_pair = {"crack": 6, "scratch": 3}
    return {
        "target": textured_folder(tmp_path / "target", {"crack": 4, "scratch": 4}, (120, 120, 160), 0),
        "near": textured_folder(tmp_path / "near", balanced_pair, (128, 124, 160), 1),
        "middle": textured_folder(tmp_path / "middle", balanced_pair, (160, 140, 120), 2),
        "far": textured_folder(tmp_path / "far", {**balanced_pair, "dent": 3}, (240, 40, 20), 3),
        "alien": textured_folder(tmp_path / "alien", {"hole": 6}, (120, 120, 160), 4),
    }


def test_ranking_follows_the_colour_shift(domains, run_cli, tmp_path):
    args = ["screen", "--target", str(domains["target"]), "--json", "--out", str(tmp_path / "run"),
            "--set", "distance.k=3", "--set", "distance.pixels_per_image=256", "--all-pairs"]
    for name in ("far", "near", "alien", "middle"):
        args += ["--source", str(domains[name])]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    scores = {row["source"].rsplit("/", 1)[-1]: row for row in data["scores"]}
    assert [scores[n]["rank"] for n in ("near", "middle", "far")] == [1, 2, 3]
    assert scores["near"]["distance"] < scores["middle"]["distance"] < scores["far"]["distance"]
    assert scores["alien"]["score"] is None and scores["alien"]["rank"] is None
    assert data["best"].endswith("near")
    with open(tmp_path / "run" / "subset.csv") as handle:
        assert {row["label"] for row in csv.DictReader(handle)} == {"crack", "scratch"}
    assert (tmp_path / "run" / "pairs.png").exists()
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["config"]["distance"] == {"name": "emd", "k": 3, "pixels_per_image": 256}
    assert "emd" in resolved["versions"]["plugins"]


def test_config_file_and_its_errors(domains, run_cli, tmp_path):
    config = tmp_path / "screen.toml"
    config.write_text(f'target = "{domains["target"]}"\nsources = ["{domains["near"]}"]\n'
                      '[distance]\nname = "sinkhorn"\nk = 2\nreg = 0.1\n[screen]\ntop = 1\n')
    result = run_cli("screen", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "chosen source:" in result.output and "near" in result.output
    result = run_cli("screen", str(config), "--set", "distance.regg=1", "--set", "screen.topp=2")
    assert result.exit_code == 1
    assert "distance.regg: unknown parameter; did you mean 'reg'?" in result.output
    assert "screen.topp: unknown setting; did you mean 'top'?" in result.output


def test_yolo_source_subset_keeps_only_target_labels(tmp_path):
    root = tmp_path / "yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [crack, dirt, scratch]\n")
    labels = {"a": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n", "b": "1 0.5 0.5 0.2 0.2\n", "c": "", "d": "2 0.1 0.1 0.1 0.1\n"}
    for stem, text in labels.items():
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "train" / f"{stem}.png")
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    source = dl.open_dataset(str(root))
    rows = dl.source_subset(source, ["crack", "scratch"])
    kept = {r.key.rsplit("/", 1)[-1].split(".")[0]: r.boxes for r in rows}
    assert kept == {"a": (("crack", 0.5, 0.5, 0.2, 0.2),), "c": (), "d": (("scratch", 0.1, 0.1, 0.1, 0.1),)}
    path = dl.write_subset_csv(rows, tmp_path / "subset.csv")
    with open(path) as handle:
        written = {row["path"]: row["boxes"] for row in csv.DictReader(handle)}
    assert written[str((root / "images" / "train" / "a.png").relative_to(tmp_path))] == "crack 0.5 0.5 0.2 0.2"


def test_a_dataset_that_is_neither_a_path_nor_a_name(run_cli, tmp_path):
    result = run_cli("screen", "--target", str(tmp_path / "missing"), "--source", "elpv:poly")
    assert result.exit_code == 1
    assert f"no file or folder '{tmp_path / 'missing'}', and unknown dataset" in result.output

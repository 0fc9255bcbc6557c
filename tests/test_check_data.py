"""``defectlab check-data`` and ``defectlab imbalance --data``: reports of unusable files, counts from a dataset."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from defectlab_plugins.class_imbalance.metrics import gini_coefficient

from tests.test_datasets import write_image, write_mask, write_text


def problem_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    root = tmp_path / "folders"
    for name, n in (("ok", 4), ("scratch", 2)):
        for i in range(n):
            write_image(root / name / f"{i}.png")
    (root / "scratch" / "broken.png").write_bytes(b"\x89PNG but truncated garbage")
    return root


def test_check_data_reports_a_corrupted_image(run_cli, folders):
    result = run_cli("check-data", str(folders), "--workers", "2")
    assert result.exit_code == 0, result.output
    rows = problem_rows(result.stdout)
    assert [(r["key"], Path(r["path"]).name) for r in rows] == [("scratch/broken.png", "broken.png")]
    assert "cannot read image" in rows[0]["problem"]
    assert result.stderr.strip().splitlines()[-1] == "checked 7 images: 1 problem"


def test_check_data_writes_the_csv_to_out(run_cli, folders, tmp_path):
    out = tmp_path / "problems.csv"
    result = run_cli("check-data", str(folders), "--out", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert [r["key"] for r in problem_rows(out.read_text())] == ["scratch/broken.png"]


def test_check_data_clean_dataset_has_only_the_header(run_cli, folders):
    (folders / "scratch" / "broken.png").unlink()
    result = run_cli("check-data", str(folders))
    assert result.exit_code == 0 and result.stdout == "key,path,problem\n"
    assert "checked 6 images: 0 problems" in result.stderr


def test_check_data_reports_bad_masks(run_cli, tmp_path):
    root = tmp_path / "pairs"
    for stem in ("a", "b", "c"):
        write_image(root / "images" / f"{stem}.png")
    write_mask(root / "masks" / "a.png")
    write_mask(root / "masks" / "b.png", size=(5, 5))
    write_mask(root / "masks" / "c.png", on=3)
    result = run_cli("check-data", str(root))
    rows = problem_rows(result.stdout)
    assert result.exit_code == 0 and [(r["key"], Path(r["path"]).parent.name) for r in rows] == [
        ("b.png", "masks"), ("c.png", "masks")]
    assert "is 5x5 but its image" in rows[0]["problem"] and "values [3] outside the 2 classes" in rows[1]["problem"]


def test_check_data_reports_missing_and_conflicting_csv_rows(run_cli, tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    index = write_text(tmp_path / "index.csv", "path,label\na.png,ok\nb.png,ok\nb.png,scratch\nmissing.png,ok\n")
    result = run_cli("check-data", str(index))
    problems = {(r["key"], r["problem"].split(",")[0]) for r in problem_rows(result.stdout)}
    assert problems == {("missing.png", f"'{tmp_path / 'missing.png'}'"),
                        ("b.png", "listed 2 times with different labels: ok"),
                        ("b.png (line 4)", "listed 2 times with different labels: ok")}
    assert "checked 4 images: 3 problems" in result.stderr


def test_check_data_cannot_open(run_cli, tmp_path):
    result = run_cli("check-data", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert result.output.strip().startswith(f"Error: no file or folder '{tmp_path / 'nowhere'}'")
    write_text(tmp_path / "loose" / "notes.txt", "no images here")
    result = run_cli("check-data", str(tmp_path / "loose"))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "cannot tell the format of" in result.output


def test_imbalance_from_a_dataset(run_cli, folders):
    result = run_cli("imbalance", "gini", "--data", str(folders), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == [4.0, 2.0]  # ok 4, scratch 2: the unreadable file is left out of the counts
    assert report["unreadable"] == 1
    # sorted 2, 4: B = (1/3 + 0)/4 + (1 + 1/3)/4 = 5/12, G = 1 - 2B = 1/6
    assert report["value"] == pytest.approx(gini_coefficient([4, 2])) == pytest.approx(1 / 6)
    result = run_cli("imbalance", "gini", "--data", str(folders), "--counts", "1,2")
    assert result.exit_code == 2 and "one of them" in result.output

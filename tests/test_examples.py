"""Every example config is valid as it is shipped (checked like `defectlab validate`), and the scripts run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_config_validates(path, run_cli):
    result = run_cli("validate", str(path))
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_compare_losses_trains_each_loss_and_writes_one_report(tmp_path):
    out = tmp_path / "compare"
    result = subprocess.run([sys.executable, str(EXAMPLES / "compare_losses.py"), "--quick", "--epochs", "1",
                             "--losses", "focal,dibe", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for loss in ("focal", "dibe"):
        config = json.loads((out / loss / "config.json").read_text())["config"]
        assert config["loss"]["name"] == loss and config["train"]["epochs"] == 1  # --epochs wins over --quick
        scores = json.loads((out / loss / "run.json").read_text())["evaluation"]["scores"]
        assert 0 <= scores["iou"] <= 1 and -1 <= scores["oii"] <= 1
        assert f"{loss}: test IoU {scores['iou']:.4f}, OII {scores['oii']:.4f}" in result.stdout
    assert len(json.loads((out / "comparison" / "comparison.json").read_text())["rows"]) == 2
    assert (out / "comparison" / "report.html").is_file() and "highest test IoU:" in result.stdout


def test_compare_losses_refuses_an_unknown_loss_before_training(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "compare_losses.py"), "--losses", "focal,dibee",
                             "--out", str(tmp_path / "compare")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "dibe" in result.stderr
    assert not (tmp_path / "compare").exists()

"""The command line: catalog commands, JSON output, exit codes and error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import defectlab as dl
import pytest

BIN = Path(sys.executable).with_name("defectlab")


def test_version(run_cli):
    result = run_cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"defectlab {dl.__version__}"


def test_help_does_not_import_torch():
    code = ("import sys; from defectlab.cli.main import cli; "
            "cli.main(args=['--help'], standalone_mode=False); "
            "print('HEAVY', sorted(m for m in ('torch', 'numpy', 'sklearn', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "imbalance" in out


def test_console_script_runs(tmp_path):
    result = subprocess.run([str(BIN), "imbalance", "gini", "--counts", "349,62,250", "--json"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert abs(json.loads(result.stdout)["value"] - 0.28946) < 1e-5


def test_plugins_json_lists_builtins(run_cli):
    result = run_cli("plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(result.output)}
    assert plugins["class_imbalance"]["components"] == ["imbalance/gini", "imbalance/imbalance_ratio"]
    assert plugins["oii"]["kinds"] == ["imbalance"] and plugins["oii"]["error"] is None
    assert plugins["oii"]["version"] == dl.__version__


def test_list_with_kind_pattern_and_json(run_cli):
    result = run_cli("list", "imbalance", "*i*", "--json")
    assert [c["name"] for c in json.loads(result.output)] == ["gini", "imbalance_ratio", "oii"]
    result = run_cli("list", "gin*")
    assert result.exit_code == 0 and "gini" in result.output and "oii" not in result.output
    result = run_cli("list", "imbalanse")
    assert result.exit_code == 1 and "did you mean 'imbalance'" in result.output


def test_show_prints_scope_and_parameters(run_cli):
    result = run_cli("show", "imbalance", "oii", "--json")
    info = json.loads(result.output)
    assert info["scope"] == "output" and info["plugin"] == "oii" and info["parameters"] == []
    result = run_cli("show", "imbalance", "oii")
    assert "scope: output" in result.output and "k = 1 - IoU/2" in result.output


def test_user_errors_exit_1_without_traceback(run_cli):
    result = run_cli("show", "imbalance", "ginni")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: unknown imbalance 'ginni'; did you mean 'gini'? "
                                     "(see `defectlab list imbalance`)")


def test_usage_errors_exit_2(run_cli):
    result = run_cli("lst")
    assert result.exit_code == 2 and "did you mean 'list'" in result.output
    assert run_cli("show", "imbalance").exit_code == 2


def test_debug_shows_the_traceback():
    result = subprocess.run([str(BIN), "--debug", "show", "imbalance", "ginni"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr
    result = subprocess.run([str(BIN), "show", "imbalance", "ginni"], capture_output=True, text=True)
    assert "Traceback" not in result.stderr


def test_component_parameters_from_the_command_line(run_cli):
    result = run_cli("imbalance", "gini", "--counts", "1,1", "--set", "power=2")
    assert result.exit_code == 1 and "imbalance.power: unknown parameter" in result.output


@pytest.mark.slow
def test_demo_tells_the_elpv_story(run_cli, tmp_path):
    result = run_cli("demo", "--epochs", "1", "--image-size", "32", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "elpv:poly" in result.output and "gini" in result.output  # the screening table
    names = [line.split()[0] for line in result.output.splitlines() if line.startswith(("transfer ", "scratch "))]
    assert names == ["transfer", "scratch"]
    transfer = json.loads((tmp_path / "transfer" / "target" / "run.json").read_text())
    assert transfer["transfer"]["source"].endswith("source/best.pt")
    assert json.loads((tmp_path / "scratch" / "run.json").read_text())["transfer"] is None
    assert (tmp_path / "comparison" / "report.html").is_file()

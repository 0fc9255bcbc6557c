"""Configs: TOML loading, --set overrides, and validation that reports every problem with its path."""

from __future__ import annotations

import defectlab as dl
import pytest
from defectlab.plugin_system.config import (
    Section,
    apply_overrides,
    load_config,
    load_toml,
    parse_override,
    validate,
)

from tests.test_registry import ToyLoss, plugin_of


@pytest.fixture
def toy_loss(defectlab_plugin):
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]), name="toys")


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_parse_override_reads_values_as_toml():
    assert parse_override("loss.alpha=0.7") == (["loss", "alpha"], 0.7)
    assert parse_override("data.name=elpv") == (["data", "name"], "elpv")
    assert parse_override("trainer.sizes=[1, 2]") == (["trainer", "sizes"], [1, 2])
    with pytest.raises(dl.DefectlabError, match="expected KEY=VALUE"):
        parse_override("loss.alpha")


def test_overrides_set_nested_keys_and_list_items():
    config = {"loss": {"name": "x"}, "evaluators": [{"name": "a"}, {"name": "b"}]}
    result = apply_overrides(config, ["loss.alpha=0.5", "evaluators.1.name=c", "new.key=true"])
    assert result == {"loss": {"name": "x", "alpha": 0.5}, "evaluators": [{"name": "a"}, {"name": "c"}],
                      "new": {"key": True}}
    assert config["loss"] == {"name": "x"}  # the original is untouched
    with pytest.raises(dl.DefectlabError, match="not an index"):
        apply_overrides(config, ["evaluators.5.name=c"])


def test_every_problem_is_reported_at_once_with_its_path(tmp_path, toy_loss):
    path = write(tmp_path, """
[loss]
name = "toy_loss"
alpah = 0.7
reduction = "median"

[imbalance]
name = "ginni"

[lossy]
name = "x"
""")
    with pytest.raises(dl.ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert "loss.alpah: unknown parameter; did you mean 'alpha'?" in problems
    assert "loss.reduction: expected 'mean' | 'sum', got 'median'" in problems
    assert any(p.startswith("imbalance: unknown imbalance 'ginni'; did you mean 'gini'") for p in problems)
    assert any(p.startswith("lossy: unknown section; did you mean 'loss'") for p in problems)
    assert len(problems) == 4


def test_command_line_override_fixes_a_config(tmp_path, toy_loss):
    path = write(tmp_path, '[loss]\nname = "toy_loss"\nalpha = 2.0\n')
    config = load_config(path, ["loss.alpha=0.7"])
    assert dl.create("loss", config["loss"]).alpha == 0.7


def test_lists_of_specs_and_settings_sections(toy_loss):
    def trainer(epochs: int = 1, lr: float = 0.1):
        """Settings."""

    schema = {"loss": Section(kind="loss"), "evaluators": Section(kind="imbalance", many=True),
              "trainer": Section(settings=trainer), "data": Section(kind="dataset", required=True)}
    config = {"loss": {"name": "toy_loss"}, "evaluators": [{"name": "gini"}, {"name": "oii", "x": 1}],
              "trainer": {"epochs": "many", "lr": 0.01, "lrr": 1}}
    assert validate(config, schema) == [
        "evaluators.1.x: unknown parameter (imbalance 'oii' takes: nothing)",
        "trainer.epochs: expected int, got 'many'",
        "trainer.lrr: unknown setting; did you mean 'lr'?",
        "data: required section is missing",
    ]


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(dl.DefectlabError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(dl.DefectlabError, match="not valid TOML"):
        load_config(write(tmp_path, "[loss\nname="))
    path = write(tmp_path, "x = " + "[" * 100_000)
    with pytest.raises(dl.DefectlabError, match="is nested too deeply to be a config"):
        load_config(path)
    path.write_bytes(b'[loss]\nname = "\xff"\n')
    with pytest.raises(dl.DefectlabError, match=r"is not UTF-8 text \(byte 15\)"):
        load_config(path)
    path.write_text("x = " + "9" * 5000)
    with pytest.raises(dl.DefectlabError, match="holds a value that cannot be read: Exceeds the limit"):
        load_config(path)
    path.write_bytes(b"\xef\xbb\xbfx = 1\n")  # a BOM is fine
    assert load_toml(path) == {"x": 1}


def test_validate_command(tmp_path, run_cli, toy_loss):
    path = write(tmp_path, '[imbalance]\nname = "gini"\n')
    result = run_cli("validate", str(path))
    assert result.exit_code == 0 and "ok" in result.output
    result = run_cli("validate", str(path), "--set", "imbalance.name=ginni")
    assert result.exit_code == 1 and "imbalance: unknown imbalance 'ginni'" in result.output

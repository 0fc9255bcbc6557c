"""Registry and plugin loading: attribution, resilience, duplicates, validation before building."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Literal

import defectlab as dl
import pytest
from defectlab import hookimpl
from defectlab.plugin_system.loading import PluginLoader
from defectlab.plugin_system.registry import registered_name, snake_case


class ToyLoss:
    """A toy loss for tests.

    Args:
        alpha: weight of the missed defects; raising it lowers the OII.
        reduction: how pixel losses are combined.
        classes: class indices to score.
    """

    def __init__(self, alpha: float = 0.3, reduction: Literal["mean", "sum"] = "mean",
                 classes: list[int] | None = None, smooth: bool = False):
        if not 0 <= alpha <= 1:
            raise ValueError("alpha must lie in [0, 1]")
        self.alpha, self.reduction, self.classes, self.smooth = alpha, reduction, classes, smooth


def needs_size(size: int):
    """A factory with a required parameter."""
    return size


def plugin_of(**hooks):
    """A plugin object whose attributes are the given hook implementations."""
    return SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


def test_names_come_from_name_attribute_or_snake_case():
    assert snake_case("FocalTversky") == "focal_tversky"
    assert snake_case("OIIMetric") == "oii_metric"
    assert registered_name(ToyLoss) == "toy_loss"
    assert registered_name(dl.get_component("imbalance", "gini").obj) == "gini"


def test_plugin_components_are_attributed_and_described(defectlab_plugin):
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]), name="toys")
    info = dl.describe("loss", "toy_loss")
    assert info["plugin"] == "toys" and info["summary"] == "A toy loss for tests."
    params = {p["name"]: p for p in info["parameters"]}
    assert params["alpha"] == {"name": "alpha", "type": "float", "default": 0.3, "required": False,
                               "doc": "weight of the missed defects; raising it lowers the OII."}
    assert params["reduction"]["type"] == "'mean' | 'sum'"
    assert params["classes"]["type"] == "list[int] | None"
    record = next(p for p in dl.plugins() if p.name == "toys")
    assert record.components == [("loss", "toy_loss")] and record.error is None


def test_create_coerces_command_line_strings(defectlab_plugin):
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]))
    loss = dl.create("loss", {"name": "toy_loss", "alpha": "0.7"}, reduction="sum", classes="1,2", smooth="yes")
    assert (loss.alpha, loss.reduction, loss.classes, loss.smooth) == (0.7, "sum", [1, 2], True)
    assert dl.create("loss", "toy_loss", classes="none").classes is None
    assert dl.create("loss", "toy_loss", alpha=1).alpha == 1.0


@pytest.mark.parametrize("params,message", [
    ({"alpah": 0.5}, "loss.alpah: unknown parameter; did you mean 'alpha'?"),
    ({"alpha": "high"}, "loss.alpha: expected float, got 'high'"),
    ({"reduction": "median"}, "loss.reduction: expected 'mean' | 'sum', got 'median'"),
    ({"smooth": 2}, "loss.smooth: expected bool"),
    ({"alpha": 1.5}, "loss 'toy_loss': alpha must lie in [0, 1]"),
])
def test_create_rejects_wrong_parameters_before_building(defectlab_plugin, params, message):
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]))
    with pytest.raises(dl.ParameterError) as info:
        dl.create("loss", "toy_loss", **params)
    assert message in str(info.value)


def test_missing_required_parameter(defectlab_plugin):
    defectlab_plugin(plugin_of(register_losses=lambda: [needs_size]))
    with pytest.raises(dl.ParameterError, match="loss.size: required parameter"):
        dl.create("loss", "needs_size")
    assert dl.create("loss", "needs_size", size="3") == 3


def test_unknown_names_suggest_close_matches():
    with pytest.raises(dl.UnknownComponentError, match="unknown imbalance 'ginni'; did you mean 'gini'"):
        dl.create("imbalance", "ginni")
    with pytest.raises(dl.UnknownComponentError, match="unknown component kind 'imbalanse'; did you mean 'imbalance'"):
        dl.list_components("imbalanse")


def test_list_filters_by_pattern_in_natural_order(defectlab_plugin):
    def net10(): """Ten."""
    def net2(): """Two."""
    defectlab_plugin(plugin_of(register_losses=lambda: [net10, net2]))
    assert [c.name for c in dl.list_components("loss", "net*")] == ["net2", "net10"]
    assert [c.name for c in dl.list_components("imbalance", "*i*")] == ["gini", "imbalance_ratio", "oii"]


def test_duplicate_names_are_an_error_naming_both_plugins(defectlab_plugin):
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]), name="first")
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]), name="second")
    with pytest.raises(dl.PluginError, match=r"more than one plugin \(first, second\)"):
        dl.create("loss", "toy_loss")
    errors = {p.name: p.error for p in dl.plugins() if p.name in ("first", "second")}
    assert all("first, second" in e for e in errors.values())


def test_a_raising_hook_is_recorded_and_others_keep_working(defectlab_plugin):
    def broken():
        raise RuntimeError("boom")

    defectlab_plugin(plugin_of(register_losses=broken, register_evaluators=lambda: [needs_size]), name="half")
    record = next(p for p in dl.plugins() if p.name == "half")
    assert "register_losses() raised RuntimeError: boom" in record.error
    assert dl.create("evaluator", "needs_size", size=1) == 1
    assert dl.create("imbalance", "gini")([1, 1]) == 0


def test_misspelled_hook_is_reported_with_suggestion(defectlab_plugin):
    record = defectlab_plugin(plugin_of(register_loss=lambda: [ToyLoss]), name="typo")
    assert "'register_loss' is not a defectlab hook; did you mean 'register_losses'?" in record.error


def test_hook_with_wrong_signature_is_recorded(defectlab_plugin):
    record = defectlab_plugin(plugin_of(register_losses=lambda extra: [ToyLoss]), name="wrongsig")
    assert "cannot be registered" in record.error


def test_imbalance_components_must_declare_a_valid_scope(defectlab_plugin):
    class NoScope:
        """No scope."""

    class BadScope:
        """Bad scope."""
        scope = "sideways"

    record = defectlab_plugin(plugin_of(register_imbalance_metrics=lambda: [NoScope, BadScope]), name="scopes")
    assert "does not declare 'scope'" in record.error and "'sideways'" in record.error
    assert not record.components


def test_strict_mode_reraises(monkeypatch):
    monkeypatch.setenv("DEFECTLAB_STRICT_PLUGINS", "1")
    loader = PluginLoader()

    def broken():
        raise RuntimeError("boom")

    loader.add_plugin(plugin_of(register_losses=broken), "strict_one")
    with pytest.raises(dl.PluginError, match="plugin 'strict_one': register_losses.. raised RuntimeError: boom"):
        loader.registry


def test_allow_and_deny_lists(monkeypatch):
    monkeypatch.setenv("DEFECTLAB_PLUGINS", "oii,nosuch")
    loader = PluginLoader()
    loader.load_entry_points()
    assert set(loader.registry.plugins) == {"oii", "nosuch"}
    assert "named in DEFECTLAB_PLUGINS but not installed" in loader.registry.plugins["nosuch"].error
    assert [c.name for c in loader.registry.list("imbalance")] == ["oii"]
    monkeypatch.delenv("DEFECTLAB_PLUGINS")
    monkeypatch.setenv("DEFECTLAB_DISABLE_PLUGINS", "oii")
    loader = PluginLoader()
    loader.load_entry_points()
    assert "oii" not in loader.registry.plugins and "class_imbalance" in loader.registry.plugins


def test_fixture_removes_plugins_after_the_test(defectlab_plugin):
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]), name="temporary")
    assert dl.get_component("loss", "toy_loss")


def test_after_fixture_the_plugin_is_gone():
    assert "temporary" not in {p.name for p in dl.plugins()}
    assert not dl.list_components("loss", "toy_loss")


def test_errors_the_user_can_act_on_keep_their_type(defectlab_plugin):
    def strict_reader(root: str):
        """Raises a DataError for any root."""
        raise dl.DataError(f"no samples under {root}")

    defectlab_plugin(plugin_of(register_datasets=lambda: [strict_reader]))
    with pytest.raises(dl.DataError, match="no samples under x"):
        dl.create("dataset", "strict_reader", root="x")


def test_components_are_collected_kind_by_kind():
    code = ("import sys, defectlab as dl; dl.create('imbalance', 'gini')([1, 2]); "
            "print('torch' in sys.modules); dl.list_components('loss'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_a_failing_command_hook_is_shown_by_plugins(defectlab_plugin):
    def register_commands(cli):
        raise RuntimeError("no commands today")

    defectlab_plugin(plugin_of(register_commands=register_commands), name="mute")
    record = next(p for p in dl.plugins() if p.name == "mute")
    assert "register_commands() raised RuntimeError: no commands today" in record.error


def test_two_distributions_with_one_plugin_name(monkeypatch):
    from importlib import metadata

    first = metadata.EntryPoint("oii", "defectlab_plugins.oii", "defectlab")
    second = metadata.EntryPoint("oii", "somewhere_else", "defectlab")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [first, second])
    loader = PluginLoader()
    loader.load_entry_points()
    assert "also declares a plugin named 'oii' (somewhere_else), which was not loaded" in \
        loader.registry.plugins["oii"].error
    assert [c.name for c in loader.registry.list("imbalance")] == ["oii"]


def test_name_colon_value_sets_the_first_parameter(defectlab_plugin):
    defectlab_plugin(plugin_of(register_losses=lambda: [needs_size]))
    assert dl.create("loss", "needs_size:7") == 7
    assert dl.create("loss", {"name": "needs_size:7"}) == 7
    with pytest.raises(dl.ParameterError, match="takes no parameters"):
        dl.create("imbalance", "gini:3")


def test_a_removed_plugin_takes_its_commands_off_the_cli(defectlab_plugin, run_cli):
    import click
    from defectlab.cli.main import cli
    from defectlab.plugin_system.loading import get_loader

    def register_commands(cli):
        cli.add_command(click.Command("wave", callback=lambda: click.echo("hello from wave")))

    run_cli("--help")  # the command group exists before the plugin comes
    defectlab_plugin(plugin_of(register_commands=register_commands), name="waver")
    assert run_cli("wave").output == "hello from wave\n"
    get_loader().remove_plugin("waver")
    assert "wave" not in cli.commands
    result = run_cli("wave")
    assert result.exit_code == 2 and "no such command 'wave'" in result.output


def test_the_fixture_refuses_an_installed_plugin_under_a_second_name(defectlab_plugin):
    import defectlab_plugins.class_imbalance as installed

    with pytest.raises(dl.PluginError, match="already registered as plugin 'class_imbalance'"):
        defectlab_plugin(installed, "second_copy")
    assert "second_copy" not in {p.name for p in dl.plugins()}
    assert {c.plugin for c in dl.list_components("imbalance", "gini")} == {"class_imbalance"}
    defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]), name="toys")
    with pytest.raises(dl.PluginError, match="a plugin named 'toys' is already registered"):
        defectlab_plugin(plugin_of(register_losses=lambda: [ToyLoss]), name="toys")


def test_a_backbone_must_declare_its_tasks_and_take_the_engine_parameters(defectlab_plugin):
    def no_tasks(num_classes: int = 2, in_chans: int = 3, weights: str | None = None):
        """No tasks."""

    def no_weights(num_classes: int = 2, in_chans: int = 3):
        """No weights."""
    no_weights.tasks = ("classify",)

    def odd_task(num_classes: int = 2, in_chans: int = 3, weights: str | None = None):
        """An unknown task."""
    odd_task.tasks = ("paint",)

    def fine(num_classes: int = 2, in_chans: int = 3, weights: str | None = None):
        """Fine."""
    fine.tasks = ("classify",)
    record = defectlab_plugin(plugin_of(register_backbones=lambda: [no_tasks, no_weights, odd_task, fine]),
                              name="nets")
    assert "backbone 'no_tasks' does not declare 'tasks'" in record.error
    assert "backbone 'no_weights' takes no weights: every backbone is built with num_classes, in_chans, weights" in (
        record.error)
    assert "backbone 'odd_task' declares tasks ['paint']; give one or more of classify, segment, detect, embed" in (
        record.error)
    assert [c.name for c in dl.list_components("backbone", "*") if c.plugin == "nets"] == ["fine"]


def test_a_plugin_command_cannot_replace_a_built_in_one(defectlab_plugin, run_cli):
    import click

    def register_commands(cli):
        @cli.command("train")
        def hijack():
            click.echo("hijacked")

    record = defectlab_plugin(plugin_of(register_commands=register_commands), name="hijacker")
    result = run_cli("train", "--help")
    assert "hijacked" not in result.output and "Train the components of CONFIG" in result.output
    assert "tried to replace the command(s) train" in record.error


FAKE_PLUGIN = """
import defectlab as dl


class FakeIndex:
    \"\"\"An imbalance index of a third-party plugin installed beside defectlab.\"\"\"

    name = "fake_index"
    scope = "input"

    def __call__(self, counts):
        return 0.0


@dl.hookimpl
def register_imbalance_metrics():
    return [FakeIndex]
"""


def test_a_plugin_installed_beside_defectlab_stays_out_of_the_tests(tmp_path, monkeypatch, run_cli):
    from importlib import metadata

    from defectlab.plugin_system import loading

    (tmp_path / "fake_defectlab_plugin.py").write_text(FAKE_PLUGIN)
    info = tmp_path / "fake_defectlab_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-defectlab-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[defectlab]\nfake = fake_defectlab_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # installed: importlib.metadata finds it
    assert "fake" in {ep.name for ep in metadata.entry_points(group="defectlab")}
    monkeypatch.setattr(loading, "_loader", None)  # discover again, with the fake installed
    result = run_cli("list", "imbalance", "*i*", "--json")
    assert [c["name"] for c in json.loads(result.output)] == ["gini", "imbalance_ratio", "oii"]
    assert "fake" not in {p.name for p in dl.plugins()}

"""OII-guided tuning of α (seed 003 App. C): the bisection against hand-worked sequences with a
fake trainer, the grid-search count 2^n + 1, the refusals before any training, and one real
two-trial run of `defectlab tune-oii`."""

from __future__ import annotations

import json
from pathlib import Path

import defectlab as dl
import pytest
from defectlab import ConfigError, DataError, ParameterError
from defectlab.workflows.tune_oii import next_bracket, tune_oii

CONFIG = {"data": {"dataset": {"name": "synthetic_cracks", "count": 40, "size": 32, "defect_ratio": 0.02,
                               "contrast": 0.3}, "image_size": 32, "channels": 1, "batch_size": 8, "augment": []},
          "model": {"name": "unet", "encoder": "resnet18", "in_chans": 1},
          "loss": {"name": "tversky"}, "train": {"epochs": 1, "progress": False, "monitor": "val/iou"}}


class FakeTrainer:
    """Stands in for a training: the OII is ``oii_of(α)``; records every loss spec it was given."""

    def __init__(self, oii_of):
        self.oii_of, self.losses = oii_of, []

    def __call__(self, config: dict, folder: Path) -> dict:
        self.losses.append(dict(config["loss"]))
        return {"oii": self.oii_of(config["loss"]["alpha"]), "iou": 0.5, "pa": 0.6, "recall": 0.7}

    @property
    def alphas(self) -> list[float]:
        return [loss["alpha"] for loss in self.losses]


def test_the_search_is_public_api():
    assert dl.tune_oii is tune_oii and "tune_oii" in dl.__all__


def test_app_c_example_one(tmp_path):
    # App. C example 1 (DIBE_Dis, SegNet): α = 0.5 gave OII 0.294 > 0.25, so α rose to 0.7, the
    # middle of [0.5, 0.9], whose OII 0.162 lies in (0.15, 0.25): two trainings.
    trainer = FakeTrainer(lambda alpha: {0.5: 0.294, 0.7: 0.162}[alpha])
    result = tune_oii({**CONFIG, "loss": {"name": "dibe_dis"}}, trainer=trainer, out=tmp_path)
    assert trainer.alphas == [0.5, 0.7]
    assert [t.in_interval for t in result.trials] == [False, True] and result.found.alpha == 0.7
    assert [(t.low, t.high) for t in result.trials] == [(0.1, 0.9), (0.5, 0.9)]
    assert result.grid_trainings == 5  # 2 bisection steps: step 0.8/4 = 0.2, a grid of 0.1, 0.3, ..., 0.9


def test_bisection_sequence_for_a_monotone_oii(tmp_path):
    # OII(α) = 0.2 + 2(0.33 − α) falls as α rises and lies in [0.15, 0.25] for α in [0.305, 0.355].
    # 0.5 -> -0.14 (too low: lower α) -> 0.3 -> 0.26 (too high: raise) -> 0.4 -> 0.06 (lower)
    # -> 0.35 -> 0.16: inside after 4 trainings; a grid of step 0.8/2^4 = 0.05 trains 17.
    trainer = FakeTrainer(lambda alpha: 0.2 + 2 * (0.33 - alpha))
    result = tune_oii(CONFIG, trainer=trainer, out=tmp_path)
    assert trainer.alphas == pytest.approx([0.5, 0.3, 0.4, 0.35])
    brackets = [end for t in result.trials for end in (t.low, t.high)]
    assert brackets == pytest.approx([0.1, 0.9, 0.1, 0.5, 0.3, 0.5, 0.3, 0.4])
    assert [r["next"] for r in result.rows()] == ["lower α", "raise α", "lower α", "stop"]
    assert result.found.index == 4 and result.resolution == pytest.approx(0.05) and result.grid_trainings == 17
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert [t["alpha"] for t in saved["trials"]] == pytest.approx([0.5, 0.3, 0.4, 0.35])
    assert saved["bisection_trainings"] == 4 and saved["grid_search_trainings"] == 17 and saved["chosen"] == 4
    assert (tmp_path / "tune.png").stat().st_size > 5_000
    assert not (tmp_path / "report.html").exists()  # the fake trainer made no run directories


def test_max_trials_stops_the_search_and_the_closest_trial_is_chosen(tmp_path):
    # OII(α) = 0.5 − 0.1α stays above 0.25 on [0.1, 0.9]: every trial raises α towards b.
    trainer = FakeTrainer(lambda alpha: 0.5 - 0.1 * alpha)
    result = tune_oii(CONFIG, trainer=trainer, out=tmp_path)  # default: 6 trials
    assert trainer.alphas == pytest.approx([0.5, 0.7, 0.8, 0.85, 0.875, 0.8875])
    assert result.found is None and result.chosen.index == 6
    assert result.rows()[-1]["next"] == "stop (max trials)"
    assert result.resolution == pytest.approx(0.8 / 64) and result.grid_trainings == 65
    assert "not reached in 6 trials" in "\n".join(result.summary())
    assert "2^6 + 1 = 65" in result.summary()[-1]


def test_next_bracket_moves_towards_the_interval():
    assert next_bracket(0.1, 0.9, 0.5, 0.3, (0.15, 0.25)) == (0.5, 0.9)  # too many missed defects: raise α
    assert next_bracket(0.1, 0.9, 0.5, 0.1, (0.15, 0.25)) == (0.1, 0.5)  # too many false alarms: lower α
    assert next_bracket(0.1, 0.9, 0.5, 0.2, (0.15, 0.25)) == (0.1, 0.9)


@pytest.mark.parametrize("loss,tie,expected_beta", [
    ({"name": "tversky", "beta": 0.2}, True, 0.5),  # β = 1 − α replaces the config's β
    ({"name": "tversky", "beta": 0.2}, False, 0.2),  # --keep-beta leaves it
    ({"name": "dibe"}, True, None),  # DIBE ties β = 1 − α itself: no β to set
    ("focal_tversky", True, 0.5),  # a loss given by name alone
])
def test_beta_follows_alpha_where_the_loss_has_one(tmp_path, loss, tie, expected_beta):
    trainer = FakeTrainer(lambda alpha: 0.2)
    result = tune_oii({**CONFIG, "loss": loss}, trainer=trainer, out=tmp_path, tie_beta=tie)
    assert trainer.losses[0]["alpha"] == 0.5 and trainer.losses[0].get("beta") == expected_beta
    assert result.trials[0].beta == (expected_beta if tie else None)


@pytest.mark.parametrize("changes,kwargs,error,message", [
    ({"loss": {"name": "bce"}}, {}, ConfigError, r"loss 'bce' has no alpha parameter.*use one of .*dibe"),
    ({"evaluators": [{"name": "classification"}]}, {}, ConfigError, r"reads the OII of the 'segmentation'"),
    ({"train": {"epochs": 1, "lr_typo": 1}}, {}, ConfigError, r"train.lr_typo: unknown setting"),
    ({"stages": [{"name": "a"}]}, {}, ConfigError, r"tune-oii tunes one training"),
    ({"loss": {"name": "dibe"}}, {"alpha_range": (0.5, 1.2)}, ParameterError,
     r"α = 1.2 does not fit loss 'dibe': loss.alpha: must be in \[0, 1\], got 1.2"),
    ({}, {"alpha_range": (0.5, 1.2)}, ParameterError, r"α = 1.2 does not fit loss 'tversky': loss.beta: must be >= 0"),
    ({}, {"alpha_range": (0.9, 0.1)}, ParameterError, r"range must be two increasing numbers"),
    ({}, {"alpha_range": (-0.1, 0.5)}, ParameterError, r"range must lie >= 0"),
    ({}, {"interval": (0.15, 1.5)}, ParameterError, r"interval must lie in \[-1, 1\]"),
    ({}, {"max_trials": 0}, ParameterError, r"max_trials must be >= 1"),
])
def test_problems_are_found_before_any_training(tmp_path, changes, kwargs, error, message):
    trainer = FakeTrainer(lambda alpha: pytest.fail("no training may start"))
    with pytest.raises(error, match=message):
        tune_oii({**CONFIG, **changes}, trainer=trainer, out=tmp_path / "out", **kwargs)
    assert not trainer.losses


def test_the_trials_done_are_saved_when_a_later_one_fails(tmp_path):
    def trainer(config, folder):
        if config["loss"]["alpha"] != 0.5:
            raise KeyboardInterrupt
        return {"oii": 0.9}

    with pytest.raises(KeyboardInterrupt):
        tune_oii(CONFIG, trainer=trainer, out=tmp_path)
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert [t["alpha"] for t in saved["trials"]] == [0.5] and saved["found"] is False


def test_a_trial_without_oii_is_an_error(tmp_path):
    with pytest.raises(DataError, match="trial 1 reported no OII"):
        tune_oii(CONFIG, trainer=lambda config, folder: {"iou": 0.3}, out=tmp_path)


def test_refusal_through_the_cli(tmp_path, run_cli):
    config = tmp_path / "bce.toml"
    config.write_text('[data]\ndataset = "synthetic_cracks"\n[model]\nname = "unet"\n[loss]\nname = "bce"\n')
    result = run_cli("tune-oii", str(config), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "loss 'bce' has no alpha parameter" in result.output
    result = run_cli("tune-oii", str(config), "--interval", "0.2")
    assert result.exit_code == 2 and "expected two numbers LOW,HIGH" in result.output


def test_two_real_trials_through_the_cli(tmp_path, run_cli):
    # One epoch per trial, and an interval no run lands in, so both trials train.
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[data]\ndataset = {name = "synthetic_cracks", count = 40, size = 32, defect_ratio = 0.02, contrast = 0.3}\n'
        'image_size = 32\nchannels = 1\nbatch_size = 8\naugment = []\n'
        '[model]\nname = "unet"\nencoder = "resnet18"\nin_chans = 1\n'
        '[loss]\nname = "tversky"\n[train]\nepochs = 1\nprogress = false\nmonitor = "val/iou"\n')
    out = tmp_path / "tune"
    result = run_cli("tune-oii", str(config), "--interval", "0.5,0.5001", "--max-trials", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "tune.json").read_text())
    first, second = saved["trials"]
    assert first["alpha"] == 0.5 and first["beta"] == 0.5 and first["split"] == "val"
    assert second["alpha"] == (0.7 if first["scores"]["oii"] > 0.5001 else 0.3)
    assert second["beta"] == pytest.approx(1 - second["alpha"])
    for trial in saved["trials"]:  # each trial is a run trained with its α, scored on its best epoch
        run_config = json.loads((Path(trial["folder"]) / "config.json").read_text())["config"]
        assert run_config["loss"]["alpha"] == trial["alpha"]
        assert Path(trial["folder"]).name == f"trial-{trial['index']}-alpha-{trial['alpha']:.4g}"
        metrics = [json.loads(line) for line in (Path(trial["folder"]) / "metrics.jsonl").read_text().splitlines()]
        assert trial["epoch"] == 1 and trial["scores"]["oii"] == metrics[-1]["val/oii"]
    assert {"tune.json", "tune.png", "report.html", "curves.png", "comparison.json"} <= {p.name for p in out.iterdir()}
    assert len(json.loads((out / "comparison.json").read_text())["rows"]) == 2
    assert "not reached in 2 trials" in result.stdout
    assert "a grid search over [0.1, 0.9] with the same step would train 2^2 + 1 = 5" in result.stdout

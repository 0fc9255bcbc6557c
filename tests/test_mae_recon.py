"""``mae_recon``: the MAE pretraining's reconstruction error as an anomaly map, fitted per patch position."""

from __future__ import annotations

import defectlab as dl
import pytest
import torch
from defectlab_plugins.mae.patches import patchify

from tests.tiny_models import write_two_class_folder

SMALL_MAE = {"name": "mae", "decoder_depth": 1, "decoder_width": 32, "decoder_heads": 2, "mask_ratio": 0.5}


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    """A one-epoch MAE pretraining of vit_tiny on 32 px grey images (4 patches of 16 px)."""
    root = tmp_path_factory.mktemp("mae")
    data = write_two_class_folder(root / "images", per_class=8, size=32)
    config = {"data": {"dataset": str(data), "image_size": 32, "channels": 1, "batch_size": 8, "augment": []},
              "model": {"name": "vit_tiny", "img_size": 32}, "ssl": SMALL_MAE,
              "train": {"epochs": 1, "progress": False, "lr": 1e-3}}
    return dl.pretrain(config, out=root / "run").folder


def recon(run, **options):
    return dl.create("backbone", {"name": "mae_recon", "weights": str(run), "in_chans": 1, "img_size": 32, **options})


def test_the_pretrained_mae_is_loaded_whole(mae_run):
    model = recon(mae_run)
    state = dl.read_state_dict(mae_run / "best.pt")
    assert model.mae.mask_ratio == 0.5 and model.mae.count == 2  # the run's settings: half of 4 patches
    for name, tensor in model.mae.state_dict().items():
        if "objective." + name in state:
            assert torch.equal(tensor, state["objective." + name]), name
    assert torch.equal(model.mae.decoder_pred.weight, state["objective.decoder_pred.weight"])


def test_patch_error_is_the_mean_over_the_masks_that_hid_the_patch(mae_run):
    model = recon(mae_run, samples=3, seed=7)
    images = torch.randn(2, 1, 32, 32)
    masks = [mask.expand(2, -1) for mask in model.masks]
    assert len(masks) == 3 and all(int(m.sum()) == 2 for m in model.masks)  # half of the 4 patches each
    again = recon(mae_run, samples=3, seed=7)
    assert torch.equal(again.masks, model.masks)  # drawn from the seed: the same scores every time
    target = patchify(images, model.mae.patch)
    errors = [(model.mae.predict(images, m) - target).pow(2).mean(-1) for m in masks]
    hidden = sum(m.float() for m in masks)
    expected = sum(e * m for e, m in zip(errors, masks)) / hidden.clamp(min=1)
    got = model.patch_errors(images)
    seen = hidden > 0
    assert torch.allclose(got[seen], expected[seen], atol=1e-5)
    assert torch.all(seen.sum(1) > 0)


def test_fit_standardises_each_patch_position_over_the_good_images(mae_run):
    model = recon(mae_run, samples=2)
    good = torch.randn(12, 1, 32, 32)
    numbers = model.fit(iter([good[:5], good[5:]]))
    assert numbers["images"] == 12 and numbers["patches"] == 4
    z = (model.patch_errors(good) - model.error_mean) / model.error_std
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    output = model(good[:3])
    assert output["maps"].shape == (3, 32, 32)
    assert torch.allclose(output["scores"], output["maps"].flatten(1).amax(1))
    fresh = recon(mae_run, samples=2)
    with pytest.raises(RuntimeError, match="not been fitted"):
        fresh(good[:1])
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(good[:3])["maps"], output["maps"])


def test_a_run_that_is_not_an_mae_pretraining_is_refused(tmp_path, mae_run):
    with pytest.raises(dl.DataError, match="not a run folder"):
        recon(tmp_path)
    with pytest.raises(dl.DataError, match="does not hold this MAE's tensors.*in_chans and img_size"):
        dl.create("backbone", {"name": "mae_recon", "weights": str(mae_run), "in_chans": 3, "img_size": 32})


def test_a_fitted_model_rebuilt_without_its_run_loads_the_pretrained_architecture(mae_run, tmp_path):
    """predict and evaluate rebuild a model with weights=None: the MAE's small decoder must come back from the
    checkpoint, not MAE's defaults (8 x 512)."""
    model = recon(mae_run, samples=2)
    images = torch.randn(6, 1, 32, 32)
    model.fit(iter([images]))
    rebuilt = dl.create("backbone", {"name": "mae_recon", "in_chans": 1, "img_size": 32, "samples": 2})
    assert rebuilt.mae.decoder_pred.in_features == 512  # MAE's default decoder, before loading
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.mae.decoder_pred.in_features == 32 and rebuilt.mae.count == 2
    assert torch.equal(rebuilt(images)["maps"], model(images)["maps"])


def test_trained_through_the_engine_and_predicted_from_its_checkpoint(mae_run, tmp_path):
    data = write_two_class_folder(tmp_path / "cells", per_class=8, size=32)
    run = dl.train({"data": {"dataset": str(data), "good_class": "dark", "image_size": 32, "channels": 1,
                             "split": [0.5, 0.5]},
                    "model": {"name": "mae_recon", "weights": str(mae_run), "samples": 2}}, out=tmp_path / "run")
    assert run.scores["image_auroc"] >= 0  # evaluated from the rebuilt model
    trained = dl.load_trained(tmp_path / "run")
    assert trained.task == "anomaly" and trained.model.mae.decoder_pred.in_features == 32

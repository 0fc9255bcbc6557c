"""Segmentation backbones of SPEC 003: shapes, the command line, encoder names, weights offline and from files."""

from __future__ import annotations

import json
import logging

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

import defectlab as dl  # noqa: E402
from defectlab_plugins.segmentation_backbones.segnet import SegNet  # noqa: E402
from defectlab_plugins.segmentation_backbones.weights import load_local_weights  # noqa: E402

SEGMENTATION = ["deeplabv3", "deeplabv3plus", "fpn", "pspnet", "segnet", "unet", "unetplusplus"]


def build(name: str, **params):
    return dl.create("backbone", name, **params).eval()


def first_conv(module: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def test_registered_for_the_segment_task_with_documented_parameters():
    components = {c.name: c for c in dl.list_components("backbone") if c.plugin == "segmentation_backbones"}
    assert sorted(components) == SEGMENTATION
    for component in components.values():
        assert component.attributes["tasks"] == ["segment"]
        assert component.summary and "\n" not in component.summary
        names = [p.name for p in component.parameters]
        assert {"num_classes", "in_chans", "weights"} <= set(names)
        assert all(p.doc and p.type_name != "any" for p in component.parameters), component.name


@pytest.mark.parametrize("name", SEGMENTATION)
@pytest.mark.parametrize(("in_chans", "num_classes"), [(1, 1), (3, 2)])
def test_output_is_one_logit_map_per_class_at_input_size(name, in_chans, num_classes):
    model = build(name, in_chans=in_chans, num_classes=num_classes)
    with torch.no_grad():
        out = model(torch.rand(2, in_chans, 64, 64))
    assert out.shape == (2, num_classes, 64, 64)
    assert isinstance(model.encoder, torch.nn.Module)
    assert first_conv(model.encoder).in_channels == in_chans  # the encoder takes the input


def test_show_backbone_unet_json(run_cli):
    result = run_cli("show", "backbone", "unet", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["tasks"] == ["segment"] and info["plugin"] == "segmentation_backbones"
    assert [(p["name"], p["default"]) for p in info["parameters"]] == [
        ("encoder", "resnet18"), ("num_classes", 1), ("in_chans", 3), ("weights", None)]
    assert info["parameters"][3]["type"] == "str | None" and "imagenet" in info["parameters"][3]["doc"]


def test_name_value_shorthand_sets_the_encoder():
    assert len(dl.create("backbone", "unet:resnet34").encoder.layer1) == 3  # resnet18 has 2 blocks there


def test_unknown_encoder_names_close_matches():
    with pytest.raises(dl.ParameterError, match=r"unknown encoder 'resnet19'; did you mean 'resnet18'"):
        dl.create("backbone", "fpn", encoder="resnet19")
    with pytest.raises(dl.ParameterError, match="efficientnet-b7"):
        dl.create("backbone", "unet:efficientnet-b9")


def test_imagenet_weights_offline_say_how_to_use_a_file_and_do_not_download(monkeypatch):
    import segmentation_models_pytorch.encoders as encoders

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(encoders, "hf_hub_download", no_download)
    with pytest.raises(dl.DataError, match="HF_HUB_OFFLINE") as error:
        dl.create("backbone", "deeplabv3", weights="imagenet")
    assert "weights='weights.pt'" in str(error.value)


def test_weights_that_are_neither_file_nor_source():
    with pytest.raises(dl.DataError, match=r"not a file, nor a named source .*'imagenet'"):
        dl.create("backbone", "unet", weights="no/such/file.pt")
    with pytest.raises(dl.DataError, match="sources: none"):
        dl.create("backbone", "segnet", weights="imagenet")


@pytest.mark.parametrize("name", ["unet", "segnet"])
def test_local_weights_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    original = build(name, in_chans=1)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": original.state_dict()}, path)  # a checkpoint dict is unwrapped
    loaded = build(name, in_chans=1, weights=str(path))
    report = loaded.weights_report
    assert len(report.loaded) == len(original.state_dict()) and not report.skipped and not report.missing
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(original(x), loaded(x))
    assert not torch.equal(build(name, in_chans=1)(x), original(x))  # fresh weights differ


def test_other_architecture_loads_the_encoder_and_reports_skipped_tensors(tmp_path, caplog):
    unet = build("unet")
    path = tmp_path / "unet.pt"
    torch.save(unet.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="defectlab.backbones"):
        fpn = build("fpn", weights=str(path))
    report = fpn.weights_report
    decoder = [k for k in unet.state_dict() if k.startswith("decoder.")]
    assert decoder and set(decoder) <= set(report.unused)  # unet's decoder names are not in an fpn
    encoder = {f"encoder.{k}" for k in unet.encoder.state_dict()}
    assert {k for k in report.loaded if k.startswith("encoder.")} == encoder
    assert report.skipped["segmentation_head.0.weight"] == ((1, 16, 3, 3), (1, 128, 1, 1))  # (file, model)
    assert any(k.startswith("decoder.") for k in report.missing)  # fpn's own decoder stays random
    for key, value in unet.encoder.state_dict().items():
        assert torch.equal(fpn.encoder.state_dict()[key], value)
    assert f"skipped {len(report.skipped)}" in caplog.text and f"{len(report.unused)} in the source only" in caplog.text


def test_encoder_only_file_and_rgb_to_grey_first_convolution(tmp_path):
    rgb = build("unet", in_chans=3)
    path = tmp_path / "encoder.pt"
    torch.save(rgb.encoder.state_dict(), path)
    grey = build("pspnet", in_chans=1, weights=str(path))
    # pspnet uses 3 of resnet18's 5 stages: what the file has beyond them is reported, not loaded
    left_out = [*grey.weights_report.skipped, *grey.weights_report.unused]  # model names, file names
    assert all(k.removeprefix("encoder.").startswith("layer4.") for k in left_out)
    expected = rgb.encoder.conv1.weight.sum(dim=1, keepdim=True)  # RGB kernels summed over channels
    assert torch.allclose(grey.encoder.conv1.weight, expected)
    assert torch.equal(grey.encoder.layer3[0].conv1.weight, rgb.encoder.layer3[0].conv1.weight)


def test_a_file_of_which_nothing_fits_is_an_error(tmp_path):
    path = tmp_path / "segnet.pt"
    torch.save(SegNet(base_channels=4, depth=2).state_dict(), path)
    with pytest.raises(dl.DataError, match="none of the .* tensors"):
        build("unet", weights=str(path))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(dl.DataError, match=r"'.*junk\.pt' is not a defectlab weights file"):
        load_local_weights(SegNet(), tmp_path / "junk.pt")


def test_segnet_unpooling_restores_odd_input_sizes():
    model = build("segnet", in_chans=1, num_classes=2, base_channels=8, depth=4)
    assert model.encoder.out_channels == [8, 16, 32, 64]
    with torch.no_grad():
        assert model(torch.rand(1, 1, 45, 37)).shape == (1, 2, 45, 37)  # 45 -> 22 -> 11 -> 5 -> 2 and back
    with pytest.raises(dl.DataError, match="at least 16x16"):
        model(torch.rand(1, 1, 15, 40))
    assert build("segnet", base_channels=4, depth=6).encoder.out_channels == [4, 8, 16, 32, 32, 32]


def test_segnet_decoder_puts_values_back_where_the_maxima_were():
    model = build("segnet", in_chans=1, base_channels=2, depth=1)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        features = model.encoder.stages[0](x)
        pooled, indices = model.encoder.pool(features)
        unpooled = model.decoder.unpool(pooled, indices, output_size=features.shape[-2:])
    kept = unpooled != 0
    assert int(kept.sum()) <= features.numel() // 4
    assert torch.equal(unpooled[kept], features[kept])  # each maximum is back at its own position

"""Classification backbones: GeM, attention, DropBlock, freezing, weight loading and the registry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import defectlab as dl
import pytest
import torch
import torch.nn.functional as F
from defectlab_plugins.classification_backbones.resnet import GeM, SpatialSelfAttention

EARLY = ("conv1", "bn1", "layer1", "layer2")


def backbone(name: str, **params) -> torch.nn.Module:
    return dl.create("backbone", name, **params)


def images(n: int = 2, chans: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, chans, size, size, generator=torch.Generator().manual_seed(seed))


# --- GeM pooling -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 4, 5, 7), (3, 16, 8, 8), (1, 512, 2, 2)])
def test_gem_with_p_1_is_average_pooling(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) + 0.01
    assert torch.equal(GeM(p=1.0)(x), F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_gem_with_large_p_approaches_max_pooling():
    x = torch.rand(3, 8, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 1e-3
    p, positions = 50.0, 64
    gem, peak = GeM(p=p).double()(x), x.amax(dim=(-2, -1))
    # mean(x^p) lies in [max^p / n, max^p], so the GeM lies in [max * n^(-1/p), max]
    assert torch.all(gem <= peak * (1 + 1e-12))
    assert torch.all(gem >= peak * positions ** (-1 / p) * (1 - 1e-12))
    assert torch.allclose(gem, peak, rtol=0.1)
    assert not torch.allclose(GeM(p=3.0).double()(x), peak, rtol=0.1)


def test_gem_exponent_is_learned():
    model = backbone("resnet18", pooling="gem", gem_p=3.0)
    assert dict(model.named_parameters())["pool.p"] is model.pool.p
    optimiser = torch.optim.SGD([model.pool.p], lr=0.1)
    F.cross_entropy(model(images(4)), torch.tensor([0, 1, 0, 1])).backward()  # layer4: 2x2, so p matters
    assert model.pool.p.grad is not None and model.pool.p.grad.abs().item() > 0
    optimiser.step()
    assert model.pool.p.item() != 3.0


# --- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "params", "dim"), [
    ("resnet18", {}, 512),
    ("resnet34", {"in_chans": 1}, 512),
    ("resnet50", {"in_chans": 1}, 2048),
    ("vit_tiny", {"img_size": 64, "in_chans": 1}, 192),
    ("vit_small", {"img_size": 48}, 384),
    ("vit_base", {"img_size": 32, "in_chans": 1}, 768),
    ("timm:efficientnet_b0", {"in_chans": 1}, 1280),
])
def test_output_shapes(name, params, dim):
    model = backbone(name, num_classes=3, **params).eval()
    x = images(2, params.get("in_chans", 3), params.get("img_size", 64))
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        assert model.forward_features(x).shape == (2, dim)
    assert set(model.tasks) == {"classify", "embed"}


def test_every_resnet_option_at_once_trains():
    model = backbone("resnet18", num_classes=4, pooling="gem", head_hidden=32, head_dropout=0.2,
                     attention="layer1,layer2", dropblock=["layer3", "layer4"], dropblock_size=3)
    assert [type(m).__name__ for m in model.head] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert set(model.attention) == {"layer1", "layer2"} and set(model.dropblock) == {"layer3", "layer4"}
    logits = model.train()(images(4))
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert logits.shape == (4, 4) and model.attention["layer1"].gamma.grad is not None


def test_vit_embedding_is_the_cls_token():
    model = backbone("vit_tiny", img_size=32).eval()
    x = images(2, size=32)
    with torch.no_grad():
        tokens = model.encoder.norm(model.encoder.blocks(model.encoder._pos_embed(model.encoder.patch_embed(x))))
        assert torch.allclose(model.forward_features(x), tokens[:, 0], atol=1e-6)


def test_backbone_and_head_are_separated():
    model = backbone("resnet18", pooling="gem", attention=["layer2"])
    keys = set(model.backbone_state_dict())
    assert keys == {k for k in model.state_dict() if not k.startswith("head.")}
    assert {"conv1.weight", "pool.p", "attention.layer2.gamma"} <= keys
    assert model.backbone_prefixes == ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "attention", "pool")


def test_unknown_option_names_are_parameter_errors():
    with pytest.raises(dl.ParameterError, match="layer4"):
        backbone("resnet18", dropblock=["layer5"])
    with pytest.raises(dl.ParameterError, match="'layer3'"):
        backbone("resnet18", freeze=["layer3x"])
    with pytest.raises(dl.ParameterError, match="dropblock_prob"):
        backbone("resnet18", dropblock_prob=1.5)


# --- freezing ----------------------------------------------------------------------------------

def train_a_few_steps(model: torch.nn.Module, steps: int = 3) -> None:
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=1e-2)
    model.train()
    for step in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(model(images(4, size=32, seed=step)), torch.tensor([0, 1, 1, 0])).backward()
        optimiser.step()


def test_freeze_stops_exactly_the_named_prefixes():
    model = backbone("resnet18", freeze=list(EARLY))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.split(".")[0] in EARLY}
    assert frozen and "layer3.0.conv1.weight" not in frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_a_few_steps(model)
    after = model.state_dict()
    for key, value in before.items():
        if key.split(".")[0] in EARLY:  # parameters and BatchNorm statistics alike
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["head.fc.weight"], before["head.fc.weight"])
    assert not torch.equal(after["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])
    assert not torch.equal(after["layer4.1.bn2.running_mean"], before["layer4.1.bn2.running_mean"])


def test_freeze_all_but_head_is_linear_probing():
    model = backbone("vit_tiny", img_size=32, freeze=["all_but_head"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.fc.weight", "head.fc.bias"}
    model = backbone("resnet18", pooling="gem", freeze="all_but_head")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.fc.weight", "head.fc.bias"}


# --- DropBlock ---------------------------------------------------------------------------------

def dropblock(size: int, prob: float) -> torch.nn.Module:
    """The DropBlock that resnet18 inserts after layer3 for ``dropblock_size`` and ``dropblock_prob``."""
    return backbone("resnet18", dropblock=["layer3"], dropblock_size=size, dropblock_prob=prob).dropblock["layer3"]


def test_dropblock_is_identity_in_eval_mode():
    x = torch.randn(2, 3, 16, 16)
    block = dropblock(5, 0.5).eval()
    assert torch.equal(block(x), x)


def test_dropblock_drops_contiguous_blocks_at_the_asked_rate():
    torch.manual_seed(0)
    size, prob = 5, 0.1
    out = dropblock(size, prob).train()(torch.ones(8, 4, 64, 64))
    dropped = (out == 0).float()
    assert abs(dropped.mean().item() - prob) < 0.02
    # every dropped position lies in a size x size square that is dropped whole (cut off at the border)
    pad = size // 2
    whole = -F.max_pool2d(-F.pad(dropped, (pad,) * 4, value=1.0), size, stride=1)
    covered = F.max_pool2d(F.pad(whole, (size - 1,) * 4), size, stride=1)[..., pad:-pad, pad:-pad]
    assert torch.equal(covered, dropped)
    assert not torch.equal(dropped[:, 0], dropped[:, 1])  # each channel drops its own blocks
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, out.numel() / kept.numel()))  # rescaled to keep the sum


# --- self-attention ----------------------------------------------------------------------------

def test_attention_is_the_identity_at_init():
    x = torch.randn(2, 16, 6, 5)
    block = SpatialSelfAttention(16, dropout=0.1).train()
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    assert not torch.allclose(block(x), x)


def test_attention_inserted_into_a_trained_resnet_changes_nothing_at_init():
    plain = backbone("resnet18").eval()
    with_attention = backbone("resnet18", attention=["layer1", "layer2"]).eval()
    with_attention.load_state_dict(plain.state_dict(), strict=False)
    x = images()
    with torch.no_grad():
        assert torch.equal(with_attention(x), plain(x))


# --- weights -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_from_a_local_file_reproduce_the_outputs(tmp_path, suffix):
    source = backbone("resnet18", num_classes=3, pooling="gem", gem_p=2.5).eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save({"model": source.state_dict(), "epoch": 7}, path)  # a training checkpoint
    loaded = backbone("resnet18", num_classes=3, pooling="gem", weights=str(path)).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    report = loaded.weights_report
    assert isinstance(report, dl.WeightReport)
    assert len(report.loaded) == len(source.state_dict()) and not (report.skipped or report.missing or report.unused)


def test_weights_of_another_architecture_report_what_did_not_fit(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(backbone("resnet50", num_classes=5).state_dict(), path)
    model = backbone("resnet18", weights=str(path))
    report = model.weights_report
    assert report.skipped["layer1.0.conv1.weight"] == ((64, 64, 1, 1), (64, 64, 3, 3))
    assert "head.fc.weight" in report.skipped and "layer1.0.conv3.weight" in report.unused
    assert "conv1.weight" in report.loaded and "layer1.0.conv1.weight" not in report.loaded
    assert report.missing == []  # every ResNet-18 name exists in a ResNet-50, some with other shapes
    assert "skipped head.fc.weight: source [5, 2048] vs model [2, 512]" in report.summary()


@pytest.mark.parametrize("variant", ["plain", "every_option"])
def test_resnet18_state_dicts_written_by_0_1_load_whole(tmp_path, variant):
    """Tensor names and shapes of 0.1.0's resnet18 (tests/data), with and without the hidden-layer head."""
    old = json.loads((Path(__file__).parent / "data" / "resnet18_state_dict_0_1.json").read_text())[variant]
    generator = torch.Generator().manual_seed(3)
    state = {name: torch.randn(shape, generator=generator) if shape else torch.tensor(5)
             for name, shape in old["tensors"].items()}
    torch.save(state, tmp_path / "old.pt")
    model = backbone("resnet18", weights=str(tmp_path / "old.pt"), **old["options"])
    report = model.weights_report
    assert not (report.skipped or report.missing or report.unused) and len(report.loaded) == len(state)
    assert [name for name in state if name.startswith("head.")] == [n for n in model.state_dict() if n.startswith("head.")]
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in state.items())


def test_a_new_head_keeps_the_transferred_backbone(tmp_path):
    source = backbone("resnet18", num_classes=5)
    path = tmp_path / "source.pt"
    torch.save(source.state_dict(), path)
    target = backbone("resnet18", num_classes=2, weights=str(path))
    assert set(target.weights_report.skipped) == {"head.fc.weight", "head.fc.bias"}
    for key, value in source.backbone_state_dict().items():
        assert torch.equal(target.backbone_state_dict()[key], value), key


def test_a_bare_timm_state_dict_loads_into_the_encoder(tmp_path):
    import timm

    bare = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).eval()
    path = tmp_path / "encoder.pth"
    torch.save(bare.state_dict(), path)
    model = backbone("vit_tiny", img_size=32, weights=str(path)).eval()
    assert not model.weights_report.unused and set(model.weights_report.missing) == {"head.fc.weight", "head.fc.bias"}
    x = images(size=32)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), bare(x))


def test_unusable_weights_files_are_data_errors(tmp_path):
    with pytest.raises(dl.DataError, match=r"is not a file, nor a named source of .*\(sources: 'imagenet'\)"):
        backbone("resnet18", weights=str(tmp_path / "missing.pt"))
    path = tmp_path / "other.pt"
    torch.save({"something.else": torch.zeros(3)}, path)
    with pytest.raises(dl.DataError, match="none of the 1 tensors"):
        backbone("resnet18", weights=str(path))
    path.write_text("not a checkpoint")
    with pytest.raises(dl.DataError, match="is not a defectlab weights file"):
        backbone("resnet18", weights=str(path))


@pytest.fixture
def no_downloads(monkeypatch):
    """Make any attempt at pretrained weights fail loudly, as a network error would."""
    import timm

    real, attempts = timm.create_model, []

    def create_model(name, pretrained=False, **kwargs):
        if pretrained:
            attempts.append(name)
            raise ConnectionError("no network in tests")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    return attempts


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny", "timm:efficientnet_b0"])
def test_imagenet_weights_offline_ask_for_a_local_file(monkeypatch, no_downloads, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(dl.DataError, match="HF_HUB_OFFLINE is set.*local .pt/.pth/.safetensors file"):
        backbone(name, weights="imagenet")
    assert no_downloads == []


def test_imagenet_weights_that_fail_to_download_ask_for_a_local_file(monkeypatch, no_downloads):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("defectlab.training.weights.hub_reachable", lambda: True)  # the hub answers, the download fails
    with pytest.raises(dl.DataError, match="no network in tests.*local .pt/.pth/.safetensors file"):
        backbone("resnet18", weights="imagenet")
    assert no_downloads == ["resnet18.tv_in1k"]


# --- registry and command line -----------------------------------------------------------------

def test_show_lists_the_parameters_with_docs(run_cli):
    result = run_cli("show", "backbone", "resnet18", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    params = {p["name"]: p for p in info["parameters"]}
    assert list(params)[:3] == ["num_classes", "in_chans", "weights"]
    assert {"pooling", "gem_p", "head_dropout", "head_hidden", "attention", "attention_dropout", "dropblock",
            "dropblock_size", "dropblock_prob", "freeze"} <= set(params)
    assert all(p["doc"] for p in params.values())
    assert params["pooling"]["type"] == "'avg' | 'gem'" and params["gem_p"]["default"] == 3.0
    assert info["tasks"] == ["classify", "embed"] and info["plugin"] == "classification_backbones"


def test_every_component_documents_every_parameter():
    for component in dl.list_components("backbone"):
        if component.plugin == "classification_backbones":
            assert all(p.doc for p in component.parameters), component.name


def test_timm_by_name_and_close_matches():
    model = backbone("timm:resnet18", num_classes=3).eval()
    with torch.no_grad():
        assert model(images(1)).shape == (1, 3)
    with pytest.raises(dl.ParameterError, match="did you mean 'resnet18'"):
        backbone("timm:resnet1")


def test_timm_models_with_a_conv_head_get_a_head_of_its_width():
    # MobileNetV3-Small-0.5 ends in 288 channels, then a 1x1 conv head to 1024: the embedding is 1024 wide
    model = backbone("timm:mobilenetv3_small_050", num_classes=3).eval()
    with torch.no_grad():
        assert model.forward_features(images(2)).shape == (2, 1024)
        assert model(images(2)).shape == (2, 3)
    assert model.num_features == 1024


def test_command_line_values_are_coerced():
    model = backbone("resnet18", freeze="conv1,bn1", attention="layer1", head_hidden="16", pooling="gem")
    assert not model.conv1.weight.requires_grad and model.layer1[0].conv1.weight.requires_grad
    assert set(model.attention) == {"layer1"} and model.head.hidden.out_features == 16
    assert math.isclose(model.pool.p.item(), 3.0)

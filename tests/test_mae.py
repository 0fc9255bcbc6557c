"""The MAE objective (SPEC 002, seed §2.6): exact-count masks of three shapes, visible-only encoding,
a loss on hidden patches only, normalised-pixel targets, the contract members and the bad inputs."""

from __future__ import annotations

import defectlab as dl
import pytest
import torch
from PIL import Image

from defectlab_plugins.mae.masking import block_masks, grid_masks, grid_strides, make_masks, random_masks
from defectlab_plugins.mae.objective import masked_mse
from defectlab_plugins.mae.patches import normalised_patches, patchify, unpatchify

TINY_DECODER = {"decoder_depth": 1, "decoder_width": 32, "decoder_heads": 4}
GRIDS = [(2, 2), (4, 4), (7, 7), (14, 14), (6, 9)]
RATIOS = [0.25, 0.4, 0.5, 0.6, 0.75, 0.9]


def vit(img_size: int = 32, in_chans: int = 1, name: str = "vit_tiny"):
    return dl.create("backbone", {"name": name, "img_size": img_size, "in_chans": in_chans, "num_classes": 2})


def mae(encoder=None, **settings):
    return dl.create("ssl", {"name": "mae", **TINY_DECODER, **settings}, encoder=encoder or vit())


def hidden_counts(ratio: float, rows: int, cols: int) -> list[int]:
    count = round(ratio * rows * cols)
    return [count] if 0 < count < rows * cols else []


def components(cells: set[tuple[int, int]]) -> int:
    """Number of 4-connected regions of a set of (row, col) cells."""
    left, regions = set(cells), 0
    while left:
        regions += 1
        stack = [left.pop()]
        while stack:
            y, x = stack.pop()
            for near in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if near in left:
                    left.remove(near)
                    stack.append(near)
    return regions


def cells_of(mask: torch.Tensor, cols: int) -> set[tuple[int, int]]:
    return {(int(i) // cols, int(i) % cols) for i in mask.nonzero().flatten()}


# --- masks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["random", "block", "grid"])
@pytest.mark.parametrize(("rows", "cols"), GRIDS)
def test_every_strategy_hides_exactly_round_ratio_times_n(strategy, rows, cols):
    torch.manual_seed(0)
    for ratio in RATIOS:
        for count in hidden_counts(ratio, rows, cols):
            masks = make_masks(strategy, 16, rows, cols, count)
            assert masks.shape == (16, rows * cols) and masks.dtype == torch.bool
            assert masks.sum(dim=1).tolist() == [count] * 16, (strategy, ratio, rows, cols)


def is_cut_rectangle(cells: set[tuple[int, int]]) -> bool:
    """Whether ``cells`` fill their bounding box but for a run at one end of one edge row or column,
    shorter than that edge."""
    ys, xs = [y for y, _ in cells], [x for _, x in cells]
    top, bottom, left, right = min(ys), max(ys), min(xs), max(xs)
    box = {(y, x) for y in range(top, bottom + 1) for x in range(left, right + 1)}
    missing = box - cells
    if not missing:
        return True
    for line, across, ends, edges in ((0, 1, (left, right), (top, bottom)), (1, 0, (top, bottom), (left, right))):
        if len({cell[line] for cell in missing}) == 1 and next(iter(missing))[line] in edges:
            run = sorted(cell[across] for cell in missing)
            contiguous = run == list(range(run[0], run[-1] + 1))
            if contiguous and (run[0] == ends[0] or run[-1] == ends[1]) and len(run) < ends[1] - ends[0] + 1:
                return True
    return False


@pytest.mark.parametrize(("rows", "cols"), GRIDS)
def test_a_block_is_one_connected_rectangle_cut_short_along_one_edge(rows, cols):
    """What is asserted: the hidden patches form one 4-connected region that fills its bounding box
    except for a run of patches at one end of one edge row or column, shorter than that edge (so the
    region is a rectangle when the count and the drawn width allow, and an almost-rectangle else)."""
    torch.manual_seed(1)
    for ratio in RATIOS:
        for count in hidden_counts(ratio, rows, cols):
            for mask in block_masks(20, rows, cols, count):
                cells = cells_of(mask, cols)
                assert len(cells) == count and components(cells) == 1
                assert is_cut_rectangle(cells), (rows, cols, count, sorted(cells))


def test_the_rectangle_check_refuses_other_shapes():
    assert is_cut_rectangle({(0, 0), (0, 1), (1, 0)}) and is_cut_rectangle({(2, 2), (2, 3), (3, 2), (3, 3)})
    assert not is_cut_rectangle({(0, 0), (0, 1), (0, 2), (1, 1)})  # a T: two missing cells, one in the middle
    assert not is_cut_rectangle({(0, 0), (1, 1)})
    assert not is_cut_rectangle({(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)})  # a hole in the middle of an edge


def test_blocks_move_and_change_shape_from_draw_to_draw():
    torch.manual_seed(2)
    masks = block_masks(50, 14, 14, 98)
    assert len({tuple(m.tolist()) for m in masks}) > 10
    widths = {len({x for _, x in cells_of(mask, 14)}) for mask in masks}
    assert len(widths) > 2


def test_grid_at_three_quarters_keeps_one_patch_in_every_2x2_cell_at_a_random_offset():
    torch.manual_seed(3)
    masks = grid_masks(40, 8, 8, 48)
    offsets = set()
    for mask in masks:
        visible = cells_of(~mask, 8)
        assert len(visible) == 16
        (oy, ox), = {(y % 2, x % 2) for y, x in visible}  # every visible patch on one 2x2 lattice
        assert visible == {(y, x) for y in range(oy, 8, 2) for x in range(ox, 8, 2)}
        offsets.add((oy, ox))
    assert offsets == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize(("rows", "cols"), GRIDS)
def test_grid_puts_the_sparser_set_on_a_lattice_of_the_documented_strides(rows, cols):
    torch.manual_seed(4)
    total = rows * cols
    for ratio in RATIOS:
        for count in hidden_counts(ratio, rows, cols):
            sparse_is_visible = count >= total - count
            points = total - count if sparse_is_visible else count
            sy, sx = grid_strides(rows, cols, points)
            assert abs(sy - sx) <= 1 and (rows // sy) * (cols // sx) >= points
            for mask in grid_masks(10, rows, cols, count):
                sparse = cells_of(~mask if sparse_is_visible else mask, cols)
                assert len(sparse) == points
                assert len({(y % sy, x % sx) for y, x in sparse}) == 1


def test_grid_strides_are_the_smallest_squarish_lattice():
    assert grid_strides(14, 14, 49) == (2, 2)  # ratio 0.75 of ViT-B/16 at 224: MAE's grid
    assert grid_strides(14, 14, 20) == (2, 3)  # ratio 0.9: 28 lattice points, 8 thinned away
    assert grid_strides(14, 14, 16) == (3, 3)
    assert grid_strides(2, 2, 1) == (2, 2)


def test_random_masks_cover_every_patch_alike():
    torch.manual_seed(5)
    frequency = random_masks(4000, 4, 4, 12).float().mean(dim=0)
    assert torch.allclose(frequency, torch.full((16,), 0.75), atol=0.03)


def test_masks_come_from_the_global_generator():
    model = mae(masking="block")
    images = torch.randn(4, 1, 32, 32)
    torch.manual_seed(7)
    first = model.views(images)["mask"]
    torch.manual_seed(7)
    assert torch.equal(first, model.views(images)["mask"])
    assert any(not torch.equal(first, model.views(images)["mask"]) for _ in range(10))


# --- patches and targets ---------------------------------------------------------------------

def test_patchify_orders_row_column_channel_and_unpatchify_inverts_it():
    images = torch.randn(2, 3, 32, 48)
    patches = patchify(images, (16, 16))
    assert patches.shape == (2, 6, 16 * 16 * 3)
    by_hand = images[1, :, 16:32, 32:48].permute(1, 2, 0).reshape(-1)  # patch (row 1, col 2) = index 5
    assert torch.equal(patches[1, 5], by_hand)
    assert torch.equal(unpatchify(patches, (2, 3), (16, 16)), images)


def test_normalised_pixel_targets_match_a_computation_by_hand():
    torch.manual_seed(8)
    images = torch.rand(2, 3, 32, 32) * 4 + 1
    model = mae(vit(in_chans=3), norm_pix_loss=True)
    targets = normalised_patches(patchify(images, model.patch))
    for b, row, col in [(0, 0, 0), (1, 1, 0), (1, 1, 1)]:
        values = images[b, :, 16 * row:16 * row + 16, 16 * col:16 * col + 16].permute(1, 2, 0).reshape(-1).double()
        mean = values.sum() / values.numel()
        variance = ((values - mean) ** 2).sum() / (values.numel() - 1)
        expected = (values - mean) / torch.sqrt(variance + 1e-6)
        assert torch.allclose(targets[b, 2 * row + col].double(), expected, atol=1e-5)
    # and the loss uses them: a prediction equal to the normalised targets scores 0 on the hidden patches
    views = model.views(images)
    predicted = model.predict(images, views["mask"])
    manual = ((predicted - targets) ** 2).mean(dim=-1)[views["mask"]].mean()
    assert torch.allclose(model.loss(views), manual, atol=1e-6)


def test_the_loss_is_the_mean_squared_error_of_the_hidden_patches_only():
    torch.manual_seed(9)
    pred = torch.randn(3, 4, 8, requires_grad=True)
    target = torch.randn(3, 4, 8)
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    loss = masked_mse(pred, target, mask)
    expected = sum(((pred[b, i] - target[b, i]) ** 2).mean() for b in range(3) for i in range(4) if mask[b, i]) / 9
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.count_nonzero(pred.grad[~mask]) == 0
    assert (pred.grad[mask].abs().sum(dim=-1) > 0).all()


def test_the_models_loss_has_no_gradient_through_the_prediction_of_visible_patches():
    model = mae(mask_ratio=0.5)
    images = torch.randn(2, 1, 32, 32)
    views = model.views(images)
    seen = {}

    def keep(module, inputs, output):
        output.retain_grad()
        seen["pred"] = output

    model.decoder_pred.register_forward_hook(keep)
    model.loss(views).backward()
    grad = seen["pred"].grad
    assert torch.count_nonzero(grad[~views["mask"]]) == 0
    assert (grad[views["mask"]].abs().sum(dim=-1) > 0).all()


# --- the encoder ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("img_size", "ratio", "visible"), [(32, 0.75, 1), (64, 0.75, 4), (64, 0.5, 8), (64, 0.9, 2)])
def test_the_encoder_sees_the_cls_token_and_the_visible_patches_only(img_size, ratio, visible):
    encoder = vit(img_size)
    model = mae(encoder, mask_ratio=ratio)
    shapes = []
    encoder.encoder.blocks[0].register_forward_hook(lambda module, inputs, output: shapes.append(tuple(inputs[0].shape)))
    model.loss(model.views(torch.randn(3, 1, img_size, img_size)))
    assert shapes == [(3, 1 + visible, 192)]


def test_visible_tokens_carry_their_own_position_embeddings():
    """The encoder's output is what timm computes when the hidden patches are simply absent."""
    torch.manual_seed(10)
    encoder = vit(64).eval()
    model = mae(encoder, mask_ratio=0.75).eval()
    images = torch.randn(1, 1, 64, 64)
    mask = torch.ones(1, 16, dtype=torch.bool)
    mask[0, [2, 9, 11, 15]] = False
    timm_vit = encoder.encoder
    tokens = timm_vit.patch_embed(images) + timm_vit.pos_embed[:, 1:]
    cls = timm_vit.cls_token + timm_vit.pos_embed[:, :1]
    expected = timm_vit.norm(timm_vit.blocks(torch.cat([cls, tokens[:, [2, 9, 11, 15]]], dim=1)))
    with torch.no_grad():
        assert torch.allclose(model.encode_visible(images, mask), expected, atol=1e-5)


def test_rgb_and_a_timm_vit_by_name_work_with_their_own_patch_pixels():
    model = mae(vit(in_chans=3), masking="grid")
    assert model.decoder_pred.out_features == 16 * 16 * 3
    assert model.loss(model.views(torch.randn(2, 3, 32, 32))).ndim == 0
    by_name = dl.create("backbone", {"name": "timm:vit_tiny_patch16_224", "in_chans": 1, "num_classes": 2})
    model = mae(by_name, mask_ratio=0.9, masking="block")
    assert model.grid == (14, 14) and model.count == 176
    views = model.views(torch.randn(2, 1, 224, 224))
    assert views["mask"].sum(dim=1).tolist() == [176, 176]
    assert torch.isfinite(model.loss(views))


# --- the contract ----------------------------------------------------------------------------------

def test_param_groups_hold_every_trainable_parameter_once_with_no_decay_on_biases_norms_and_tokens():
    encoder = vit()
    model = mae(encoder)
    encoder.encoder.patch_embed.proj.weight.requires_grad_(False)
    decayed, plain = model.param_groups()
    assert "weight_decay" not in decayed and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    ids = [id(p) for group in (decayed, plain) for p in group["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert {"mask_token", "encoder.encoder.pos_embed", "encoder.encoder.cls_token", "decoder_embed.bias",
            "decoder_norm.weight", "encoder.encoder.blocks.0.norm1.weight"} <= plain_names
    decayed_names = {names[id(p)] for p in decayed["params"]}
    assert {"decoder_embed.weight", "encoder.encoder.blocks.0.attn.qkv.weight"} <= decayed_names
    assert all(p.ndim >= 2 for p in decayed["params"])


def test_a_few_steps_of_a_plain_loop_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(11)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    images = torch.stack([(ys * a + xs * b)[None] for a, b in [(1, 0), (0, 1), (1, 1), (-1, 0.5)]])
    model = mae(mask_ratio=0.5)
    optimizer = torch.optim.AdamW(model.param_groups(), lr=2e-3, weight_decay=0.05)
    fixed = model.views(images)
    with torch.no_grad():
        before = model.eval().loss(fixed).item()  # in eval mode: not counted in epoch_metrics
    model.train()
    losses = []
    for step in range(20):
        loss = model.loss(model.views(images))
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_step((step + 1) / 20, optimizer)
    with torch.no_grad():
        after = model.eval().loss(fixed).item()
    assert after < 0.75 * before  # about 0.4-0.6 of it in trials with other seeds
    metrics = model.epoch_metrics()
    assert set(metrics) == {"masked_pixel_mse"}  # the loss itself without norm_pix_loss, over the training steps
    assert metrics["masked_pixel_mse"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert model.epoch_metrics() == {}


def test_the_pixel_metric_undoes_the_patch_normalisation():
    torch.manual_seed(12)
    model = mae(norm_pix_loss=True)
    images = torch.rand(2, 1, 32, 32) * 3
    views = model.views(images)
    model.loss(views)
    pixels = patchify(images, model.patch)
    with torch.no_grad():
        pred = model.predict(images, views["mask"])
        std = (pixels.var(dim=-1, keepdim=True) + 1e-6).sqrt()
        expected = masked_mse(pred * std + pixels.mean(dim=-1, keepdim=True), pixels, views["mask"])
    assert model.epoch_metrics()["masked_pixel_mse"] == pytest.approx(float(expected), rel=1e-5)


def test_export_encoder_is_the_backbone_without_the_decoder():
    encoder = vit()
    model = mae(encoder)
    exported = model.export_encoder()
    assert exported is encoder
    state = exported.state_dict()
    assert not any("decoder" in key or "mask_token" in key for key in state)
    fresh = vit()
    assert not fresh.load_state_dict(state, strict=True).missing_keys
    assert {key for key in model.state_dict() if key.startswith("encoder.")} == {f"encoder.{k}" for k in state}


def test_reconstruction_pastes_the_visible_patches_back():
    model = mae(vit(64), mask_ratio=0.75).eval()
    images = torch.randn(2, 1, 64, 64)
    mask = model.views(images)["mask"]
    with torch.no_grad():
        rebuilt = model.reconstruct(images, mask)
    assert rebuilt.shape == images.shape
    same = (patchify(rebuilt, model.patch) == patchify(images, model.patch)).all(dim=-1)
    assert torch.equal(same, ~mask)


def test_write_draws_a_png_and_leaves_the_global_generator_and_mode_alone(tmp_path):
    model = mae(vit(in_chans=3))
    images = torch.randn(10, 3, 32, 32)
    state = torch.get_rng_state()
    written = model.write(tmp_path / "pictures", images)
    assert set(written) == {"reconstructions"} and written["reconstructions"].suffix == ".png"
    assert torch.equal(torch.get_rng_state(), state) and model.training
    with Image.open(written["reconstructions"]) as picture:
        width, height = picture.size
    assert width > height  # eight columns of images, three rows
    assert model.write(tmp_path, images)["reconstructions"].read_bytes() == written["reconstructions"].read_bytes()


# --- bad input -----------------------------------------------------------------------------------

def test_a_non_vit_encoder_is_refused():
    resnet = dl.create("backbone", {"name": "resnet18", "in_chans": 1, "num_classes": 2})
    with pytest.raises(dl.ParameterError, match="needs a ViT encoder"):
        dl.create("ssl", "mae", encoder=resnet)
    with pytest.raises(dl.ParameterError, match="encoder"):
        dl.create("ssl", "mae", encoder="vit_tiny")
    with pytest.raises(dl.ParameterError, match="required"):
        dl.create("ssl", "mae")


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2])
def test_a_mask_ratio_outside_the_open_interval_is_refused(ratio):
    with pytest.raises(dl.ParameterError, match="mask_ratio"):
        mae(mask_ratio=ratio)


def test_a_ratio_that_rounds_to_no_hidden_or_no_visible_patch_is_refused():
    with pytest.raises(dl.ParameterError, match="hides round"):
        mae(mask_ratio=0.9)  # 4 patches: round(3.6) = 4
    with pytest.raises(dl.ParameterError, match="hides round"):
        mae(mask_ratio=0.1)


def test_unknown_names_and_bad_decoder_settings_are_refused():
    with pytest.raises(dl.ParameterError, match="'random' | 'block' | 'grid'"):
        mae(masking="checkerboard")
    with pytest.raises(dl.UnknownComponentError):
        dl.create("ssl", "maee", encoder=vit())
    with pytest.raises(dl.ParameterError, match="decoder_width"):
        mae(decoder_width=30, decoder_heads=5)
    with pytest.raises(dl.ParameterError, match="decoder_depth"):
        mae(decoder_depth=0)


def test_an_image_size_that_is_no_multiple_of_the_patch_size_is_refused():
    with pytest.raises(dl.ParameterError, match="not a multiple of its patch size 16x16"):
        mae(vit(40))
    model = mae()
    with pytest.raises(dl.DataError, match=r"expects images \(N, 1, 32, 32\)"):
        model.views(torch.randn(2, 1, 48, 48))


def test_show_lists_every_parameter_with_its_doc(run_cli):
    result = run_cli("show", "ssl", "mae")
    assert result.exit_code == 0, result.output
    parameters = [p["name"] for p in dl.describe("ssl", "mae")["parameters"]]
    assert parameters == ["encoder", "mask_ratio", "masking", "decoder_depth", "decoder_width", "decoder_heads",
                          "decoder_mlp_ratio", "norm_pix_loss"]
    for parameter in dl.describe("ssl", "mae")["parameters"]:
        assert parameter["name"] in result.output and parameter["doc"]
        assert parameter["doc"].split()[0] in result.output
    assert "float in (0, 1)" in result.output and "'random' | 'block' | 'grid'" in result.output


def test_the_objective_meets_the_protocol():
    assert isinstance(mae(), dl.SSLObjective)

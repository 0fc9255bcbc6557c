"""Detection through defectlab's engine: box geometry under augmentation, detection batches, torchvision's FCOS
with its own assignment, and TGFS (SPEC 004): level choice, reweighting, identical inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection import FCOS

import defectlab as dl
from defectlab import Box, DefectDataset, Sample
from defectlab.data.data_module import DataModule, strata_labels
from defectlab.data.transforms import ImageTransform
from defectlab_plugins.fcos.component import fcos
from defectlab_plugins.fcos.detector import FCOSDetector
from defectlab_plugins.fcos.tgfs import level_of_anchors, owners


class BoxImages(DefectDataset):
    """Grey images with bright rectangles where their boxes are."""

    name = "box_images"
    task = "detect"

    def __init__(self, boxes: list[tuple[Box, ...]], size: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.classes = [f"k{i}" for i in range(classes)]
        self.samples = [Sample(key=f"i{i}", boxes=b) for i, b in enumerate(boxes)]
        self.size = size

    def load_image(self, index: int) -> np.ndarray:
        image = np.full((self.size, self.size), 40, dtype=np.uint8)
        for box in self.samples[index].boxes:
            x1, y1 = round((box.x_center - box.width / 2) * self.size), round((box.y_center - box.height / 2) * self.size)
            x2, y2 = round((box.x_center + box.width / 2) * self.size), round((box.y_center + box.height / 2) * self.size)
            image[y1:y2, x1:x2] = 220
        return image


def test_boxes_follow_every_flip_and_rotation_of_the_image():
    """The box moved by the transform is the bounding box of the moved bright rectangle, for each random draw."""
    transform = ImageTransform(32, channels=1, normalize="none", augment=("flip", "rotate"), task="detect")
    image = np.full((32, 32), 0, dtype=np.uint8)
    image[4:12, 18:30] = 255  # x 18..30, y 4..12
    boxes = torch.tensor([[18.0, 4.0, 30.0, 12.0]])
    seen = set()
    for seed in range(24):
        torch.manual_seed(seed)
        tensor, moved = transform(image, train=True, boxes=boxes)
        rows, cols = torch.nonzero(tensor[0] > 0.5, as_tuple=True)
        expected = [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
        assert moved[0].tolist() == expected
        seen.add(tuple(expected))
    assert len(seen) >= 6  # the draws covered flips and rotations, not one pose


def test_a_detection_batch_holds_pixel_boxes_and_labels_per_image():
    data = BoxImages([(Box(1, 0.5, 0.25, 0.5, 0.25),), (), (Box(0, 0.25, 0.75, 0.25, 0.5), Box(1, 0.5, 0.5, 1.0, 1.0))],
                     size=40)
    module = DataModule(data, split=(1.0, 0.0), image_size=32, channels=1, augment=(), batch_size=3)
    batch = next(iter(module.loader("train")))
    assert batch["image"].shape == (3, 1, 32, 32) and isinstance(batch["target"], list)
    by_index = dict(zip(batch["index"].tolist(), batch["target"]))
    assert by_index[0]["boxes"].tolist() == [[8.0, 4.0, 24.0, 12.0]] and by_index[0]["labels"].tolist() == [1]
    assert by_index[1]["boxes"].shape == (0, 4) and by_index[1]["labels"].shape == (0,)
    assert by_index[2]["boxes"].tolist() == [[4.0, 16.0, 12.0, 32.0], [0.0, 0.0, 32.0, 32.0]]


def test_detection_images_are_stratified_by_their_rarest_class():
    common, rare = Box(0, 0.5, 0.5, 0.2, 0.2), Box(1, 0.3, 0.3, 0.1, 0.1)
    data = BoxImages([(common,)] * 6 + [(common, rare)] * 2 + [()])
    assert strata_labels(data) == [0] * 6 + [1, 1, None]


def _model(assigner: str, **options) -> FCOSDetector:
    torch.manual_seed(0)
    return fcos(num_classes=2, in_chans=1, assigner=assigner, **options)


def _targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0], [30.0, 20.0, 62.0, 60.0]]), "labels": torch.tensor([0, 1])},
            {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}]


def test_fcos_assigner_is_torchvisions_own_loss():
    """assigner='fcos' gives exactly the losses of torchvision's FCOS.compute_loss on the same outputs."""
    model = _model("fcos").train()
    images = torch.rand(2, 1, 64, 64)
    ours = model(images, _targets())
    captured = {}
    original = FCOS.compute_loss

    def spy(self, targets, head_outputs, anchors, num_anchors_per_level):
        captured.update(value=original(self, targets, head_outputs, anchors, num_anchors_per_level))
        return captured["value"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FCOS, "compute_loss", spy)
        again = model(images, _targets())
    assert set(ours) == {"classification", "bbox_regression", "bbox_ctrness"}
    for name in ours:
        assert torch.equal(ours[name], again[name]) and torch.equal(again[name], captured["value"][name])


def _handmade_outputs(model: FCOSDetector, good_level: int, size: int = 128):
    """Anchors of a 128 px image, and head outputs that predict box 0 perfectly (right class, right box) on
    ``good_level`` only: everywhere else the class logits say 'no defect' and the boxes are tiny."""
    model.eval()
    features = [torch.zeros(1, 256, size // s, size // s) for s in (8, 16, 32, 64, 128)]
    from torchvision.models.detection.image_list import ImageList

    anchors = model.anchor_generator(ImageList(torch.zeros(1, 1, size, size), [(size, size)]), features)[0]
    counts = [f.shape[2] * f.shape[3] for f in features]
    box = torch.tensor([[24.0, 24.0, 88.0, 88.0]])
    levels = level_of_anchors(counts, anchors.device)
    logits = torch.full((len(anchors), 2), -6.0)
    regression = model.box_coder.encode(anchors, (anchors[:, :2] + anchors[:, 2:]).div(2).repeat(1, 2)
                                        + torch.tensor([-0.5, -0.5, 0.5, 0.5]))
    good = levels == good_level
    logits[good, 0] = 6.0
    regression[good] = model.box_coder.encode(anchors[good], box.expand(int(good.sum()), 4))
    return {"boxes": box, "labels": torch.tensor([0])}, logits, regression, anchors, counts, levels


@pytest.mark.parametrize("good_level", [0, 1, 2])
def test_tgfs_gives_each_box_the_positives_of_its_lowest_loss_level(good_level):
    model = _model("tgfs")
    target, logits, regression, anchors, counts, levels = _handmade_outputs(model, good_level)
    matched, weights = model.select(target, logits, regression, anchors, counts)
    positives = torch.nonzero(matched == 0).flatten()
    assert len(positives) and set(levels[positives].tolist()) == {good_level}
    # every candidate of that level is taken: inside the box, within 1.5 strides of its centre
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    stride = 8 * 2 ** good_level
    inside = ((centres > 24) & (centres < 88)).all(1) & ((centres - 56).abs().amax(1) < 1.5 * stride)
    assert set(positives.tolist()) == set(torch.nonzero(inside & (levels == good_level)).flatten().tolist())
    assert torch.allclose(weights[positives].mean(), torch.tensor(1.0))  # a box's positives average weight 1
    assert (weights[matched < 0] == 1).all()


def test_tgfs_reweighting_values():
    """w_i = exp(-gamma c_i) * n_b / sum_j exp(-gamma c_j) over the positives j of the same box b."""
    model = _model("tgfs", tgfs_gamma=2.0)
    cost = torch.tensor([0.1, 0.5, 1.0, 0.3])
    box = torch.tensor([0, 0, 0, 1])
    weights = model.reweight(cost, box, 2)
    q = [math.exp(-2 * c) for c in (0.1, 0.5, 1.0)]
    expected = [3 * v / sum(q) for v in q] + [1.0]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    flat = _model("tgfs", tgfs_gamma=0.0).reweight(cost, box, 2)
    assert flat.tolist() == pytest.approx([1.0] * 4)
    assert model.candidate_cost(torch.tensor([0.2]), torch.tensor([0.5])).item() == pytest.approx(0.7)


def test_a_point_claimed_by_two_boxes_goes_to_the_smaller():
    point, box = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 0, 2])
    area = torch.tensor([100.0, 50.0, 50.0, 100.0, 100.0])
    assert owners(point, box, area, 3).tolist() == [False, True, True, True, False]


def test_tgfs_trains_and_changes_nothing_at_inference():
    fcos, tgfs = _model("fcos"), _model("tgfs")
    tgfs.load_state_dict(fcos.state_dict())
    images = torch.rand(2, 1, 64, 64)
    losses = tgfs.train()(images, _targets())
    total = sum(losses.values())
    assert torch.isfinite(total) and set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    total.backward()
    assert fcos.head.classification_head.cls_logits.weight.grad is None
    assert tgfs.head.classification_head.cls_logits.weight.grad.abs().sum() > 0
    fcos.load_state_dict(tgfs.state_dict())  # the same weights (training moved the BatchNorm statistics)
    fcos.eval(), tgfs.eval()
    with torch.no_grad():
        a, b = fcos(images), tgfs(images)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert set(x) == {"boxes", "scores", "labels"} and all(torch.equal(x[k], y[k]) for k in x)


def test_tgfs_losses_stay_finite_for_boxes_thinner_than_the_grid():
    """A 1-pixel-wide box holds no P3 point: it takes the nearest one, outside it, and must not make a NaN."""
    model = _model("tgfs").train()
    targets = [{"boxes": torch.tensor([[124.0, 49.0, 125.0, 59.0], [9.0, 9.0, 13.0, 13.0]]), "labels": torch.tensor([1, 0])}]
    losses = model(torch.rand(1, 1, 128, 128), targets)
    assert all(torch.isfinite(value) for value in losses.values())


@torch.no_grad()
def test_no_regression_output_starts_dead():
    """torchvision starts the ReLU'd box regression at 0, where about half the outputs (and their gradients) are
    0; ours starts each side at one anchor size, so every output is alive at the first step."""
    model = _model("fcos").eval()
    features = list(model.backbone(torch.rand(2, 1, 128, 128)).values())
    regression, _ = model.head.regression_head(features)
    assert (regression > 0).all() and abs(float(regression.mean()) - 1) < 0.1
    torch.nn.init.zeros_(model.head.regression_head.bbox_reg.bias)  # torchvision's start
    regression, _ = model.head.regression_head(features)
    assert float((regression == 0).float().mean()) > 0.3


def test_grey_backbone_and_transfer_of_the_backbone_only(tmp_path):
    model = _model("fcos")
    assert model.backbone.body.conv1.in_channels == 1
    torch.save(model.state_dict(), tmp_path / "fcos.pt")
    other = fcos(num_classes=5, in_chans=1)
    report = dl.init_backbone_from(other, tmp_path / "fcos.pt")
    assert all(name.startswith("backbone.") for name in report.loaded)
    assert torch.equal(other.backbone.body.conv1.weight, model.backbone.body.conv1.weight)
    assert not torch.equal(other.head.regression_head.bbox_reg.weight, model.head.regression_head.bbox_reg.weight)


def test_fcos_trains_through_the_engine_and_logs_its_losses(tmp_path):
    data = BoxImages([(Box(i % 2, 0.5, 0.5, 0.4 + 0.02 * i, 0.4),) for i in range(8)], size=64)
    module = DataModule(data, split=(1.0, 0.0), image_size=64, channels=1, augment=(), batch_size=4)
    model = fcos(num_classes=2, in_chans=1, assigner="tgfs")
    trainer = dl.Trainer(model, None, module, tmp_path / "run",
                         settings=dl.TrainSettings(epochs=1, lr=1e-3, progress=False, monitor="train/loss"))
    trainer.fit()
    import json

    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    parts = [record[f"train/{k}"] for k in ("classification", "bbox_regression", "bbox_ctrness")]
    assert record["train/loss"] == pytest.approx(sum(parts), rel=1e-5)
    assert (tmp_path / "run" / "best.pt").is_file()

"""DINO (SPEC 002, seed 002 §2.5): loss, view pairs, teacher, EMA, centre, schedules, crops, monitoring."""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import defectlab as dl
from defectlab_plugins.dino.objective import DINO, dino_loss, view_pairs

SMALL = {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8}


class TinyEncoder(nn.Module):
    """A conv, global average pooling and a linear layer; records the input shapes it sees."""

    num_features = 6

    def __init__(self, in_chans: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, self.num_features)
        self.norm = nn.LayerNorm(self.num_features)
        self.seen: list[tuple[int, ...]] = []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return self.norm(self.fc(self.drop(self.conv(x).relu().mean((-2, -1)))))


def tiny_dino(**settings) -> DINO:
    return dl.create("ssl", {"name": "dino", **SMALL, "local_crops": 2, "local_size": 8, **settings},
                     encoder=TinyEncoder())


def images(n: int = 3, side: int = 16) -> torch.Tensor:
    return torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(1))


# --- the loss ---------------------------------------------------------------------------------------

def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def numpy_dino(student, teacher, center, student_temp, teacher_temp, global_views=2):
    """Direct computation: mean over the pairs (i, v), v != i, of the batch mean of -sum P_t log P_s."""
    batch = teacher.shape[0] // global_views
    views = student.shape[0] // batch
    log_s = log_softmax(student / student_temp).reshape(views, batch, -1)
    log_q = log_softmax((teacher - center) / teacher_temp).reshape(global_views, batch, -1)
    q = np.exp(log_q)
    ce = [-(q[i] * log_s[v]).sum(-1).mean() for i in range(global_views) for v in range(views) if v != i]
    kl = [(q[i] * (log_q[i] - log_s[v])).sum(-1).mean() for i in range(global_views) for v in range(views) if v != i]
    entropy = -(q * log_q).sum(-1).mean()
    return np.mean(ce), len(ce), np.mean(kl), entropy


def test_loss_on_a_hand_made_case_equals_numpy():
    # 2 images, 2 global views + 1 local, out_dim 4; rows are view-major (view v of image b in row 2v + b)
    student = np.array([[1.0, 0.5, -0.3, 0.0], [0.2, -1.0, 0.4, 0.8],    # global 1
                        [-0.5, 0.3, 0.9, -0.2], [0.0, 0.1, -0.6, 1.2],   # global 2
                        [0.7, -0.4, 0.2, 0.3], [-1.1, 0.6, 0.0, 0.5]])   # local
    teacher = np.array([[0.3, -0.2, 0.1, 0.05], [-0.1, 0.2, 0.0, 0.15],
                        [0.05, 0.1, -0.3, 0.2], [0.2, 0.0, 0.1, -0.1]])
    center = np.array([[0.01, -0.02, 0.03, 0.0]])
    loss, stats = dino_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(center), 0.1, 0.04)
    expected, pairs, kl, entropy = numpy_dino(student, teacher, center, 0.1, 0.04)
    assert pairs == 2 * 3 - 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(stats["kl"]) == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert float(stats["entropy"]) == pytest.approx(entropy, rel=1e-4, abs=1e-6)
    # an averaged loss, not the seed's sum over pairs (eq. 2.10)
    assert float(loss) < expected * pairs - 1e-3


def test_loss_with_a_tensor_temperature_and_random_logits():
    rng = np.random.default_rng(0)
    student, teacher, center = rng.normal(size=(5 * 3, 7)), rng.normal(size=(2 * 3, 7)), rng.normal(size=(1, 7))
    loss, _ = dino_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(center), 0.1, torch.tensor(0.06))
    assert float(loss) == pytest.approx(numpy_dino(student, teacher, center, 0.1, 0.06)[0], rel=1e-5)


@pytest.mark.parametrize("local_crops", [0, 1, 8])
def test_identical_views_are_never_paired(local_crops):
    views = 2 + local_crops
    pairs = view_pairs(2, views)
    assert len(pairs) == 2 * views - 2
    assert all(i != v for i, v in pairs)
    assert {i for i, _ in pairs} == {0, 1} and {v for _, v in pairs} == set(range(views))
    assert len(set(pairs)) == len(pairs)


def test_teacher_sees_the_global_views_only_and_student_sees_all():
    objective = tiny_dino(local_crops=3, global_size=12, local_size=6)
    objective.loss(objective.views(images(2)))
    assert objective.teacher["encoder"].seen == [(4, 1, 12, 12)]
    assert objective.encoder.seen == [(4, 1, 12, 12), (6, 1, 6, 6)]


# --- the teacher ------------------------------------------------------------------------------------

def test_teacher_gets_no_gradient_and_drops_nothing():
    objective = tiny_dino()
    objective.loss(objective.views(images())).backward()
    teacher = list(objective.teacher.parameters())
    assert teacher and all(not p.requires_grad and p.grad is None for p in teacher)
    assert all(p.grad is not None for name, p in objective.head.named_parameters() if p.requires_grad)
    assert objective.encoder.fc.weight.grad is not None
    globals_only = tiny_dino(local_crops=0)
    globals_only.loss(globals_only.views(images())).backward()
    assert globals_only.encoder.conv.weight.grad.abs().sum() > 0
    assert objective.teacher["encoder"].drop.p == 0.0 and objective.encoder.drop.p == 0.5
    assert all(p.requires_grad is False for p in objective.teacher.parameters())


def test_head_batch_norm_takes_out_what_every_embedding_shares():
    """Pooled ReLU features of a random ResNet share one large component: without batch norm the head maps
    every image to nearly the same bottleneck direction, and the centred teacher is uniform for all."""
    from defectlab_plugins.dino.head import DINOHead

    generator = torch.Generator().manual_seed(0)
    embeddings = 50 * torch.rand(1, 32, generator=generator) + torch.randn(64, 32, generator=generator)
    off_diagonal = ~torch.eye(64, dtype=torch.bool)

    def mean_cosine(head: DINOHead) -> float:
        with torch.no_grad():
            z = torch.nn.functional.normalize(head.mlp(embeddings), dim=-1)
        return float((z @ z.T)[off_diagonal].mean())

    torch.manual_seed(0)
    assert mean_cosine(DINOHead(32, 64, 64, 16)) > 0.99
    torch.manual_seed(0)
    assert mean_cosine(DINOHead(32, 64, 64, 16, batch_norm=True)) < 0.3
    objective = tiny_dino(head_batch_norm=True)
    for head in (objective.head, objective.teacher["head"]):
        assert [type(m) for m in head.mlp] == [nn.Linear, nn.BatchNorm1d, nn.GELU] * 2 + [nn.Linear]
    loss = objective.loss(objective.views(images(4)))
    loss.backward()
    assert torch.isfinite(loss) and objective.head.mlp[1].weight.grad is not None
    assert not any(isinstance(m, nn.BatchNorm1d) for m in tiny_dino().head.modules())


def test_ema_update_is_exact():
    objective = tiny_dino(momentum=0.9)
    with torch.no_grad():
        for p in objective.parameters():
            p.copy_(torch.randn_like(p))
    pairs = [(s.detach().clone(), t.detach().clone()) for (_, s), t in
             zip(objective.student_parameters(),
                 [*objective.teacher["encoder"].parameters(), *objective.teacher["head"].parameters()])]
    objective.after_step(0.5, None)
    m = 1 - (1 - 0.9) * (1 + math.cos(math.pi * 0.5)) / 2  # 0.95
    assert m == pytest.approx(0.95)
    teacher = [*objective.teacher["encoder"].parameters(), *objective.teacher["head"].parameters()]
    assert len(teacher) == len(pairs)
    for (student, before), after in zip(pairs, teacher):
        torch.testing.assert_close(after, m * before + (1 - m) * student, rtol=0, atol=1e-6)


def test_schedules_at_0_half_and_1():
    objective = tiny_dino(momentum=0.996, weight_decay=0.04, weight_decay_end=0.2, warmup_teacher_temp=0.04,
                          teacher_temp=0.07, warmup_teacher_temp_fraction=0.3)
    assert [objective.momentum_at(p) for p in (0, 0.5, 1)] == pytest.approx([0.996, 0.998, 1.0])
    assert [objective.weight_decay_at(p) for p in (0, 0.5, 1)] == pytest.approx([0.04, 0.12, 0.2])
    assert [objective.teacher_temp_at(p) for p in (0, 0.15, 0.5, 1)] == pytest.approx([0.04, 0.055, 0.07, 0.07])
    # the loss reads the temperature at the progress of the last after_step
    for p, temp in ((0.0, 0.04), (0.15, 0.055), (1.0, 0.07)):
        objective.after_step(p, None)
        assert float(objective._teacher_temp_tensor()) == pytest.approx(temp)
    no_warmup = tiny_dino(warmup_teacher_temp_fraction=0.0, teacher_temp=0.05)
    assert no_warmup.teacher_temp_at(0.0) == pytest.approx(0.05)


def test_centre_update_is_exact_and_comes_after_the_loss():
    objective = tiny_dino(center_momentum=0.8).train()  # training mode, where the centre moves
    objective.encoder.drop.p = 0.0  # so that the student gives the same output twice
    views = objective.views(images())
    teacher = objective.teacher_output(views)
    student = objective.student(views).detach()
    c0 = teacher.std() * torch.randn(1, objective.out_dim, generator=torch.Generator().manual_seed(2))
    objective.center.copy_(c0)
    c1 = 0.8 * c0 + 0.2 * teacher.mean(0, keepdim=True)
    expected, _ = dino_loss(student, teacher, c0, 0.1, 0.04)
    with_new_centre, _ = dino_loss(student, teacher, c1, 0.1, 0.04)
    assert abs(float(expected) - float(with_new_centre)) > 1e-3  # so the next line tells them apart
    loss = objective.loss(views).detach()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)  # the loss used the old centre
    torch.testing.assert_close(objective.center, c1)
    objective.eval().loss(views)  # a validation loss measures and changes nothing
    torch.testing.assert_close(objective.center, c1)


def test_the_loss_follows_the_teacher_temperature_schedule():
    objective = tiny_dino(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_fraction=0.5,
                          center_momentum=0.0).eval()
    views = objective.views(images())
    teacher, student = objective.teacher_output(views), objective.student(views).detach()
    for progress, temp in ((0.0, 0.04), (0.25, 0.055), (1.0, 0.07)):
        objective.center.zero_()
        objective.progress.fill_(progress)
        expected, _ = dino_loss(student, teacher, torch.zeros(1, objective.out_dim), 0.1, temp)
        assert float(objective.loss(views).detach()) == pytest.approx(float(expected), rel=1e-5)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_hold_the_student_only_with_decay_on_weights():
    objective = tiny_dino(weight_decay=0.04)
    groups = {g["name"]: g for g in objective.param_groups()}
    assert set(groups) == {"decay", "no_decay"}
    assert groups["decay"]["weight_decay"] == pytest.approx(0.04) and groups["no_decay"]["weight_decay"] == 0.0
    decay, no_decay = ids(groups["decay"]["params"]), ids(groups["no_decay"]["params"])
    student = {id(p) for _, p in objective.student_parameters() if p.requires_grad}
    assert decay | no_decay == student and not decay & no_decay
    assert not (decay | no_decay) & ids(objective.teacher.parameters())
    assert id(objective.encoder.fc.bias) in no_decay and id(objective.encoder.fc.weight) in decay
    assert id(objective.encoder.norm.weight) in no_decay and id(objective.head.mlp[0].weight) in decay
    assert id(objective.head.last_layer.parametrizations.weight.original0) not in student  # norm_last_layer


def test_after_step_sets_the_weight_decay_of_the_decay_group_only():
    objective = tiny_dino(weight_decay=0.04, weight_decay_end=0.2)
    optimizer = torch.optim.AdamW(objective.param_groups(), lr=1e-3)
    objective.after_step(0.5, optimizer)
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay == pytest.approx({"decay": 0.12, "no_decay": 0.0})


# --- crops and sizes --------------------------------------------------------------------------------

def test_views_shapes_and_reproducible_randomness():
    objective = tiny_dino(local_crops=3, global_size=12, local_size=8)
    batch = images(2, 16)
    torch.manual_seed(5)
    first = objective.views(batch)
    torch.manual_seed(5)
    again = objective.views(batch)
    assert [tuple(v.shape) for v in first] == [(2, 1, 12, 12)] * 2 + [(2, 1, 8, 8)] * 3
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(objective.views(batch)[0], first[0])


def test_a_whole_image_crop_is_the_image_and_flip_flips_it():
    batch = images(2, 16)
    plain = tiny_dino(global_size=16, global_scale=(1.0, 1.0), local_crops=0, flip=0.0, jitter=0.0).views(batch)
    torch.testing.assert_close(plain[0], batch)
    torch.testing.assert_close(plain[1], batch)
    flipped = tiny_dino(global_size=16, global_scale=(1.0, 1.0), local_crops=0, flip=1.0, jitter=0.0).views(batch)
    torch.testing.assert_close(flipped[0], batch.flip(-1))


def test_default_sizes_follow_the_images_and_the_reference_ratio():
    views = tiny_dino(local_size=None, local_crops=1).views(images(1, 56))
    assert [v.shape[-1] for v in views] == [56, 56, 24]  # 56 * 96/224 = 24


def test_images_smaller_than_a_crop_are_a_data_error():
    with pytest.raises(dl.DataError, match="global_size"):
        tiny_dino(global_size=24).views(images(1, 16))
    with pytest.raises(dl.DataError, match=r"local_size \(20\).*at most 16"):
        tiny_dino(global_size=16, local_size=20).views(images(1, 16))
    with pytest.raises(dl.DataError, match="N, C, H, W"):
        tiny_dino().views(torch.zeros(16, 16))


def test_unknown_names_and_bad_parameters_are_refused():
    with pytest.raises(dl.UnknownComponentError):
        dl.create("ssl", {"name": "dinoo"}, encoder=TinyEncoder())
    with pytest.raises(dl.ParameterError, match="teacher_tmp"):
        dl.create("ssl", {"name": "dino", "teacher_tmp": 0.04}, encoder=TinyEncoder())
    with pytest.raises(dl.ParameterError, match="center_momentum"):
        dl.create("ssl", {"name": "dino", "center_momentum": 1.0}, encoder=TinyEncoder())
    with pytest.raises(dl.ParameterError, match="global_scale"):
        dl.create("ssl", {"name": "dino", "global_scale": (0.9, 0.4)}, encoder=TinyEncoder())
    with pytest.raises(dl.ParameterError, match="encoder"):
        dl.create("ssl", {"name": "dino"})
    with pytest.raises(dl.ParameterError, match="forward_features"):
        dl.create("ssl", {"name": "dino"}, encoder=nn.Linear(2, 2))


def tiny_vit():
    return dl.create("backbone", {"name": "vit_tiny", "img_size": 32, "in_chans": 1, "num_classes": 2})


def test_vit_and_resnet_encoders_run_a_step():
    vit = tiny_vit()
    fresh_keys = set(tiny_vit().state_dict())
    resnet = dl.create("backbone", {"name": "resnet18", "in_chans": 1, "num_classes": 2})
    for backbone, local in ((vit, 16), (resnet, 14)):
        objective = dl.create("ssl", {"name": "dino", **SMALL, "local_crops": 1}, encoder=backbone)
        optimizer = torch.optim.AdamW(objective.param_groups(), lr=1e-3)
        views = objective.views(torch.randn(2, 1, 32, 32))
        assert [v.shape[-1] for v in views] == [32, 32, local]
        loss = objective.loss(views)
        loss.backward()
        optimizer.step()
        objective.after_step(0.1, optimizer)
        assert torch.isfinite(loss)
        assert objective.export_encoder() is backbone
    # the ViT takes its local crops at their own size; its state dict is unchanged
    assert set(vit.state_dict()) == fresh_keys


def test_vit_defaults_its_global_crops_to_its_img_size_and_checks_patch_multiples():
    with pytest.raises(dl.DataError, match="img_size"):
        dl.create("ssl", {"name": "dino", **SMALL}, encoder=tiny_vit()).views(torch.randn(1, 1, 24, 24))
    with pytest.raises(dl.ParameterError, match="patch size 16"):
        dl.create("ssl", {"name": "dino", **SMALL, "local_size": 20}, encoder=tiny_vit())


# --- a training loop and its monitoring ---------------------------------------------------------------

def test_a_few_steps_of_a_plain_loop_stay_finite_and_freeze_the_last_layer_first():
    torch.manual_seed(0)
    objective = tiny_dino(freeze_last_layer=0.5)
    optimizer = torch.optim.AdamW(objective.param_groups(), lr=1e-2)
    batch = images(4)
    last = objective.head.last_layer.parametrizations.weight.original1
    start, steps = last.detach().clone(), 4
    for step in range(steps):
        loss = objective.loss(objective.views(batch))
        optimizer.zero_grad()
        loss.backward()
        objective.before_optimizer_step(step / steps)
        if step < 2:
            assert last.grad is None
        optimizer.step()
        objective.after_step((step + 1) / steps, optimizer)
        assert torch.isfinite(loss)
        if step == 1:
            assert torch.equal(last, start)  # frozen for the first half
    assert not torch.equal(last, start)
    assert all(torch.isfinite(t).all() for t in objective.state_dict().values())
    metrics = objective.epoch_metrics()
    assert set(metrics) == {"teacher_entropy", "teacher_entropy_ratio", "kl", "collapse_fraction", "momentum",
                            "teacher_temp", "weight_decay"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["momentum"] == pytest.approx(1.0) and metrics["weight_decay"] == pytest.approx(0.2)
    assert 0 <= metrics["teacher_entropy_ratio"] <= 1 and metrics["kl"] >= -1e-5
    # read once, then reset: only the schedules' values are left
    assert set(objective.epoch_metrics()) == {"momentum", "teacher_temp", "weight_decay"}


@pytest.mark.parametrize("kind", ["uniform", "one output dimension"])
def test_a_forced_collapse_is_reported(monkeypatch, kind):
    objective = tiny_dino()
    assert objective.collapse_warning() is None
    k = objective.out_dim

    def constant(views):
        rows = 2 * views[0].shape[0]
        out = torch.zeros(rows, k)
        if kind != "uniform":
            out[:, 3] = 5.0  # every image on dimension 3
        return out

    monkeypatch.setattr(objective, "teacher_output", constant)
    for _ in range(3):
        objective.loss(objective.views(images()))
    metrics = objective.epoch_metrics()
    assert metrics["collapse_fraction"] == 1.0
    warning = objective.collapse_warning()
    assert warning is not None and kind in warning
    assert "teacher_temp" in warning and "momentum" in warning and "out_dim" in warning
    assert "head_batch_norm = true" in warning  # a convolutional encoder with the ViT's head
    with_batch_norm = tiny_dino(head_batch_norm=True)
    monkeypatch.setattr(with_batch_norm, "teacher_output", constant)
    with_batch_norm.loss(with_batch_norm.views(images(4)))
    assert "head_batch_norm" not in with_batch_norm.collapse_warning()
    if kind == "uniform":
        assert metrics["teacher_entropy_ratio"] == pytest.approx(1.0)


def test_a_spread_sharp_teacher_is_not_a_collapse(monkeypatch):
    objective = tiny_dino(out_dim=64)
    generator = torch.Generator().manual_seed(0)
    monkeypatch.setattr(objective, "teacher_output",
                        lambda views: torch.randn(2 * views[0].shape[0], 64, generator=generator))
    for _ in range(3):
        objective.loss(objective.views(images(8)))
    assert objective.epoch_metrics()["collapse_fraction"] == 0.0
    assert objective.collapse_warning() is None


def test_state_dict_carries_teacher_centre_and_progress():
    objective = tiny_dino()
    objective.after_step(0.25, None)
    objective.loss(objective.views(images()))
    state = objective.state_dict()
    assert "center" in state and float(state["progress"]) == pytest.approx(0.25)
    assert any(key.startswith("teacher.head.") for key in state)
    copy = tiny_dino()
    copy.load_state_dict(state)
    assert copy.current_progress() == pytest.approx(0.25)
    torch.testing.assert_close(copy.center, objective.center)


# --- the catalogue ----------------------------------------------------------------------------------

def test_show_lists_every_parameter_with_docs(run_cli):
    result = run_cli("show", "ssl", "dino", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    names = [p["name"] for p in info["parameters"]]
    assert names == list(inspect.signature(DINO).parameters)
    assert all(p["doc"] for p in info["parameters"]), [p["name"] for p in info["parameters"] if not p["doc"]]
    assert {p["name"]: p["default"] for p in info["parameters"]}["out_dim"] == 8192
    text = run_cli("show", "ssl", "dino")
    assert text.exit_code == 0 and "center_momentum" in text.output and "(required)" in text.output
    assert isinstance(dl.create("ssl", "dino", encoder=TinyEncoder(), out_dim=8), dl.SSLObjective)


def test_random_boxes_follow_the_scale_and_stay_inside_the_image():
    from defectlab_plugins.dino.crops import random_boxes

    torch.manual_seed(0)
    boxes = random_boxes(2000, 40, 30, (0.05, 0.4))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 30 + 1e-9).all() and (boxes[:, 3] <= 40 + 1e-9).all()
    area = w * h / (40 * 30)
    assert area.min() >= 0.05 - 1e-9 and area.max() <= 0.4 + 1e-9
    assert (w / h).min() >= 3 / 4 - 1e-9 and (w / h).max() <= 4 / 3 + 1e-9
    assert 0.2 < float(area.mean()) < 0.25  # uniform in [0.05, 0.4]: mean 0.225

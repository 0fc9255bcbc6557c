"""Time and memory of one self-supervised training step: defectlab's mae and dino against lightly's, in one run.

    python benchmarks/ssl_step.py [--size 96] [--batch 16] [--steps 10] [--warmup 3] [--rounds 3]
                                  [--objectives mae,dino] [--lightly-venv PATH] [--threads N]

Both sides train the same timm ViT-Tiny (``vit_tiny_patch16_224`` at ``--size`` with
``--channels`` input channels, no classifier; defectlab's ``vit_tiny`` backbone holds that model
as ``encoder.encoder``) on the same batch with the same optimiser (AdamW, same lr and weight decay):

- MAE: defectlab ``dl.create("ssl", {"name": "mae", ...})``: ``views`` (the masks), ``loss``,
  ``backward``, ``AdamW.step``, ``after_step``. lightly 1.6's MAE example: ``random_token_mask``,
  ``MaskedVisionTransformerTIMM.encode`` on the kept tokens, a linear embedding,
  ``MaskedVisionTransformerDecoderTIMM`` (``MAEDecoderTIMM`` is deprecated in 1.6 for it; same
  blocks), a linear prediction of the hidden patches, ``nn.MSELoss`` against ``utils.patchify``.
  Same mask ratio, decoder depth, width, heads and MLP ratio; raw-pixel targets on both sides.
- DINO: defectlab ``dl.create("ssl", {"name": "dino", ...})``: ``loss``, ``backward``,
  ``before_optimizer_step``, ``AdamW.step``, ``after_step`` (teacher EMA, weight decay schedule).
  lightly 1.6's DINO example: ``update_momentum`` of backbone and head, teacher on the 2 global
  views, student on all, ``DINOLoss`` (centre update inside), ``cancel_last_layer_gradients``,
  ``AdamW.step``. Same out_dim, hidden and bottleneck widths, temperatures, centre momentum and
  EMA momentum. The crops are pre-made random tensors, the same on both sides (2 global views of
  ``--size``, ``--local-crops`` local views of ``--local-size``): lightly makes its crops in
  DataLoader workers (``DINOTransform`` on PIL images), defectlab in the step (``views()`` on
  the batch's tensor); ``views()`` is timed apart and reported beside. lightly's example calls
  the networks once per view ("lightly"); "lightly batched" concatenates views of one size, as
  defectlab does.

Each (side, objective, round) is a fresh process, in its side's venv, so every figure starts
from the same state. In a round the processes of all sides are started and built one after the
other, then take turns step by step (one side's step, then the other's, the order swapped every
step, 50 ms apart; a waiting process is idle), so bursts of load from other processes hit every
side alike: ``--warmup`` untimed steps, then ``--steps`` timed ones each (wall: time.perf_counter,
cpu: the process's CPU time). Each round gives each side's median step; the table shows the median
over rounds, and the ratios defectlab / lightly come with the range of the per-round ratios
(aim: at most 1.0). torch's thread count is left as it is unless ``--threads`` sets it on both
sides; with two threads on a busy machine, a step can take several times as long (threads wait
for each other), the turns share that out but the range of the rounds widens.

Memory: ``peak RSS`` is the process's high-water resident set (``getrusage(RUSAGE_SELF).ru_maxrss``)
at the end, libraries included; ``build+train`` is that peak minus the resident set measured
after the imports and the input tensors were made, just before the model is built: weights,
optimiser state, teacher and the largest step's activations, the allocator's slack included.
(With ``--device cuda``: ``torch.cuda.max_memory_allocated`` instead.) ``saved`` is what one step's
forward keeps for its backward (distinct tensor storages, parameters left out), counted with
``torch.autograd.graph.saved_tensors_hooks`` on one more step after the timed ones: the
activation memory of each implementation, whatever the allocator keeps.

The loss check gives both implementations the same tensors (teacher and student logits with a
non-zero centre for DINO, predictions, targets and a mask for MAE) and prints the absolute
difference of the loss values, of the DINO centre after its update, of the patch layout
(``patchify``) and of the decoder's fixed sine-cosine positions, and a float64 evaluation of the
textbook formulas as the yardstick of both float32 losses. ``last loss`` in the table is the loss
of each side's last timed step, from its own random initialisation: a sanity check, not a comparison.

lightly is not a dependency of defectlab: the lightly side runs in its own venv (default
~/.cache/defectlab-bench/lightly-venv), made on first use with ``python -m venv`` and
``pip install lightly==1.6.*`` with torch, torchvision and timm pinned to the versions of the
running interpreter, so both sides run the same torch and timm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIGHTLY = "lightly==1.6.*"
DEFAULT_VENV = Path.home() / ".cache" / "defectlab-bench" / "lightly-venv"
PROGRESS = 0.5  # training progress at which the steps are taken (past DINO's last-layer freeze)
GLOBAL_VIEWS = 2
MARK = "@ssl_step@ "  # marks the workers' answers on their stdout
PAUSE = 0.05  # seconds between two steps, whichever side takes the next


# --- worker side: runs in either venv, so only the standard library at module level ------------

def current_rss() -> int:
    """Resident set of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """High-water resident set of this process, in bytes (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_inputs(cfg: dict, torch) -> dict:
    """The batch (MAE) or the pre-made crops (DINO), the same tensors on both sides (seeded, same torch)."""
    g = torch.Generator().manual_seed(1)
    b, c, s = cfg["batch"], cfg["channels"], cfg["size"]
    if cfg["objective"] == "mae":
        return {"images": torch.randn(b, c, s, s, generator=g)}
    views = [torch.randn(b, c, s, s, generator=g) for _ in range(GLOBAL_VIEWS)]
    views += [torch.randn(b, c, cfg["local_size"], cfg["local_size"], generator=g) for _ in range(cfg["local_crops"])]
    return {"views": views, "images": torch.randn(b, c, s, s, generator=g)}


def trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def saved_for_backward(step, module, torch) -> int:
    """Bytes of the distinct tensors that one step's forward keeps for its backward, parameters left out."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(saved.values())


def defectlab_step(cfg: dict, torch, inputs: dict):
    """One step of defectlab's objective as the engine runs it (no AMP, no clipping)."""
    import defectlab as dl

    encoder = dl.create("backbone", {"name": "vit_tiny", "img_size": cfg["size"], "in_chans": cfg["channels"],
                                     "num_classes": 2})  # what `pretrain` builds
    if cfg["objective"] == "mae":
        objective = dl.create("ssl", {"name": "mae", "mask_ratio": cfg["mask_ratio"], "masking": "random",
                                      "decoder_depth": cfg["decoder_depth"], "decoder_width": cfg["decoder_width"],
                                      "decoder_heads": cfg["decoder_heads"], "decoder_mlp_ratio": cfg["mlp_ratio"],
                                      "norm_pix_loss": False}, encoder=encoder)
    else:
        objective = dl.create("ssl", {
            "name": "dino", "out_dim": cfg["out_dim"], "hidden_dim": cfg["hidden_dim"],
            "bottleneck_dim": cfg["bottleneck_dim"], "local_crops": cfg["local_crops"],
            "global_size": cfg["size"], "local_size": cfg["local_size"], "student_temp": cfg["student_temp"],
            "teacher_temp": cfg["teacher_temp"], "warmup_teacher_temp": cfg["teacher_temp"],
            "center_momentum": cfg["center_momentum"], "momentum": cfg["momentum"],
            "weight_decay": cfg["weight_decay"], "weight_decay_end": cfg["weight_decay"]}, encoder=encoder)
    objective.to(cfg["device"]).train()
    optimizer = torch.optim.AdamW(objective.param_groups(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    before = getattr(objective, "before_optimizer_step", None)
    mae = cfg["objective"] == "mae"

    def step():
        views = objective.views(inputs["images"]) if mae else inputs["views"]
        loss = objective.loss(views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before is not None:
            before(PROGRESS)
        optimizer.step()
        objective.after_step(PROGRESS, optimizer)
        return loss

    extra = {}
    if not mae:
        def make_views():
            return objective.views(inputs["images"])
        extra["views"] = make_views
    return step, objective, extra


def lightly_step(cfg: dict, torch, inputs: dict):
    """One step as lightly 1.6's examples write it (examples/pytorch/mae.py and dino.py)."""
    import copy

    import timm
    from lightly.models import utils
    from torch import nn

    timm_kwargs = {"img_size": cfg["size"], "num_classes": 0, "in_chans": cfg["channels"]}
    if cfg["objective"] == "mae":
        from lightly.models.modules import (
            MaskedVisionTransformerDecoderTIMM,
            MaskedVisionTransformerTIMM,
        )
        from lightly.models.modules.masked_vision_transformer_timm import init_weights

        class MAE(nn.Module):
            def __init__(self, vit):
                super().__init__()
                width = cfg["decoder_width"]
                self.mask_ratio = cfg["mask_ratio"]
                self.patch_size = vit.patch_embed.patch_size[0]
                self.backbone = MaskedVisionTransformerTIMM(vit=vit)
                self.sequence_length = self.backbone.sequence_length
                self.decoder_embed = nn.Linear(vit.embed_dim, width)
                self.decoder = MaskedVisionTransformerDecoderTIMM(
                    num_patches=vit.patch_embed.num_patches, embed_dim=width, depth=cfg["decoder_depth"],
                    num_heads=cfg["decoder_heads"], num_prefix_tokens=vit.num_prefix_tokens,
                    mlp_ratio=cfg["mlp_ratio"], proj_drop_rate=0.0, attn_drop_rate=0.0)
                self.prediction_head = nn.Linear(width, self.patch_size ** 2 * cfg["channels"])
                self.decoder_embed.apply(init_weights)
                self.prediction_head.apply(init_weights)

            def forward(self, images):
                idx_keep, idx_mask = utils.random_token_mask(size=(images.shape[0], self.sequence_length),
                                                             mask_ratio=self.mask_ratio, device=images.device)
                x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
                x_decode = self.decoder_embed(x_encoded)
                x_masked = x_decode.new_zeros(images.shape[0], self.sequence_length, x_decode.shape[-1])
                x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
                x_decoded = self.decoder(x_masked, idx_mask=idx_mask)
                x_pred = self.prediction_head(utils.get_at_index(x_decoded, idx_mask))
                target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
                return x_pred, target

        model = MAE(timm.create_model("vit_tiny_patch16_224", **timm_kwargs)).to(cfg["device"]).train()
        criterion = nn.MSELoss()
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        images = inputs["images"]

        def step():
            predictions, targets = model(images)
            loss = criterion(predictions, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return loss

        return step, model, {}

    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    class DINO(nn.Module):
        def __init__(self, backbone, input_dim):
            super().__init__()
            head = (input_dim, cfg["hidden_dim"], cfg["bottleneck_dim"], cfg["out_dim"])
            self.student_backbone = backbone
            self.student_head = DINOProjectionHead(*head, freeze_last_layer=1)
            self.teacher_backbone = copy.deepcopy(backbone)
            self.teacher_head = DINOProjectionHead(*head)
            deactivate_requires_grad(self.teacher_backbone)
            deactivate_requires_grad(self.teacher_head)

        def forward(self, x):
            return self.student_head(self.student_backbone(x).flatten(start_dim=1))

        def forward_teacher(self, x):
            return self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1))

    # dynamic_img_size: the local crops are smaller than img_size (position embeddings interpolated)
    vit = timm.create_model("vit_tiny_patch16_224", dynamic_img_size=True, **timm_kwargs)
    model = DINO(vit, vit.embed_dim).to(cfg["device"]).train()
    criterion = DINOLoss(output_dim=cfg["out_dim"], warmup_teacher_temp=cfg["teacher_temp"],
                         teacher_temp=cfg["teacher_temp"], student_temp=cfg["student_temp"],
                         center_momentum=cfg["center_momentum"]).to(cfg["device"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    # the EMA momentum defectlab uses at the same progress: a cosine from `momentum` to 1
    momentum = 1 - (1 - cfg["momentum"]) * (1 + math.cos(math.pi * PROGRESS)) / 2
    views = inputs["views"]
    batched = cfg["side"] == "lightly batched"
    b = views[0].shape[0]
    global_batch, local_batch = torch.cat(views[:GLOBAL_VIEWS]), (
        torch.cat(views[GLOBAL_VIEWS:]) if len(views) > GLOBAL_VIEWS else None)

    def step():
        update_momentum(model.student_backbone, model.teacher_backbone, m=momentum)
        update_momentum(model.student_head, model.teacher_head, m=momentum)
        if batched:  # one pass per crop size, as defectlab does
            teacher_out = list(model.forward_teacher(global_batch).split(b))
            student = [model.forward(global_batch)] + ([model.forward(local_batch)] if local_batch is not None else [])
            student_out = list(torch.cat(student).split(b))
        else:  # the example: one pass per view
            teacher_out = [model.forward_teacher(view) for view in views[:GLOBAL_VIEWS]]
            student_out = [model.forward(view) for view in views]
        loss = criterion(teacher_out, student_out, teacher_temp=cfg["teacher_temp"])
        loss.backward()
        model.student_head.cancel_last_layer_gradients(current_epoch=1)  # past the frozen first epoch
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step, model, {}


def sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reply(message: dict) -> None:
    """One answer to the orchestrator, on its own marked line (libraries may print too)."""
    print(MARK + json.dumps(message), flush=True)


def serve(cfg: dict) -> None:
    """A fresh process for one side: build on "build", one timed step per "step", the rest on "finish".

    The orchestrator sends the commands to the processes of all sides in turns, step by step,
    so that the load of other processes hits every side alike.
    """
    import torch

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    inputs = make_inputs(cfg, torch)
    inputs = {k: ([t.to(cfg["device"]) for t in v] if isinstance(v, list) else v.to(cfg["device"]))
              for k, v in inputs.items()}
    import timm  # noqa: F401  (the libraries and plugins load before the baseline)

    if cfg["side"] == "defectlab":
        import defectlab as dl

        dl.list_components("backbone"), dl.list_components("ssl")
    else:
        import lightly.loss
        import lightly.models.modules  # noqa: F401

    cuda = cfg["device"].startswith("cuda")
    baseline = torch.cuda.memory_allocated() if cuda else current_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step = module = extra = loss = None
    for line in sys.stdin:
        command = line.strip()
        if command == "build":
            build = defectlab_step if cfg["side"] == "defectlab" else lightly_step
            step, module, extra = build(cfg, torch, inputs)
            reply({"built": (torch.cuda.memory_allocated() if cuda else current_rss()) - baseline})
        elif command == "step":
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = step()
            sync(torch, cfg["device"])
            reply({"wall": time.perf_counter() - start, "cpu": time.process_time() - start_cpu})
        elif command == "finish":
            peak = torch.cuda.max_memory_allocated() if cuda else peak_rss()
            result = {"peak": peak, "build_train": peak - baseline, "params": trainable(module),
                      "loss": float(loss.detach()), "threads": torch.get_num_threads(), "versions": versions(),
                      "saved": saved_for_backward(step, module, torch)}  # after the peak: not in it
            if "views" in extra:  # defectlab's DINO crops, timed apart
                times = []
                for i in range(cfg["steps"] + 2):
                    start = time.perf_counter()
                    extra["views"]()
                    sync(torch, cfg["device"])
                    times.append(time.perf_counter() - start)
                result["views_wall"] = statistics.median(times[2:])
            reply(result)
            return


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("torch", "timm", "lightly", "defectlab"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def loss_worker(cfg: dict) -> dict:
    """The loss values of one side on the shared tensors in ``cfg["file"]`` (written by the defectlab side)."""
    import torch

    path = Path(cfg["file"])
    if cfg["side"] == "defectlab":
        import defectlab as dl
        from defectlab_plugins.dino.objective import dino_loss
        from defectlab_plugins.mae.masking import random_masks
        from defectlab_plugins.mae.objective import masked_mse
        from defectlab_plugins.mae.patches import patchify, sincos_positions

        g = torch.Generator().manual_seed(2)
        b, k, views = cfg["batch"], cfg["out_dim"], GLOBAL_VIEWS + cfg["local_crops"]
        grid = cfg["size"] // 16
        shared = {
            # logits of the size a DINO head gives (cosines with the prototypes, |x| <= 1)
            "teacher": (0.3 * torch.randn(GLOBAL_VIEWS, b, k, generator=g)).clamp(-1, 1),
            "student": (0.3 * torch.randn(views, b, k, generator=g)).clamp(-1, 1),
            "center": 0.1 * torch.randn(1, k, generator=g),
            "images": torch.randn(b, cfg["channels"], cfg["size"], cfg["size"], generator=g),
            "pred": torch.randn(b, grid * grid, 256 * cfg["channels"], generator=g),
            "target": torch.randn(b, grid * grid, 256 * cfg["channels"], generator=g),
        }
        torch.manual_seed(3)
        shared["mask"] = random_masks(b, grid, grid, round(cfg["mask_ratio"] * grid * grid))
        torch.save(shared, path)
        loss, _ = dino_loss(shared["student"].flatten(0, 1), shared["teacher"].flatten(0, 1), shared["center"],
                            cfg["student_temp"], cfg["teacher_temp"])
        encoder = dl.create("backbone", {"name": "vit_tiny", "img_size": cfg["size"], "in_chans": cfg["channels"],
                                         "num_classes": 2})
        objective = dl.create("ssl", {"name": "dino", "out_dim": k, "hidden_dim": 32, "bottleneck_dim": 16,
                                      "center_momentum": cfg["center_momentum"]}, encoder=encoder)
        objective.center.copy_(shared["center"])
        objective.update_center(shared["teacher"].flatten(0, 1))
        out = {"dino": loss, "center": objective.center.reshape(-1).clone(),
               "mae": masked_mse(shared["pred"], shared["target"], shared["mask"]),
               "patchify": patchify(shared["images"], (16, 16)),
               "positions": sincos_positions(cfg["decoder_width"], (grid, grid))}
        # the textbook formulas in float64, as the yardstick of both float32 results
        teacher = torch.softmax((shared["teacher"].double() - shared["center"].double()) / cfg["teacher_temp"], -1)
        student = torch.log_softmax(shared["student"].double() / cfg["student_temp"], -1)
        pairs = [-(teacher[i] * student[v]).sum(-1).mean() for i in range(GLOBAL_VIEWS) for v in range(views) if v != i]
        out["dino64"] = sum(pairs) / len(pairs)
        per_patch = (shared["pred"].double() - shared["target"].double()).square().mean(-1)
        out["mae64"] = per_patch[shared["mask"]].mean()
    else:
        from lightly.loss import DINOLoss
        from lightly.models import utils
        from lightly.models.modules import MaskedVisionTransformerDecoderTIMM
        from torch import nn

        shared = torch.load(path)
        criterion = DINOLoss(output_dim=cfg["out_dim"], warmup_teacher_temp=cfg["teacher_temp"],
                             teacher_temp=cfg["teacher_temp"], student_temp=cfg["student_temp"],
                             center_momentum=cfg["center_momentum"])
        criterion.center.copy_(shared["center"].reshape(criterion.center.shape))
        loss = criterion(list(shared["teacher"]), list(shared["student"]), teacher_temp=cfg["teacher_temp"])
        mask = shared["mask"]
        count = int(mask[0].sum())
        idx_mask = mask.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :count]
        mse = nn.MSELoss()(utils.get_at_index(shared["pred"], idx_mask), utils.get_at_index(shared["target"], idx_mask))
        grid = cfg["size"] // 16
        decoder = MaskedVisionTransformerDecoderTIMM(num_patches=grid * grid, embed_dim=cfg["decoder_width"], depth=1,
                                                     num_heads=cfg["decoder_heads"])
        out = {"dino": loss.detach(), "center": criterion.center.reshape(-1).clone(), "mae": mse.detach(),
               "patchify": utils.patchify(shared["images"], 16),
               "positions": decoder.pos_embed.detach()[0, 1:].clone()}
    torch.save(out, path.with_suffix(f".{cfg['side']}.pt"))
    return {"versions": versions()}


# --- orchestrator: runs in defectlab's venv --------------------------------------------------------

def lightly_python(venv: Path, install: bool) -> Path:
    """The lightly venv's interpreter; makes the venv (and installs lightly) when it is missing or broken."""
    from reference_venv import reference_python  # beside this script

    check = ("import json, lightly, torch, torchvision, timm; "
             "print(json.dumps([lightly.__version__, torch.__version__, torchvision.__version__, timm.__version__]))")
    return reference_python(venv, LIGHTLY, check, install)


WORKER_ENV = {"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def run_worker(python: Path | str, cfg: dict) -> dict:
    done = subprocess.run([str(python), __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True,
                          check=False, env={**os.environ, **WORKER_ENV})
    if done.returncode:
        sys.exit(f"{cfg['side']} {cfg['objective']} {cfg['task']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Side:
    """One side's fresh worker process, answering one command at a time."""

    def __init__(self, python: Path | str, cfg: dict):
        self.name = f"{cfg['objective']} {cfg['side']}"
        self.errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in close(), with the process)
        self.process = subprocess.Popen([str(python), __file__, "--worker", json.dumps(cfg)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.errors, text=True,
                                        env={**os.environ, **WORKER_ENV})

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.errors.seek(0)
        sys.exit(f"{self.name} failed on {command!r}:\n{self.errors.read()[-4000:]}")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.errors.close()


def timed_round(python: dict[str, Path | str], cfgs: dict[str, dict], warmup: int, steps: int,
                first: int) -> dict[str, dict]:
    """Fresh processes for every side, built one after the other, then stepped in turns; their results."""
    sides = {name: Side(python[name], cfg) for name, cfg in cfgs.items()}
    try:
        for side in sides.values():
            side.ask("build")
        names = list(sides)
        times: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(warmup + steps):
            order = names if (i + first) % 2 == 0 else names[::-1]
            for name in order:
                time.sleep(PAUSE)  # let the other process's idle threads settle
                answer = sides[name].ask("step")
                if i >= warmup:
                    times[name].append(answer)
        results = {}
        for name, side in sides.items():
            results[name] = {**side.ask("finish"), "wall": [t["wall"] for t in times[name]],
                             "cpu": [t["cpu"] for t in times[name]]}
        return results
    finally:
        for side in sides.values():
            side.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def mib(size: float) -> str:
    return f"{size / 2 ** 20:.0f}"


def loss_check(cfg: dict, lightly: Path) -> list[str]:
    """Both sides' losses on the same tensors; lines to print."""
    import torch

    with tempfile.TemporaryDirectory() as folder:
        cfg = {**cfg, "task": "loss", "file": str(Path(folder) / "shared.pt")}
        run_worker(sys.executable, {**cfg, "side": "defectlab"})
        run_worker(lightly, {**cfg, "side": "lightly"})
        ours, theirs = (torch.load(Path(folder) / f"shared.{side}.pt") for side in ("defectlab", "lightly"))

    def diff(key: str) -> float:
        return float((ours[key].double() - theirs[key].double()).abs().max())

    # lightly (as facebookresearch/mae) puts the column's sines and cosines first, defectlab the row's
    half = ours["positions"].shape[1] // 2
    swapped = torch.cat([ours["positions"][:, half:], ours["positions"][:, :half]], dim=1)
    swapped_diff = float((swapped.double() - theirs["positions"].double()).abs().max())

    views = GLOBAL_VIEWS + cfg["local_crops"]
    dino, dino64, lightly_dino = float(ours["dino"]), float(ours["dino64"]), float(theirs["dino"])
    return [
        (f"DINO loss ({views} views, K={cfg['out_dim']}, tau_s={cfg['student_temp']}, tau_t={cfg['teacher_temp']}, "
         f"non-zero centre): defectlab {dino:.7f}, lightly {lightly_dino:.7f}, |diff| {diff('dino'):.2e}; float64 "
         f"reference {dino64:.7f}: defectlab off by {abs(dino - dino64):.2e}, lightly by {abs(lightly_dino - dino64):.2e}"),
        f"DINO centre after the update (m={cfg['center_momentum']}): max |diff| {diff('center'):.2e}",
        (f"MAE masked MSE (given pred/target/mask): defectlab {float(ours['mae']):.7f}, lightly "
         f"{float(theirs['mae']):.7f}, |diff| {diff('mae'):.2e}; float64 reference {float(ours['mae64']):.7f}"),
        f"MAE patch layout (patchify): max |diff| {diff('patchify'):.2e}",
        (f"MAE decoder sine-cosine positions: max |diff| {diff('positions'):.2e} as they are, {swapped_diff:.2e} "
         f"with defectlab's row and column halves swapped (a fixed permutation of the decoder's channels)"),
    ]

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="image side (global crops for DINO); multiple of 16")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per side, taking turns")
    parser.add_argument("--objectives", default="mae,dino")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)")
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--weight-decay", type=float, default=0.04)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--decoder-depth", type=int, default=4)
    parser.add_argument("--decoder-width", type=int, default=256)
    parser.add_argument("--decoder-heads", type=int, default=8)
    parser.add_argument("--mlp-ratio", type=float, default=4.0)
    parser.add_argument("--out-dim", type=int, default=8192)
    parser.add_argument("--hidden-dim", type=int, default=2048)
    parser.add_argument("--bottleneck-dim", type=int, default=256)
    parser.add_argument("--local-crops", type=int, default=4)
    parser.add_argument("--local-size", type=int, default=0, help="0: 96/224 of --size, rounded to 16")
    parser.add_argument("--student-temp", type=float, default=0.1)
    parser.add_argument("--teacher-temp", type=float, default=0.04)
    parser.add_argument("--center-momentum", type=float, default=0.9)
    parser.add_argument("--momentum", type=float, default=0.996, help="DINO teacher EMA momentum at the start")
    parser.add_argument("--no-lightly-batched", action="store_true",
                        help="skip the DINO reference that batches views by size")
    parser.add_argument("--no-loss-check", action="store_true")
    parser.add_argument("--lightly-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--no-install", action="store_true", help="fail instead of making the lightly venv")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        if cfg["task"] == "time":
            serve(cfg)
        else:
            print(json.dumps(loss_worker(cfg)))
        return

    from defectlab import format_table

    lightly = lightly_python(args.lightly_venv, not args.no_install)
    local_size = args.local_size or max(1, round(args.size * 96 / 224 / 16)) * 16
    base = {"size": args.size, "channels": args.channels, "batch": args.batch, "warmup": args.warmup,
            "steps": args.steps, "device": args.device, "threads": args.threads, "lr": args.lr,
            "weight_decay": args.weight_decay, "mask_ratio": args.mask_ratio, "decoder_depth": args.decoder_depth,
            "decoder_width": args.decoder_width, "decoder_heads": args.decoder_heads, "mlp_ratio": args.mlp_ratio,
            "out_dim": args.out_dim, "hidden_dim": args.hidden_dim, "bottleneck_dim": args.bottleneck_dim,
            "local_crops": args.local_crops, "local_size": local_size, "student_temp": args.student_temp,
            "teacher_temp": args.teacher_temp, "center_momentum": args.center_momentum, "momentum": args.momentum}
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    sides = {"mae": ["defectlab", "lightly"],
             "dino": ["defectlab", "lightly"] + ([] if args.no_lightly_batched else ["lightly batched"])}
    results: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.rounds):
        for objective in objectives:
            cfgs = {side: {**base, "task": "time", "objective": objective, "side": side} for side in sides[objective]}
            python = {side: sys.executable if side == "defectlab" else lightly for side in sides[objective]}
            for side, result in timed_round(python, cfgs, args.warmup, args.steps, round_).items():
                results.setdefault((objective, side), []).append(result)
            print(f"round {round_ + 1}/{args.rounds}: {objective} done", file=sys.stderr)

    ours, theirs = results[(objectives[0], "defectlab")][0]["versions"], results[(objectives[0], "lightly")][0][
        "versions"]
    threads = {r["threads"] for rs in results.values() for r in rs}
    print(f"ViT-Tiny/16 at {args.size}x{args.size}, {args.channels} channel(s), batch {args.batch}, on {args.device}; "
          f"torch {ours['torch']} / {theirs['torch']}, timm {ours['timm']} / {theirs['timm']} (defectlab / lightly "
          f"venv), lightly {theirs.get('lightly')}, {'/'.join(map(str, sorted(threads)))} torch threads; "
          f"{args.warmup} warm-up + {args.steps} timed steps per process, the sides taking turns step by step, "
          f"{args.rounds} rounds of fresh processes")
    if (ours["torch"], ours["timm"]) != (theirs["torch"], theirs["timm"]):
        print("WARNING: the two venvs run different torch or timm versions")
    print(f"MAE: mask ratio {args.mask_ratio}, decoder {args.decoder_depth} x {args.decoder_width} "
          f"({args.decoder_heads} heads, MLP x{args.mlp_ratio:g}), raw-pixel targets. DINO: 2 global views of "
          f"{args.size}, {args.local_crops} local of {local_size} (pre-made tensors), head {args.hidden_dim}-"
          f"{args.hidden_dim}-{args.bottleneck_dim}-{args.out_dim}. AdamW lr {args.lr:g}, wd {args.weight_decay:g}.")

    rows, ratio_lines = [], []
    for objective in objectives:
        for side in sides[objective]:
            runs = results[(objective, side)]
            wall = [statistics.median(r["wall"]) for r in runs]
            cpu = [statistics.median(r["cpu"]) for r in runs]
            rows.append([objective, side, ms(statistics.median(wall)), f"{ms(min(wall))}-{ms(max(wall))}",
                         ms(statistics.median(cpu)), mib(statistics.median(r["peak"] for r in runs)),
                         mib(statistics.median(r["build_train"] for r in runs)),
                         mib(statistics.median(r["saved"] for r in runs)), f"{runs[0]['params'] / 1e3:,.1f}",
                         f"{runs[-1]['loss']:.4f}"])
        mine = results[(objective, "defectlab")]
        for side in sides[objective][1:]:
            ref = results[(objective, side)]
            per_round = {kind: [statistics.median(a[kind]) / statistics.median(b[kind]) for a, b in zip(mine, ref)]
                         for kind in ("wall", "cpu")}
            med = {kind: statistics.median(statistics.median(r[kind]) for r in mine)
                   / statistics.median(statistics.median(r[kind]) for r in ref) for kind in ("wall", "cpu")}
            memory = {key: statistics.median(r[key] for r in mine) / statistics.median(r[key] for r in ref)
                      for key in ("build_train", "saved")}
            ratio_lines.append(
                f"{objective}: defectlab / {side}: {med['wall']:.2f} wall (rounds {min(per_round['wall']):.2f}-"
                f"{max(per_round['wall']):.2f}), {med['cpu']:.2f} cpu (rounds {min(per_round['cpu']):.2f}-"
                f"{max(per_round['cpu']):.2f}); memory: build+train {memory['build_train']:.2f}, saved "
                f"{memory['saved']:.2f}")
        if objective == "dino":
            views = statistics.median(r["views_wall"] for r in mine)
            step = statistics.median(statistics.median(r["wall"]) for r in mine)
            ref = statistics.median(statistics.median(r["wall"]) for r in results[(objective, "lightly")])
            ratio_lines.append(f"dino: defectlab views() (the crops, on the batch tensor) {ms(views)} ms per batch, "
                               f"not in the step times; with it, defectlab / lightly {(step + views) / ref:.2f} wall")
    print(format_table(["objective", "side", "wall ms/step", "rounds", "cpu ms/step", "peak RSS MiB",
                        "build+train MiB", "saved MiB", "trainable k", "last loss"], rows))
    print("\n".join(ratio_lines))
    if not args.no_loss_check:
        print("same inputs, both implementations:")
        print("\n".join("  " + line for line in loss_check(base, lightly)))


if __name__ == "__main__":
    main()

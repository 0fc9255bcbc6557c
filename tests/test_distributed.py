"""DistributedDataParallel under torchrun (gloo, 2 CPU processes): identical weights, one writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.tiny_models import write_two_class_folder

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {root!r})
    import defectlab as dl
    from defectlab.plugin_system.loading import get_loader
    from defectlab.training.loop import unwrap
    from tests.tiny_models import TinyModels

    get_loader().add_plugin(TinyModels(), "tiny_models")
    rank = os.environ["RANK"]

    def keep(trainer, record):
        if record["epoch"] == trainer.settings.epochs:
            torch.save(unwrap(trainer.model).state_dict(), {out!r} + f"/rank{{rank}}.pt")

    config = {{"data": {{"dataset": {data!r}, "image_size": 16, "batch_size": 4, "augment": ["flip", "noise"]}},
              "model": {{"name": "tiny_cnn"}}, "train": {{"epochs": 2, "lr": 0.05, "progress": False}}}}
    dl.train(config, out={out!r} + "/run", callbacks=[keep])
""")


def torchrun(script: str, data: Path, out: Path) -> None:
    """Run ``script`` (formatted with the repo root, the data and ``out``) on 2 gloo processes; it must succeed."""
    path = out / "ddp_script.py"
    path.write_text(script.format(root=str(ROOT), data=str(data), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    data = write_two_class_folder(tmp_path / "data")
    torchrun(SCRIPT, data, tmp_path)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith("running_mean") and not k.endswith("running_var"))
    run = tmp_path / "run"
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


PRETRAIN_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {root!r})
    import defectlab as dl
    from defectlab.training.loop import unwrap

    rank = os.environ["RANK"]

    def keep(trainer, record):
        if record["epoch"] == trainer.settings.epochs:
            torch.save(unwrap(trainer.model).state_dict(), {out!r} + f"/rank{{rank}}.pt")

    config = {{"data": {{"dataset": {data!r}, "image_size": 32, "channels": 1, "batch_size": 4}},
              "model": {{"name": "vit_tiny"}},
              "ssl": {{"name": "dino", "out_dim": 64, "hidden_dim": 64, "bottleneck_dim": 32, "local_crops": 2}},
              "train": {{"epochs": 2, "lr": 1e-3, "progress": False, "clip_grad_norm": 3.0}}}}
    dl.pretrain(config, out={out!r} + "/run", callbacks=[keep])
""")


@pytest.mark.slow
def test_dino_pretraining_under_torchrun_keeps_student_teacher_and_centre_identical(tmp_path):
    data = write_two_class_folder(tmp_path / "data", per_class=12)
    torchrun(PRETRAIN_SCRIPT, data, tmp_path)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert any(k.startswith("objective.teacher.") for k in a) and "objective.center" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert (run / "encoder.pt").is_file()

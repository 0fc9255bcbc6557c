"""DistributedDataParallel under torchrun (gloo, 2 CPU processes, on one "node" or two): identical weights,
one writer, a lost node noticed and resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from defectlab.plugin_system.errors import DataError
from defectlab.training import distributed
from defectlab.training.loop import pick_device

from tests.tiny_models import write_two_class_folder

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os, sys, time, torch
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
            world = trainer.world
            with open({out!r} + f"/world{{rank}}.json", "w") as handle:
                json.dump({{"size": world.size, "rank": world.rank, "local_rank": world.local_rank,
                           "is_main": world.is_main, "device": str(trainer.device)}}, handle)
        if rank == "1" and os.environ.get("PAUSE_AFTER") == str(record["epoch"]):  # the test kills this node now
            open({out!r} + "/paused", "w").close()
            time.sleep(600)

    config = {{"data": {{"dataset": {data!r}, "image_size": 16, "batch_size": 4, "augment": ["flip", "noise"]}},
              "model": {{"name": "tiny_cnn"}}, "train": {{"epochs": {epochs}, "lr": 0.05, "progress": False}}}}
    dl.train(config, out={out!r} + "/run", callbacks=[keep])
""")


def write_script(script: str, data: Path, out: Path, epochs: int = 2) -> Path:
    """``script`` formatted with the repo root, the data, ``out`` and the epochs, as ``out``/ddp_script.py."""
    path = out / "ddp_script.py"
    path.write_text(script.format(root=str(ROOT), data=str(data), out=str(out), epochs=epochs))
    return path


def torchrun(script: str, data: Path, out: Path) -> None:
    """Run ``script`` on 2 gloo processes of one node; it must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(write_script(script, data, out))], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_nodes(script: Path, out: Path, **env: str) -> list[subprocess.Popen]:
    """Two torchrun "nodes" of one process each on this host, meeting at a c10d rendezvous that node 0
    hosts (as the machine of --rdzv-endpoint does); each in a session of its own, logging to out/nodeN.log."""
    port, nodes = free_port(), []
    for rank in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
                   "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                   str(script)]
        with (out / f"node{rank}.log").open("w") as log:
            nodes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}))
        deadline = time.monotonic() + 60
        while rank == 0 and not listening(port):
            assert nodes[0].poll() is None and time.monotonic() < deadline, (out / "node0.log").read_text()[-3000:]
            time.sleep(0.2)
    return nodes


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    """The 2-process run of one node (``--standalone --nproc_per_node 2``): its folder holds data/ and run/."""
    out = tmp_path_factory.mktemp("one_node")
    torchrun(SCRIPT, write_two_class_folder(out / "data"), out)
    return out


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(one_node):
    a, b = torch.load(one_node / "rank0.pt"), torch.load(one_node / "rank1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith("running_mean") and not k.endswith("running_var"))
    run = one_node / "run"
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_two_nodes_train_the_weights_of_one_node_with_two_processes(one_node, tmp_path):
    nodes = start_nodes(write_script(SCRIPT, one_node / "data", tmp_path), tmp_path)
    for rank, node in enumerate(nodes):
        assert node.wait(timeout=600) == 0, (tmp_path / f"node{rank}.log").read_text()[-3000:]
    for name in ("best.pt", "last.pt"):
        a, b = torch.load(one_node / "run" / name)["model"], torch.load(tmp_path / "run" / name)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # the process of RANK 1 is LOCAL_RANK 0 of its node: not the writer, and it would take its machine's GPU 0
    assert json.loads((tmp_path / "world1.json").read_text()) == {"size": 2, "rank": 1, "local_rank": 0,
                                                                  "is_main": False, "device": "cpu"}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_lost_node_stops_the_other_with_a_message_and_the_run_resumes(tiny, tmp_path, run_cli):
    data = write_two_class_folder(tmp_path / "data")
    nodes = start_nodes(write_script(SCRIPT, data, tmp_path, epochs=3), tmp_path,
                        PAUSE_AFTER="1", **{distributed.TIMEOUT_ENV: "20"})
    deadline = time.monotonic() + 300
    while not (tmp_path / "paused").is_file():  # node 1 has finished epoch 1 (last.pt written) and waits
        assert all(node.poll() is None for node in nodes) and time.monotonic() < deadline, \
            (tmp_path / "node0.log").read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(nodes[1].pid, signal.SIGKILL)  # the whole node: its torchrun agent and its worker
    killed = time.monotonic()
    assert nodes[0].wait(timeout=120) != 0
    assert time.monotonic() - killed < 60  # the timeout, 20 s, and torchrun ending
    log = (tmp_path / "node0.log").read_text()
    assert ("lost contact with another process of this 2-process run during epoch 2: a node or process died, or "
            "the network failed (") in log, log[-3000:]
    assert "processes wait 20 s for each other, DEFECTLAB_DIST_TIMEOUT); last.pt holds epoch 1." in log
    run = tmp_path / "run"
    status = json.loads((run / "run.json").read_text())
    assert (status["status"], status["epochs_done"]) == ("interrupted", 1)
    assert f"last.pt holds epoch 1. Continue with: defectlab train --resume {run}" in status["message"]
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    status = json.loads((run / "run.json").read_text())
    assert (status["status"], status["epochs_done"]) == ("finished", 3)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    second_node = distributed.World(size=4, rank=3, local_rank=1)
    assert pick_device("auto", second_node) == pick_device("cuda", second_node) == torch.device("cuda", 1)
    assert pick_device("cuda:0", second_node) == torch.device("cuda", 0)
    with pytest.raises(DataError, match="number 2 .LOCAL_RANK. on its machine, which has 2 GPU.s.; start torchrun "
                                        "with --nproc_per_node 2 at most"):
        pick_device("auto", distributed.World(size=3, rank=2, local_rank=2))


def test_the_collective_timeout_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout() == distributed.DEFAULT_TIMEOUT == 1800
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90.5")
    assert distributed.timeout() == 90.5
    for wrong in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, wrong)
        with pytest.raises(DataError, match=f"DEFECTLAB_DIST_TIMEOUT='{wrong}': expected the seconds"):
            distributed.timeout()


def test_a_lost_peer_is_told_from_other_errors():
    world = distributed.World(size=2, rank=0)
    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                        "10000ms for recv operation to complete")
    assert distributed.lost_peer(world, gloo) == "Timed out waiting 10000ms for recv operation to complete"
    closed = RuntimeError("Application timeout caused pair closure")  # what the next collective says
    assert distributed.lost_peer(world, closed) == "Application timeout caused pair closure"
    nccl = torch.distributed.DistBackendError("NCCL communicator was aborted on rank 0.\nmore lines")
    assert distributed.lost_peer(world, nccl) == "NCCL communicator was aborted on rank 0."
    assert distributed.lost_peer(world, RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert distributed.lost_peer(world, ValueError("gloo")) is None
    assert distributed.lost_peer(distributed.World(), gloo) is None


def test_under_torchrun_a_run_needs_one_folder_for_every_process(tiny, two_classes, tmp_path, monkeypatch):
    import defectlab as dl

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    config = {"data": {"dataset": str(two_classes)}, "model": {"name": "tiny_cnn"}}
    with pytest.raises(DataError, match="under torchrun give the run folder with --out"):
        dl.train(config)
    assert not (tmp_path / "runs").exists()  # no runs/train-<time> of this process's own
    (tmp_path / "elsewhere").mkdir()  # the run folder of rank 0, on a disk this machine does not see
    with pytest.raises(DataError, match="holds no run on the machine of process 1: under torchrun on several "
                                        "machines the run folder must be on a filesystem every node sees"):
        dl.train(resume=tmp_path / "elsewhere")


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

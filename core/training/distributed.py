"""Running under ``torchrun``: process-group set-up, which rank writes, and averaging across ranks.

A run started by ``torchrun --nproc_per_node N`` (on one machine or on ``--nnodes`` of them) sees
WORLD_SIZE, RANK (among all processes) and LOCAL_RANK (on its machine) in its environment; it
trains with DistributedDataParallel over gloo (CPU) or NCCL (GPU). Outside torchrun everything
here is a no-op for a world of one.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError

#: Seconds a collective waits for the other processes before it fails: how soon a lost node is noticed.
TIMEOUT_ENV = "DEFECTLAB_DIST_TIMEOUT"
#: The default: longer than rank 0 alone takes for the final test evaluation and report, while the others wait.
DEFAULT_TIMEOUT = 1800.0
#: What gloo's errors of a lost peer say (NCCL's and the store's are DistErrors): its source path, or a closed pair.
GLOO_LOST = ("gloo/", "pair closure", "closed by peer", "reset by peer")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 (RANK, of every machine, not LOCAL_RANK) writes files and prints."""
        return self.rank == 0


def world_from_environment() -> World:
    """The World torchrun describes in the environment (a world of one without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(size, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))


def timeout() -> float:
    """Seconds a collective waits: DEFECTLAB_DIST_TIMEOUT, else DEFAULT_TIMEOUT."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise DataError(f"{TIMEOUT_ENV}={value!r}: expected the seconds a process waits for the others, above 0")
    return seconds


def start(world: World, device: Any) -> None:
    """Join the process group (gloo on CPU, NCCL on this process's GPU) unless it is already joined."""
    import datetime

    import torch
    import torch.distributed as dist

    if world.distributed and not dist.is_initialized():
        wait = datetime.timedelta(seconds=timeout())
        if device.type == "cuda":  # NCCL's communicators and barriers use this GPU, not the one numbered RANK
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", timeout=wait, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=wait)


def stop(world: World) -> None:
    """Leave the process group this module joined."""
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def summed(world: World, *values: float) -> list[float]:
    """``values`` summed over all ranks (as they are for a world of one)."""
    if not world.distributed:
        return list(values)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(world: World) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def one_folder(world: World, out: str | Path | None) -> None:
    """Refuse a distributed run without ``out``: each process would name its own runs/<workflow>-<time>."""
    if world.distributed and out is None:
        raise DataError("under torchrun give the run folder with --out: every process, on every node, must name the "
                        "same folder (on several machines, a folder on a filesystem they all see)")


def lost_peer(world: World, error: BaseException) -> str | None:
    """What ``error`` says, when it says another process stopped answering (a collective timed out or its
    connection broke: gloo, NCCL, the c10d store); None for any other error."""
    import torch.distributed as dist

    if not world.distributed or not isinstance(error, RuntimeError):
        return None
    text = str(error).strip()
    if not isinstance(error, dist.DistError) and not any(mark in text for mark in GLOO_LOST):
        return None
    first = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's messages start with [source file:line]

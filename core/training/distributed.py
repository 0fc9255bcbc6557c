"""Running under ``torchrun``: process-group set-up, which rank writes, and averaging across ranks.

A run started by ``torchrun --nproc_per_node N`` sees WORLD_SIZE, RANK and LOCAL_RANK in its
environment; it trains with DistributedDataParallel over gloo (CPU) or NCCL (GPU). Outside
torchrun everything here is a no-op for a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


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
        """Only rank 0 writes files and prints."""
        return self.rank == 0


def world_from_environment() -> World:
    """The World torchrun describes in the environment (a world of one without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(size, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))


def start(world: World, device: Any) -> None:
    """Join the process group (gloo on CPU, NCCL on CUDA) unless it is already joined."""
    import torch.distributed as dist

    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


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

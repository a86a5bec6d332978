"""Data-parallel training under ``torchrun``: gloo on CPU, NCCL on CUDA; rank 0 logs and checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()  # one process, no process group


def init_world(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes in the environment; a single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, world: World) -> bool:
    """Rank 0's decision, shared with every rank (for example: skip this run)."""
    if not world.active:
        return flag
    value = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(value, src=0)
    return bool(value.item())


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's rows of ``tensor`` (CPU), concatenated in rank order (itself when not distributed): for metrics
    that do not decompose into sums, such as ROC-AUC."""
    if not world.active:
        return tensor
    parts: list = [None] * world.size
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def gather_objects(items: list, world: World) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order (itself when not distributed)."""
    if not world.active:
        return items
    parts: list = [None] * world.size
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]

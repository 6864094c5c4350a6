"""Processes and devices of a training run: one process, or one per GPU under ``torchrun`` (DDP)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str):
    """Set up DDP when launched by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on CPU.

    Returns ``(DistInfo, torch.device)``.
    """
    import torch

    from fetaliqa_core.models.device import select_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), select_device(device_pref).device
    import datetime

    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = str(device_pref).lower() not in ("cpu", "mps") and torch.cuda.is_available()
    if want_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(world, rank, local), device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(info: DistInfo, obj):
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(info: DistInfo, obj) -> list:
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))

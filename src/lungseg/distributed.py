"""Process-group setup shared by training and prediction.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; when they are present we join the group (NCCL
on CUDA, gloo on CPU), otherwise we run as a single process. The same code therefore runs
unchanged as ``lungseg train`` and ``torchrun --nproc_per_node=N -m lungseg train``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group if launched by torchrun; a no-op otherwise."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few scalars over ranks (float64 on CPU so gloo and NCCL both handle it)."""
    if not info.enabled:
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision, on every rank (e.g. stop when the time budget is spent)."""
    if not info.enabled:
        return flag
    return bool(all_reduce_sum([float(flag) if info.is_main else 0.0], info)[0])


def average_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Average BatchNorm running statistics over ranks (as timm's ``distribute_bn`` does).

    DDP keeps parameters in sync but each rank updates its own running mean/var on its own
    shard; averaging them after every epoch makes every rank's model (and the saved one) the
    same model, computed from all the data.
    """
    if not info.enabled:
        return
    for name, buffer in module.named_buffers():
        if buffer.is_floating_point() and ("running_mean" in name or "running_var" in name):
            dist.all_reduce(buffer)
            buffer /= info.world_size


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

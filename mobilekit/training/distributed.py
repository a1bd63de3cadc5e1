"""Multi-process training under ``torchrun``: process-group set-up from RANK/WORLD_SIZE/LOCAL_RANK."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mobilekit.errors import MobilekitError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    forced: bool = False  # DDP kept on at world size 1 (checks the DDP path on one GPU)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.forced

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str, force: bool = False) -> DistInfo:
    """Join the process group ``torchrun`` describes (nccl on CUDA, gloo on CPU); a no-op for one
    process unless ``force`` (then ``torchrun`` must have set RANK, WORLD_SIZE and MASTER_ADDR)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not force:
        return DistInfo()
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR") if name not in os.environ]
    if missing:
        raise MobilekitError(f"--force-ddp needs torchrun: {', '.join(missing)} not set (run torchrun --nproc_per_node 1 ...)")
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")), forced=force)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=world_size)
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_finite(value: torch.Tensor, info: DistInfo) -> bool:
    """Whether ``value`` is finite on every process (so all stop together)."""
    flag = torch.isfinite(value.detach()).all().to(torch.int32).reshape(1)
    if info.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

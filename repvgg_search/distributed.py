"""Process-group setup from torchrun or submitit/SLURM environments, DDP wrapping and small collectives."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its global rank, the number of processes, its rank on the node, its device."""

    rank: int
    world_size: int
    local_rank: int
    is_distributed: bool
    device: torch.device


def _export_submitit_env() -> None:
    """Turn a multi-task submitit job's environment (SLURM or local executor) into torchrun's variables."""
    slurm = bool(os.environ.get("SLURM_JOB_ID")) and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    local = int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1
    if "RANK" in os.environ or not (slurm or local):
        return
    from submitit.helpers import TorchDistributedEnvironment

    # Keep CUDA_VISIBLE_DEVICES: SLURM may already expose one GPU per task; the device is picked below.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def process_rank() -> int:
    """This process's global rank, known before any process group exists: torchrun's RANK, or a multi-task
    submitit job's (SLURM or local executor; exported as RANK here); 0 for a single process."""
    _export_submitit_env()
    return int(os.environ.get("RANK", "0"))


def _local_device(local_rank: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # With one GPU visible per task (SLURM --gpus-per-task), every task uses its cuda:0.
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the environment (torchrun, or submitit with several tasks).

    A single process (WORLD_SIZE unset or 1) gets `is_distributed=False` and no process group. The backend is
    nccl on CUDA and gloo otherwise unless `backend` says. Calling it again returns the same answer.
    """
    _export_submitit_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _local_device(local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, False, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend or ("nccl" if device.type == "cuda" else "gloo"),
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    return DistInfo(rank, world_size, local_rank, True, device)


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """Whether this process is rank 0 (always true without a process group): it writes records and logs."""
    return not is_distributed() or dist.get_rank() == 0


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when `info.is_distributed`, unchanged otherwise."""
    if not info.is_distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or `model` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over all processes (returned unchanged without a process group)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """`values`' elementwise maximum over all processes, the slowest rank's (unchanged without a process group)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) over processes so every rank evaluates alike.

    DDP only broadcasts rank 0's buffers at the start of each forward, so after the last step they differ.
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    for buf in unwrap(model).buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def gather_shards(local: torch.Tensor, total: int) -> torch.Tensor:
    """The whole evaluation set's per-image values from every rank's shard (`ShardSampler`: rank r holds images r,
    r + world, ...), in image order; a collective: every rank calls it and gets the whole. Without a process group,
    `local` itself."""
    if not is_distributed():
        return local
    world = dist.get_world_size()
    shards: list[Any] = [None] * world
    dist.all_gather_object(shards, local.cpu())
    out = torch.empty(total, dtype=local.dtype)
    for rank, shard in enumerate(shards):
        out[rank::world] = shard
    return out

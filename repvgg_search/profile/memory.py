"""What a training run needs in memory, known before it starts: a lower bound, checked against the device.

The activations a training step keeps for its backward pass are exactly the tensors autograd saves, so they are
counted, not modelled: the train form runs one forward step on the meta device (shapes only, no memory) under
`torch.autograd.graph.saved_tensors_hooks`, and every distinct saved tensor's bytes are summed (a tensor several
ops save, like the input all three branches of a RepVGG block read, counts once), at batches 2 and 3: their
difference is what each image adds (the weights a convolution saves do not grow with the batch). Weights, their gradients and
SGD's momentum add three copies of the parameters. Not counted, so the sum is a lower bound: the allocator's
slack, the loader's batches in flight, the temporaries of the largest op, cuDNN workspaces. Mixed precision
(`train.amp`) halves the activations at most (BatchNorm keeps float32), so the bound is halved there too.

A trial is refused (exit 2, before its first epoch) only when this lower bound exceeds the memory the device has
free: MemAvailable and the cgroup's limit on the CPU, `torch.cuda.mem_get_info` on a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch

from ..errors import BadInputError
from ..models import ArchConfig, build_model

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class MemoryNeed:
    """Bytes a training step needs at least: saved activations, and parameters x 3 (weights, grads, momentum)."""

    activations: int
    parameters: int

    @property
    def total(self) -> int:
        return self.activations + 3 * self.parameters


def training_memory(arch: ArchConfig, batch: int, side: int, amp: bool = False) -> MemoryNeed:
    """The lower bound of one training step's memory for `arch` at batch x in_channels x side x side, float32."""
    per_image, parameters = _per_image(arch, side)
    activations = per_image * batch
    return MemoryNeed(activations // 2 if amp else activations, parameters)


@functools.lru_cache(maxsize=64)
def _per_image(arch: ArchConfig, side: int) -> tuple[int, int]:
    """Saved bytes per image, the difference of batches 3 and 2 (BatchNorm needs 2 values a channel; what does not
    grow with the batch, such as the weights a convolution saves, is the parameters' and counted there), and the
    parameters' bytes."""
    with torch.device("meta"):
        model = build_model(arch).train()
    saved = [_saved_bytes(model, torch.empty(n, arch.in_channels, side, side, device="meta")) for n in (2, 3)]
    return saved[1] - saved[0], sum(p.numel() * p.element_size() for p in model.parameters())


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    seen: dict[int, torch.Tensor] = {}  # kept alive so that ids stay unique while counting

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen.setdefault(id(t), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(t.numel() * t.element_size() for t in seen.values())


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` now: the GPU's free memory, or the host's available memory within its cgroup's
    limit (None where it cannot be read)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:  # cgroup v2: a container's limit, which MemAvailable (the host's) does not show
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free, int(limit) - used) if free is not None else int(limit) - used
    except (OSError, ValueError):
        pass
    return free


def check_training_memory(
    arch: ArchConfig, batch: int, side: int, device: torch.device, amp: bool = False, data_bytes: int = 0
) -> None:
    """Refuse (BadInputError naming the fields) a training run whose lower bound exceeds the free memory: the
    step's on `device`, plus `data_bytes` (an in-memory data set) on the host."""
    host = free_memory(torch.device("cpu"))
    if data_bytes and host is not None and data_bytes > host:
        raise BadInputError(
            f"data.image_size={side} makes the in-memory data set {data_bytes / GIB:.1f} GiB (float32, every image) "
            f"and the host has {host / GIB:.1f} GiB free; lower data.image_size"
        )
    free = free_memory(device)
    if free is None:
        return
    need = training_memory(arch, batch, side, amp)
    total = need.total + (data_bytes if device.type == "cpu" else 0)
    if total > free:
        data = f"; the in-memory data set {data_bytes / GIB:.1f} GiB" if data_bytes and device.type == "cpu" else ""
        raise BadInputError(
            f"data.batch_size={batch} at data.image_size={side} needs at least {total / GIB:.1f} GiB to train "
            f"(activations autograd keeps {need.activations / GIB:.1f} GiB, counted on the meta device; weights, "
            f"gradients and momentum {3 * need.parameters / GIB:.2f} GiB{data}) and {device} has "
            f"{free / GIB:.1f} GiB free; lower data.batch_size or data.image_size (or use a device with more memory)"
        )

"""Speed: throughput and latency of a model on a device, and the numeric equivalence of two forms."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch
from torch import nn

from ..errors import BadInputError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    """`auto` means the first CUDA device when one is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device={device!r} but no CUDA device is visible; allowed here: auto, cpu")
    return dev


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model or CPU model)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


@torch.inference_mode()
def throughput(
    model: nn.Module,
    *,
    batch_size: int = 32,
    input_size: tuple[int, int, int] = (3, 224, 224),
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    warmup: int = 3,
    iters: int = 10,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Inference speed of `model` on random input: images/s, median latency per batch, spread, memory.

    The model is moved to `device`/`dtype` in place and run in eval mode (its mode is restored afterwards).
    CUDA timing synchronizes around every batch; `images_per_s` is batch_size / mean batch time.
    """
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    was_training = model.training
    model.eval().to(device=dev, dtype=dt)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.randn(batch_size, *input_size, device=dev, dtype=dt).contiguous(memory_format=fmt)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        model(x)
    times = [_timed_call(model, x, dev) for _ in range(iters)]
    model.train(was_training)
    return _speed_record(times, batch_size, input_size, dev, dt, channels_last)


def _timed_call(model: nn.Module, x: torch.Tensor, dev: torch.device) -> float:
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0


def _speed_record(times, batch_size, input_size, dev, dt, channels_last) -> dict[str, Any]:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "images_per_s": batch_size / statistics.fmean(times),
        "latency_ms": statistics.median(times) * 1e3,
        "latency_ms_iqr": (q[2] - q[0]) * 1e3,
        "latency_ms_min": min(times) * 1e3,
        "device": dev.type,
        "device_name": device_name(dev),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "input_size": list(input_size),
        "dtype": str(dt).removeprefix("torch."),
        "channels_last": channels_last,
        "iters": len(times),
        "peak_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }


@torch.no_grad()
def equivalence_error(train_model: nn.Module, deploy_model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Max absolute and relative (to max |train output|) difference of the two forms' outputs on `x`, eval mode."""
    was_training = train_model.training
    train_model.eval()
    y_train, y_deploy = train_model(x), deploy_model.eval()(x)
    train_model.train(was_training)
    abs_err = (y_train - y_deploy).abs().max().item()
    return {"max_abs_error": abs_err, "max_rel_error": abs_err / max(y_train.abs().max().item(), 1e-30)}


def randomize_bn_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (for equivalence checks)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            shape = m.running_mean.shape
            kw = {"generator": generator, "dtype": m.running_mean.dtype}
            m.running_mean.copy_(torch.rand(shape, **kw) - 0.5)
            m.running_var.copy_(torch.rand(shape, **kw) * 1.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(shape, **kw) + 0.5)
                m.bias.data.copy_(torch.rand(shape, **kw) - 0.5)
    return model

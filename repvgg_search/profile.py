"""Complexity (fvcore MACs and params), throughput/latency, and the train-vs-deploy profile table."""

from __future__ import annotations

import copy
import math
import platform
import statistics
import time
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

MAC_CONVENTION = "fvcore MACs (1 multiply-add = 1; conv, linear, BN and pooling counted; ReLU and adds not)"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def complexity(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), *, method: str = "fvcore"
) -> dict[str, Any]:
    """MACs (as fvcore counts them, batch 1) and parameters of `model` at `input_size` (C, H, W).

    method="fvcore" traces the model with fvcore on a CPU copy in eval mode (neither its device nor its mode
    changes). method="meta" gives the same counts (tests check it on every preset and variant) in milliseconds:
    it runs the model on shape-only meta tensors and counts the same aten ops with fvcore's rules.
    """
    if method == "meta":
        return meta_complexity(model, input_size)
    if method != "fvcore":
        raise ValueError(f"complexity method={method!r} is unknown; allowed: fvcore, meta")
    probe = _cpu_eval_copy(model)
    x = torch.zeros(1, *input_size, dtype=next(probe.parameters()).dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore warns about deprecated jit internals and unsupported `add` ops
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(probe, x)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        macs = int(analysis.total())
        by_op = {k: int(v) for k, v in analysis.by_operator().items()}
    params = sum(p.numel() for p in model.parameters())
    return {"macs": macs, "params": params, "input_size": list(input_size), "by_operator": by_op}


class _MacCounter(TorchDispatchMode):
    """Counts multiply-accumulates of the aten ops fvcore counts, with fvcore's rules (eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        macs = _op_macs(name, args, out)
        if macs:
            key = _FVCORE_NAMES.get(name, name)
            self.by_op[key] = self.by_op.get(key, 0) + macs
        return out


_FVCORE_NAMES = {
    "convolution": "conv",
    "addmm": "linear",
    "mm": "linear",
    "_native_batch_norm_legit_no_training": "batch_norm",
    "native_batch_norm": "batch_norm",
    "mean": "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d": "adaptive_avg_pool2d",
}


def _op_macs(name: str, args: tuple, out: Any) -> int:
    if name == "convolution":  # batch x prod(weight shape) x output positions
        return args[0].shape[0] * args[1].numel() * math.prod(out.shape[2:])
    if name == "addmm":
        return args[1].shape[0] * args[1].shape[1] * args[2].shape[1]
    if name == "mm":
        return args[0].shape[0] * args[0].shape[1] * args[1].shape[1]
    if name in ("native_batch_norm", "_native_batch_norm_legit_no_training"):  # fvcore: 1 per element, 2 if affine
        return args[0].numel() * (2 if args[1] is not None else 1)
    if name in ("mean", "_adaptive_avg_pool2d"):  # global pooling: one per input element
        return args[0].numel()
    return 0


def meta_complexity(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> dict[str, Any]:
    """`complexity(..., method="meta")`: fvcore's counts from a shape-only run (no weights are copied)."""
    state = {
        k: torch.empty_like(v, device="meta")
        for k, v in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()
    }
    dtype = next(model.parameters()).dtype
    x = torch.empty(1, *input_size, device="meta", dtype=dtype)
    was_training = model.training
    model.eval()
    counter = _MacCounter()
    try:
        with torch.no_grad(), counter:
            torch.func.functional_call(model, state, (x,))
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return {
        "macs": sum(counter.by_op.values()),
        "params": params,
        "input_size": list(input_size),
        "by_operator": counter.by_op,
    }


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    first = next(model.parameters())
    if first.device.type == "cpu" and not model.training:
        return model
    return copy.deepcopy(model).cpu().eval()


def resolve_device(device: str) -> torch.device:
    """`auto` means the first CUDA device when one is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is visible; allowed here: auto, cpu")
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


if __name__ == "__main__":
    from .profile_cli import main

    main()

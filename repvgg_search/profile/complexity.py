"""Complexity: MACs and parameters as fvcore counts them, by tracing (fvcore) or by a shape-only run (meta)."""

from __future__ import annotations

import copy
import functools
import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import BadInputError
from ..models import ArchConfig, build_model, reparameterize_model


def complexity(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), *, method: str = "fvcore"
) -> dict[str, Any]:
    """MACs (as fvcore counts them, batch 1) and parameters of `model` at `input_size` (C, H, W).

    method="fvcore" traces the model with fvcore on a CPU copy in eval mode (neither its device nor its mode
    changes). method="meta" gives the same counts (tests check it on every preset and variant) in milliseconds:
    it runs the model on shape-only meta tensors and counts the same aten ops with fvcore's rules.
    """
    _check_input_size(model, input_size)
    if method == "meta":
        return meta_complexity(model, input_size)
    if method != "fvcore":
        raise BadInputError(f"complexity method={method!r} is unknown; allowed: fvcore, meta")
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


def _check_input_size(model: nn.Module, input_size: Any) -> None:
    """(channels, height, width): three positive integers, the channels the model takes, at least 32 px."""
    ok = isinstance(input_size, list | tuple) and len(input_size) == 3
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)
    if not ok:
        raise BadInputError(f"input_size={input_size!r} must be (channels, height, width): 3 positive integers")
    arch = getattr(model, "arch", None)
    if arch is not None and input_size[0] != arch.in_channels:
        raise BadInputError(f"input_size={tuple(input_size)}: the model takes {arch.in_channels} input channels")
    if arch is not None and min(input_size[1:]) < 32:
        raise BadInputError(f"input_size={tuple(input_size)}: at least 32 px (five stride-2 stages)")


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


def arch_sizes(arch: ArchConfig, side: int = 224) -> dict[str, dict[str, int]]:
    """MACs and params of both forms of `arch` at in_channels x side x side, as trials record them.

    The one place that counts an architecture: the model is built and converted on the meta device (shapes only,
    no weights) and counted with fvcore's rules, so that search budgets are checked before any training and in
    milliseconds even for the largest candidates. A variant with no deploy form reports its train form as both.
    """
    train, deploy = _arch_sizes(arch, side)
    return {"train": dict(train), "deploy": dict(deploy)}


@functools.lru_cache(maxsize=1024)
def _arch_sizes(arch: ArchConfig, side: int) -> tuple[tuple[tuple[str, int], ...], ...]:
    with torch.device("meta"):
        model = build_model(arch).eval()
    deploy = reparameterize_model(model) if arch.reparameterizable else model
    size = (arch.in_channels, side, side)
    counts = [meta_complexity(m, size) for m in (model, deploy)]
    return tuple((("macs", int(c["macs"])), ("params", int(c["params"]))) for c in counts)


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    first = next(model.parameters())
    if first.device.type == "cpu" and not model.training:
        return model
    return copy.deepcopy(model).cpu().eval()

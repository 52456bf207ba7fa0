"""Speed: a model's throughput and latency under a protocol, measured on a copy (the caller's model never changes),
in repeated rounds whose spread is checked; and the numeric equivalence of two forms."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..devices import cpu_cores, cuda_flags, device_key, environment, resolve_device
from .protocols import DTYPES, SpeedError, SpeedProtocol

__all__ = ["DTYPES", "measure", "measure_onnx", "throughput"]


def measure(
    model: nn.Module, protocol: SpeedProtocol, device: str | torch.device = "auto", *, side: int | None = None,
    in_channels: int = 3,
) -> dict[str, Any]:  # fmt: skip
    """The speed of `model` under `protocol` on `device`: images/s and latency of the median round, the spread of
    the rounds (max/min rate), whether it is reliable, and everything that changes the figure.

    `side` is the input side when the protocol leaves it to the caller (input_size null). The model is copied,
    then cast, moved and put in eval mode: the caller's model keeps its device, dtype, layout and mode.
    """
    dev = resolve_device(device)
    side = _side(protocol, side)
    check_runtime(protocol, dev)
    if protocol.runtime == "onnxruntime":  # exported once, then timed in onnxruntime
        from ..deploy.onnx_io import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, (in_channels, side, side), Path(tmp) / "model.onnx")
            return measure_onnx(path, protocol, side=side, in_channels=in_channels)
    shape = (protocol.batch_size, in_channels, side, side)
    net = copy.deepcopy(model).eval().to(device=dev, dtype=DTYPES[protocol.dtype])
    flags = cuda_flags(dev, tf32=protocol.tf32, cudnn_benchmark=protocol.cudnn_benchmark)
    with flags, _threads(protocol, dev), torch.inference_mode():
        probe = _probe_layouts(net, shape, dev) if protocol.channels_last is None else None
        layout = protocol.channels_last if probe is None else probe["channels_last"] > probe["contiguous"]
        x = _prepare(net, shape, dev, layout)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        run = torch.compile(net, dynamic=False) if protocol.runtime == "compile" else net
        rounds, attempts = _timed_rounds(lambda: run(x), dev, protocol)
        threads = torch.get_num_threads()
    return _record(protocol, dev, shape, layout, probe, rounds, attempts, threads)


def measure_onnx(
    path: Path, protocol: SpeedProtocol, *, side: int | None = None, in_channels: int = 3
) -> dict[str, Any]:
    """The speed of an ONNX model (e.g. an INT8 one) in onnxruntime on the CPU under `protocol` (float32 input;
    the protocol's threads as onnxruntime's intra-op threads), with the same rounds and record as `measure`."""
    from ..deploy.onnx_io import onnx_session, run_onnx

    side = _side(protocol, side)
    shape = (protocol.batch_size, in_channels, side, side)
    session = onnx_session(path, protocol.threads)
    x = torch.randn(*shape).numpy()
    rounds, attempts = _timed_rounds(lambda: run_onnx(session, x), torch.device("cpu"), protocol)
    threads = session.get_session_options().intra_op_num_threads
    return _record(protocol, torch.device("cpu"), shape, False, None, rounds, attempts, threads)


def check_runtime(protocol: SpeedProtocol, dev: torch.device) -> None:
    """onnxruntime is measured on the CPU in float32 (its CPU provider); refuse any other pairing by name."""
    if protocol.runtime == "onnxruntime" and (dev.type != "cpu" or protocol.dtype != "float32"):
        raise SpeedError(
            f"speed.runtime=onnxruntime runs on the CPU in float32 (got device {dev}, speed.dtype={protocol.dtype}); "
            "use device=cpu and speed.dtype=float32, or speed.runtime=eager|compile on this device"
        )


def _side(protocol: SpeedProtocol, side: int | None) -> int:
    side = protocol.input_size or side
    if side is None:
        raise SpeedError(f"speed protocol {protocol.name!r} has input_size null: the caller must give the input side")
    return side


def _timed_rounds(call: Callable[[], Any], dev: torch.device, p: SpeedProtocol) -> tuple[list[list[float]], int]:
    """`warmup` untimed calls (a compiled runtime compiles in the first), then rounds of `iters` timed calls,
    repeated (up to `retries` times) while the rounds' spread is above `max_spread`."""
    for _ in range(p.warmup):
        call()
    attempts, rounds = 0, []
    while attempts <= p.retries:
        attempts += 1
        rounds = [[_timed_call(call, dev) for _ in range(p.iters)] for _ in range(p.rounds)]
        if _spread(rounds) <= p.max_spread:
            break
    return rounds, attempts


def _spread(rounds: list[list[float]]) -> float:
    totals = [sum(r) for r in rounds]
    return max(totals) / min(totals)


def _record(protocol, dev, shape, layout, probe, rounds, attempts, threads) -> dict[str, Any]:
    batch = shape[0]
    totals = sorted(sum(r) for r in rounds)
    median_round = statistics.median(totals)
    times = [t for r in rounds for t in r]
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    spread = _spread(rounds)
    return {
        "protocol": protocol.name,
        "images_per_s": batch * len(rounds[0]) / median_round,
        "latency_ms": statistics.median(times) * 1e3,
        "latency_ms_iqr": (q[2] - q[0]) * 1e3,
        "latency_ms_min": min(times) * 1e3,
        "spread": spread,
        "reliable": spread <= protocol.max_spread,
        "rounds_images_per_s": [batch * len(r) / sum(r) for r in rounds],
        "attempts": attempts,
        "batch_size": batch,
        "input_size": list(shape[1:]),
        "dtype": protocol.dtype,
        "tf32": protocol.tf32 if dev.type == "cuda" else None,
        "cudnn_benchmark": protocol.cudnn_benchmark if dev.type == "cuda" else None,
        "channels_last": bool(layout),
        "layout_probe": probe,
        "threads": threads,
        "runtime": protocol.runtime,
        "device_key": device_key(dev),
        **environment(dev),
        "peak_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "protocol_fields": protocol.fields(),
    }


def _prepare(net: nn.Module, shape: tuple[int, ...], dev: torch.device, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    dtype = next(net.parameters()).dtype
    return torch.randn(*shape, device=dev, dtype=dtype).contiguous(memory_format=fmt)


def _probe_layouts(net: nn.Module, shape: tuple[int, ...], dev: torch.device, pairs: int = 3) -> dict[str, float]:
    """images/s of each memory layout: the best of its timed batches over `pairs` alternations of the two layouts
    (the first of each turn untimed, after the conversion; the order flips every turn), so a spell of load on a
    shared machine hits both layouts rather than the one probed during it. Probing each layout once (best of 3
    batches, one after the other) picked channels_last for a network it ran 16% slower (one thread, batch 8, 64 px)."""
    best = {"contiguous": math.inf, "channels_last": math.inf}
    layouts = [("contiguous", False), ("channels_last", True)]
    for turn in range(pairs):
        for name, layout in layouts if turn % 2 == 0 else layouts[::-1]:
            x = _prepare(net, shape, dev, layout)
            net(x)
            best[name] = min(best[name], *(_timed_call(functools.partial(net, x), dev) for _ in range(2)))
    return {name: shape[0] / t for name, t in best.items()}


@contextlib.contextmanager
def _threads(protocol: SpeedProtocol, dev: torch.device) -> Iterator[None]:
    """The protocol's CPU threads while timing (null: every core the process may use); restored after."""
    if dev.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(protocol.threads or cpu_cores())
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def throughput(
    model: nn.Module,
    *,
    batch_size: int = 32,
    input_size: tuple[int, int, int] = (3, 224, 224),
    device: str | torch.device = "auto",
    dtype: str = "float32",
    warmup: int = 3,
    iters: int = 10,
    channels_last: bool = False,
) -> dict[str, Any]:
    """One quick figure: a single round of `iters` batches under an ad-hoc protocol (see `measure` for the full
    one). The caller's model is left as it was."""
    if len(input_size) != 3 or input_size[1] != input_size[2]:
        raise SpeedError(f"input_size={tuple(input_size)} must be (channels, side, side)")
    protocol = SpeedProtocol(
        name="adhoc", batch_size=batch_size, input_size=input_size[1], dtype=dtype, channels_last=channels_last,
        warmup=warmup, iters=iters, rounds=1, retries=0, tf32=torch.backends.cudnn.allow_tf32,
    )  # fmt: skip
    return measure(model, protocol, device, in_channels=input_size[0])


def _timed_call(call: Callable[[], Any], dev: torch.device) -> float:
    """Seconds of one call (CUDA: events around it, then synchronized)."""
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0

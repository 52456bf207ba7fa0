"""Latency lookup table (speed.predictor=lut): a candidate's deploy-form speed predicted from per-layer latencies.

The method is nn-Meter's (Zhang et al., "nn-Meter: Towards Accurate Latency Prediction of Deep-Learning Model
Inference on Diverse Edge Devices", MobiSys 2021, Sec. 4): a network's latency is the sum of the latencies of the
kernels it runs, each looked up in a table measured once per device. nn-Meter's hard part, detecting which
operators a backend fuses into one kernel, does not arise here: RepVGG's deploy form is one fused kernel per layer
(3x3 conv + bias + ReLU, `DeployBlock`), then global average pooling and the linear classifier (the fixed
overhead, measured as its own kernel). Predicted latency per batch = sum of the layers' entries + the head's entry;
predicted throughput = batch / that latency. There is no input cost to add: as in `measure`, the batch exists
before timing starts.

Each entry is timed by `measure` itself on the layer alone (the protocol's warm-up, rounds, median round, retries
and threads), with the device's exclusive lock held (`DeviceLock(...).exclusive()`): the same discipline as a
whole-network figure. One difference from nn-Meter's kernel timing is deliberate: a layer timed alone calls the same
weights again and again, so they stay in the last-level cache, while a network streams all of its weights (tens of
MB for these widths) once a batch, and a layer's weights have been evicted by the time they are read again. The
table times each layer over a rotation of copies of it (`cold_copies`) whose weights together are at least twice
the device's last-level cache (L3 on a CPU from sysfs, L2 on a GPU), so each call reads its weights from memory as
in the network; the input activation stays warm, as the previous layer's output is in the network. (The eager
runtime only: a compiled or exported layer is timed alone, one copy, since a rotation would recompile per copy.)

Entries are keyed by (in and out channels, input side, stride, groups) inside a table for one (batch, dtype,
runtime, threads, device model, timing settings), and by layout (NCHW or channels_last); they
are JSON files under `<speed folder>/lut/<table key>/`, written atomically, so workers of a sweep share them and
a second worker never measures an entry that the first has written. A protocol whose channels_last is null (the
probe's "pick the faster") gets both layouts measured, and the prediction takes the faster total, as the probe does
for a whole network.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import files
from ..devices import DeviceLock, cpu_cores, device_key, device_name, environment, resolve_device
from ..models import ArchConfig
from ..models.blocks import DeployBlock
from ..schema import SpeedFigure
from .protocols import SpeedError, SpeedProtocol
from .speed import DTYPES, check_runtime, measure

PREDICTORS = ("measure", "lut")  # speed.predictor: time the whole deploy form, or predict it from the table
LUT_DIR = "lut"  # under the speed folder
# An entry's round lasts at least this long: a single layer at a small input takes well under a millisecond, and
# the protocol's iters (sized for whole networks) would leave its rounds at the timer's and the scheduler's mercy.
MIN_ROUND_S = 0.05
COLD_FALLBACK_BYTES = 32 * 2**20  # the last-level cache assumed where the system does not say (a server CPU's L3)
# How entries are timed, in the table's key: a table timed another way (the first tables: weights warm) is not mixed in.
TIMING = "cold-weights"
MAX_COPIES = 1024  # the rotation's cap: a tiny layer (the stem's 5 KB of weights) costs nothing to read cold anyway


@functools.cache  # read once per process, not once per entry
def last_level_cache_bytes(device: torch.device) -> int:
    """The device's last-level cache: a GPU's L2, a CPU's largest cache level (sysfs), else COLD_FALLBACK_BYTES."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or COLD_FALLBACK_BYTES
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip() if f.is_file() else ""
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        if text.rstrip("KMG").isdigit():
            sizes.append(int(text.rstrip("KMG")) * unit)
    return max(sizes, default=COLD_FALLBACK_BYTES)


def cold_copies(weight_bytes: int, cache_bytes: int) -> int:
    """How many copies of a layer a rotation needs so their weights span twice the last-level cache (1..MAX_COPIES):
    a copy's weights are then evicted before the rotation comes back to it."""
    return max(1, min(MAX_COPIES, math.ceil(2 * cache_bytes / max(weight_bytes, 1))))


class _Rotation(nn.Module):
    """Calls its copies in turn: each call reads weights that are not in the cache, as a layer in a network does."""

    def __init__(self, copies: list[nn.Module]) -> None:
        super().__init__()
        self.copies, self._next = nn.ModuleList(copies), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.copies[self._next]
        self._next = (self._next + 1) % len(self.copies)
        return layer(x)


class LutError(SpeedError):
    """The lookup table cannot predict this network or protocol (say which, and what to use instead)."""


def check_predictor(value: str, arch: ArchConfig | None = None) -> None:
    """Refuse an unknown speed.predictor, naming the allowed values, and the table for a network it cannot
    predict (`arch`: not a plain deploy stack)."""
    if value not in PREDICTORS:
        raise LutError(f"speed.predictor={value!r} is not allowed; allowed: {', '.join(PREDICTORS)}")
    if value == "lut" and arch is not None:
        deploy_layers(arch, 32)


@dataclass(frozen=True)
class LayerKey:
    """One kernel of a deploy form: `conv` (3x3 conv + bias + ReLU) or `head` (global pool + linear; out_channels
    is the number of classes). side: the input's height and width."""

    kind: str
    in_channels: int
    out_channels: int
    side: int
    stride: int = 1
    groups: int = 1

    def file_name(self, channels_last: bool) -> str:
        layout = "cl" if channels_last else "nchw"
        return f"{self.kind}-c{self.in_channels}-{self.out_channels}-s{self.side}-st{self.stride}-g{self.groups}-{layout}.json"

    def module(self) -> nn.Module:
        if self.kind == "conv":
            return DeployBlock(self.in_channels, self.out_channels, self.stride, self.groups)
        return _Head(self.in_channels, self.out_channels)


class _Head(nn.Module):
    """What RepVGG.forward does after the last stage."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.gap, self.linear = nn.AdaptiveAvgPool2d(1), nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.gap(x).flatten(1))


def conv_out_side(side: int, stride: int) -> int:
    """Output side of a 3x3 conv with padding 1: floor((side + 2 - 3) / stride) + 1."""
    return (side - 1) // stride + 1


def deploy_layers(arch: ArchConfig, side: int) -> list[LayerKey]:
    """The deploy form's kernels in order: one per layer (the stem included), then the head. Refuses a network
    whose deploy form is not a plain stack (LutError)."""
    if not arch.plain or arch.use_se:
        why = "it has squeeze-excitation" if arch.use_se else f"variant {arch.variant.label!r} keeps no plain stack"
        raise LutError(
            f"speed.predictor=lut predicts plain deploy forms (3x3 conv + bias + ReLU per layer) and {why}; "
            "use speed.predictor=measure"
        )
    out = []
    for (cin, cout, stride), groups in zip(arch.layer_channels(), arch.layer_groups()):
        out.append(LayerKey("conv", cin, cout, side, stride, groups))
        side = conv_out_side(side, stride)
    out.append(LayerKey("head", arch.widths[-1], arch.num_classes, side))
    return out


class LatencyTable:
    """The per-layer latencies of one device under one protocol, in `folder` (a sweep's speed folder)."""

    def __init__(self, folder: Path | str, protocol: SpeedProtocol, device: str | torch.device = "auto") -> None:
        self.protocol, self.device = protocol, resolve_device(device)
        check_runtime(protocol, self.device)
        self.root = Path(folder) / LUT_DIR / self.table_key()
        self._cache: dict[str, dict[str, Any]] = {}

    def table_key(self) -> str:
        """What every entry of this table shares: the protocol but its name, side and layout (each entry has its
        own), the device model and the CPU threads."""
        fields = {k: v for k, v in self.protocol.fields().items() if k not in ("name", "input_size", "channels_last")}
        threads = (self.protocol.threads or cpu_cores()) if self.device.type == "cpu" else None
        content = [fields, self.device.type, device_name(self.device), threads, TIMING]
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def layouts(self) -> list[bool]:
        """The layouts entries are measured in: the protocol's, or both when it leaves the choice to a probe."""
        if self.protocol.runtime == "onnxruntime":  # fed NCHW whatever the layout field says
            return [False]
        return [False, True] if self.protocol.channels_last is None else [bool(self.protocol.channels_last)]

    def entry(self, key: LayerKey, channels_last: bool) -> dict[str, Any] | None:
        """The stored entry, or None when it has not been measured."""
        name = key.file_name(channels_last)
        if name not in self._cache:
            try:
                found = files.read_json(self.root / name)
            except (OSError, ValueError):  # a torn or foreign file: measured again
                found = None
            if found is None:
                return None
            self._cache[name] = found
        return self._cache[name]

    def missing(self, keys: Iterable[LayerKey]) -> list[tuple[LayerKey, bool]]:
        todo = dict.fromkeys((k, cl) for k in keys for cl in self.layouts)
        return [(k, cl) for k, cl in todo if self.entry(k, cl) is None]

    def fill(self, keys: Iterable[LayerKey]) -> int:
        """Measure the entries `keys` lack, with the device to ourselves; returns how many this call measured."""
        todo = self.missing(keys)
        if not todo:
            return 0
        self.root.mkdir(parents=True, exist_ok=True)
        measured = 0
        with DeviceLock(self.device).exclusive():
            for key, layout in todo:
                if self.entry(key, layout) is None:  # another process may have measured it while this one waited
                    self._write(key, layout, self._measure(key, layout))
                    measured += 1
        return measured

    def _measure(self, key: LayerKey, channels_last: bool) -> dict[str, Any]:
        protocol = dataclasses.replace(self.protocol, input_size=None, channels_last=channels_last)
        torch.manual_seed(0)  # the weights do not change the time; a fixed init keeps denormals out of the picture
        layer = key.module()
        weight_bytes = sum(t.numel() for t in layer.parameters()) * torch.finfo(DTYPES[protocol.dtype]).bits // 8
        copies = cold_copies(weight_bytes, last_level_cache_bytes(self.device)) if protocol.runtime == "eager" else 1
        module = _Rotation([layer] + [copy.deepcopy(layer) for _ in range(copies - 1)]) if copies > 1 else layer
        figure = measure(module, protocol, self.device, side=key.side, in_channels=key.in_channels)
        per_batch = figure["batch_size"] / figure["images_per_s"]
        if per_batch * protocol.iters < MIN_ROUND_S:  # a layer alone is short: enough batches a round to time it
            protocol = dataclasses.replace(protocol, iters=math.ceil(MIN_ROUND_S / per_batch))
            figure = measure(module, protocol, self.device, side=key.side, in_channels=key.in_channels)
        keep = ("images_per_s", "latency_ms", "spread", "reliable", "attempts", "batch_size", "dtype", "threads",
                "runtime", "device_key", "device_name", "torch")  # fmt: skip
        return {
            "layer": dataclasses.asdict(key),
            "channels_last": channels_last,
            "seconds": figure["batch_size"] / figure["images_per_s"],  # per batch, from the median round
            **{k: figure.get(k) for k in keep},
            "protocol": self.protocol.name,
            "iters": protocol.iters,
            "copies": copies,  # the rotation the layer was timed over (weights read cold, as in the network)
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _write(self, key: LayerKey, channels_last: bool, entry: dict[str, Any]) -> None:
        name = key.file_name(channels_last)
        files.write_json(self.root / name, entry)
        self._cache[name] = entry

    def predict(self, arch: ArchConfig, side: int | None = None) -> dict[str, Any]:
        """The predicted speed of `arch`'s deploy form under the table's protocol (entries it lacks are measured
        first): `images_per_s`, `latency_ms` (per batch), `layers` (each distinct kernel, its count and ms)."""
        side = self.protocol.input_size or side
        if side is None:
            raise LutError(f"speed protocol {self.protocol.name!r} has input_size null: give the input side")
        keys = deploy_layers(arch, side)
        measured = self.fill(keys)
        totals = {cl: sum(self.entry(k, cl)["seconds"] for k in keys) for cl in self.layouts}
        layout = min(totals, key=totals.get)
        return self._prediction(keys, layout, totals, side, measured)

    def _prediction(self, keys, layout: bool, totals: dict[bool, float], side: int, measured: int) -> dict[str, Any]:
        counts = dict.fromkeys(keys, 0)
        for k in keys:
            counts[k] += 1
        layers = [{**dataclasses.asdict(k), "count": n, "ms": self.entry(k, layout)["seconds"] * 1e3}
                  for k, n in counts.items()]  # fmt: skip
        batch, seconds = self.protocol.batch_size, totals[layout]
        return {
            "predictor": "lut",
            "protocol": self.protocol.name,
            "images_per_s": batch / seconds,
            "latency_ms": seconds * 1e3,
            "overhead_ms": self.entry(keys[-1], layout)["seconds"] * 1e3,
            "layouts_ms": {("channels_last" if cl else "contiguous"): t * 1e3 for cl, t in totals.items()},
            "channels_last": layout,
            "layers": layers,
            "batch_size": batch,
            "input_size": [keys[0].in_channels, side, side],
            "dtype": self.protocol.dtype,
            "runtime": self.protocol.runtime,
            "threads": (self.protocol.threads or cpu_cores()) if self.device.type == "cpu" else None,
            "device_key": device_key(self.device),
            "device_name": device_name(self.device),
            "table": str(self.root),
            "entries_measured": measured,
            "protocol_fields": self.protocol.fields(),
        }


def predicted_figure(
    arch: ArchConfig, protocol: SpeedProtocol, device: str | torch.device, folder: Path | str, side: int
) -> SpeedFigure:
    """The deploy form's speed figure as the lookup table predicts it (`source` predicted): what a trial records
    under speed.predictor=lut, in the fields of a measured figure."""
    dev = resolve_device(device)
    table = LatencyTable(folder, protocol, dev)
    p = table.predict(arch, side)
    return SpeedFigure(
        **environment(dev),
        protocol=p["protocol"],
        images_per_s=p["images_per_s"],
        latency_ms=p["latency_ms"],
        batch_size=p["batch_size"],
        input_size=p["input_size"],
        dtype=p["dtype"],
        tf32=protocol.tf32 if dev.type == "cuda" else None,
        cudnn_benchmark=protocol.cudnn_benchmark if dev.type == "cuda" else None,
        channels_last=p["channels_last"],
        threads=p["threads"],
        runtime=p["runtime"],
        device_key=p["device_key"],
        protocol_fields=p["protocol_fields"],
        precision="float",
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        source="predicted",
        table=p["table"],
        overhead_ms=p["overhead_ms"],
    )


def plain_sizes(arch: ArchConfig, side: int = 224) -> dict[str, int]:
    """MACs and parameters of a plain deploy form counted from its layers, in fvcore's convention (a conv's MACs
    cin/groups * cout * 9 * output pixels, the pooling one per input element, the linear layer cin * classes; biases
    are parameters, not MACs): equal to `arch_sizes(arch, side)["deploy"]` (tests/test_lut.py), without building
    the network, so a screen can count thousands of candidates in well under a second."""
    macs = params = 0
    for k in deploy_layers(arch, side):
        if k.kind == "conv":
            out = conv_out_side(k.side, k.stride)
            weights = k.in_channels // k.groups * k.out_channels * 9
            macs, params = macs + weights * out * out, params + weights + k.out_channels
        else:
            macs += k.in_channels * k.side * k.side + k.in_channels * k.out_channels
            params += k.in_channels * k.out_channels + k.out_channels
    return {"macs": macs, "params": params}

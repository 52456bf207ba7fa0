"""Speed figures: one per (deploy architecture, device, protocol), measured once, with the device to itself.

A figure is keyed by a hash of the measured network's structure (so the plain variants, one and the same deploy
network, share one figure), the protocol, the input side and the device model; it is measured under the device's
exclusive lock (nothing of ours trains on the device meanwhile) and kept as JSON in a folder shared by a sweep's
trials. A trial that finds its figure there reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn

from .. import files
from ..devices import DeviceLock, cpu_cores, device_name, resolve_device
from ..schema import RecordError, SpeedFigure, parse, to_json
from .protocols import SpeedProtocol
from .speed import check_runtime, measure, measure_onnx


def architecture_hash(model: nn.Module) -> str:
    """A hash of a network's structure (module types, shapes, strides, groups; not its weights)."""
    return hashlib.sha256(repr(model).encode()).hexdigest()[:16]


def figure_key(
    model: nn.Module, protocol: SpeedProtocol, device: torch.device, side: int, precision: str = "float"
) -> str:
    """The identity of a speed figure: architecture, protocol, input side, device model (and CPU threads), and
    whether it is the INT8 model of that architecture."""
    threads = (protocol.threads or cpu_cores()) if device.type == "cpu" else None
    content = [architecture_hash(model), protocol.fields(), protocol.input_size or side, device_name(device), threads]
    if precision != "float":
        content.append(precision)
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def speed_figure(
    model: nn.Module,
    protocol: SpeedProtocol,
    device: str | torch.device,
    cache: Path | None,
    *,
    side: int,
    in_channels: int = 3,
    onnx: Path | None = None,
    precision: str = "float",
) -> SpeedFigure:
    """The figure of `model` under `protocol` on `device`: from `cache` when it holds one, else measured with the
    device to itself and written there (checked against the record schema either way). `source` says which (measured, cached). `onnx`: an ONNX export of `model`
    already on disk (a protocol with runtime onnxruntime), timed as it is instead of exporting again; with
    `precision="int8"` it is the model's INT8 quantization, whose figure is cached apart from the float one."""
    dev = resolve_device(device)
    key = figure_key(model, protocol, dev, side, precision)
    path = Path(cache) / f"{key}.json" if cache is not None else None
    if path is not None and (found := _read(path)) is not None:
        return dataclasses.replace(found, source="cached")
    with DeviceLock(dev).exclusive():
        if path is not None and (found := _read(path)) is not None:  # measured while this process waited
            return dataclasses.replace(found, source="cached")
        if onnx is not None:
            check_runtime(protocol, dev)
            figure = measure_onnx(onnx, protocol, side=side, in_channels=in_channels)
        else:
            figure = measure(model, protocol, dev, side=side, in_channels=in_channels)
        figure.update(precision=precision, key=key, arch_hash=architecture_hash(model),
                      measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))  # fmt: skip
        typed = parse(SpeedFigure, figure, "speed figure")
        if path is not None:
            files.write_json(path, to_json(typed))
    return dataclasses.replace(typed, source="measured")


def _read(path: Path) -> SpeedFigure | None:
    try:
        found = files.read_json(path)
        return None if found is None else parse(SpeedFigure, found, str(path))
    except (OSError, RecordError):  # a torn or foreign file: measure again (and overwrite it)
        return None

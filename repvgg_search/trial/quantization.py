"""A trial's quantization stage (`quant.ptq=true`): INT8 PTQ of the measured form under the trial's quantization
protocol, on the whole validation set: INT8 top1 beside the float ONNX model's and the exact simulation's, the
per-layer sensitivity, and the INT8 and float speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import build_loaders, calibration_images
from ..data.config import DataConfig
from ..deploy.quant import ptq
from ..deploy.quant_protocols import protocol_of_config
from ..profile.figures import speed_figure
from ..profile.protocols import resolve_protocol
from ..schema import Quant, parse

CPU = torch.device("cpu")


def full_val_loader(data: DataConfig, seed: int):
    """The whole validation split, unsharded, on the CPU (onnxruntime runs there): in a multi-process trial rank 0
    quantizes alone, and its own loader holds only its shard (1/N of the images)."""
    return build_loaders(data, device=CPU, seed=seed)[1]


def quant_stage(
    model: nn.Module, quant: Any, data: DataConfig, val_loader, folder: Path, speed_dir: Path, float_top1: float | None
) -> Quant:
    """Quantize `model` (the form the trial measured) under `quant`'s protocol and record: the protocol, INT8 top1
    and the float ONNX model's top1 on the same images (`val_loader`: every validation image), drop = float ONNX -
    INT8 top1, the exact simulation's top1 and the runtime gap (`quant.reference`), the per-layer sensitivity
    (`quant.layer_images`), and the INT8 and float speed figures in onnxruntime on the CPU under `quant.speed` (one
    protocol, so their ratio is like for like). `float_top1` (the PyTorch deploy form's) is kept beside them."""
    protocol = protocol_of_config(quant)
    images = calibration_images(data, protocol.calib_images)
    found = ptq(model, folder, images, val_loader, protocol, layer_images=quant.layer_images,
                reference=quant.reference, reference_device=quant.reference_device)  # fmt: skip
    block = parse(Quant, found, "quant")
    block.per_channel, block.calibrate = protocol.per_channel, protocol.calibrate
    block.float_top1 = float_top1  # PyTorch's (bf16/fp16 under train.amp): not what the drop subtracts from
    if quant.speed == "none":
        return block
    speed = resolve_protocol({"name": quant.speed, "runtime": "onnxruntime"}, CPU)
    side = images.shape[-1]
    float_onnx, int8_onnx = folder / block.files.float, folder / block.files.int8  # ptq's exports, timed as they are
    block.float_speed = speed_figure(model, speed, CPU, speed_dir, side=side, onnx=float_onnx)
    block.int8_speed = speed_figure(model, speed, CPU, speed_dir, side=side, onnx=int8_onnx, precision="int8")
    block.int8_speedup = block.int8_speed.images_per_s / block.float_speed.images_per_s
    return block

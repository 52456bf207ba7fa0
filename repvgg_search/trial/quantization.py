"""A trial's quantization stage (`quant.ptq=true`): INT8 PTQ of the measured form, its top1, drop and speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import calibration_images
from ..data.config import DataConfig
from ..deploy.quant import PtqSettings, ptq
from ..profile.figures import speed_figure
from ..profile.protocols import resolve_protocol
from ..schema import Quant, parse

CPU = torch.device("cpu")


def quant_stage(
    model: nn.Module, quant: Any, data: DataConfig, val_loader, folder: Path, speed_dir: Path, float_top1: float | None
) -> Quant:
    """Quantize `model` (the form the trial measured) and record: INT8 top1 and its drop from the float top1
    (the PyTorch deploy form's), the float ONNX model's top1, and the INT8 and float speed figures in onnxruntime
    on the CPU under `quant.speed` (one protocol, so their ratio is like for like)."""
    settings = PtqSettings(calib_images=quant.calib_images, per_channel=quant.per_channel, calibrate=quant.calibrate)
    images = calibration_images(data, quant.calib_images)
    block = parse(Quant, ptq(model, folder, images, val_loader, settings), "quant")
    block.float_top1 = float_top1
    block.drop = None if float_top1 is None else float_top1 - block.int8_top1
    if quant.speed == "none":
        return block
    protocol = resolve_protocol({"name": quant.speed, "runtime": "onnxruntime"}, CPU)
    side = images.shape[-1]
    float_onnx, int8_onnx = folder / block.files.float, folder / block.files.int8  # ptq's exports, timed as they are
    block.float_speed = speed_figure(model, protocol, CPU, speed_dir, side=side, onnx=float_onnx)
    block.int8_speed = speed_figure(model, protocol, CPU, speed_dir, side=side, onnx=int8_onnx, precision="int8")
    block.int8_speedup = block.int8_speed.images_per_s / block.float_speed.images_per_s
    return block

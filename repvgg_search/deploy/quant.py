"""INT8 post-training quantization of a deploy form: static, per-channel, calibrated, in onnxruntime on the CPU.

Why onnxruntime: its static quantization (QDQ format, `quantize_static`) is maintained and documented, and the same
runtime then runs and times both the float and the INT8 model, so the speed ratio compares like with like.
PyTorch's own eager/FX quantization is deprecated, and its PT2E flow now lives in torchao, whose CPU INT8 kernels
need an x86 inductor backend that a sweep cannot count on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BadInputError, check_int
from ..files import EXPORT_DIR
from .onnx_io import INPUT, export_onnx, onnx_session, run_onnx

_log = logging.getLogger(__name__)
CALIBRATIONS = ("minmax", "entropy", "percentile")
FLOAT_ONNX, INT8_ONNX = "deploy.onnx", "deploy.int8.onnx"


class QuantError(BadInputError):
    """A quantization setting outside what is allowed."""


@dataclass(frozen=True)
class PtqSettings:
    """`quant.*` of a trial (see config.QuantConfig)."""

    calib_images: int = 256
    per_channel: bool = True
    calibrate: str = "minmax"
    batch_size: int = 32


def validate_quant(calib_images: int, calibrate: str) -> None:
    check_int(calib_images, "quant.calib_images", 1, error=QuantError)
    if calibrate not in CALIBRATIONS:
        raise QuantError(f"quant.calibrate={calibrate!r} is unknown; allowed: {', '.join(CALIBRATIONS)}")


def quantize_int8(float_path: Path, int8_path: Path, images: torch.Tensor, s: PtqSettings) -> Path:
    """Static INT8 quantization of an ONNX model (QDQ: int8 weights, per channel unless told otherwise; uint8
    activations with ranges calibrated on `images`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[s.calibrate]  # fmt: skip
    prepared = int8_path.with_name(int8_path.stem + ".pre.onnx")
    with _quiet():
        quant_pre_process(str(float_path), str(prepared))
        quantize_static(
            str(prepared), str(int8_path), _Reader(images, s.batch_size), quant_format=QuantFormat.QDQ,
            per_channel=s.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=method,
        )  # fmt: skip
    prepared.unlink(missing_ok=True)
    return int8_path


class _Reader:
    """onnxruntime's calibration data reader over a tensor of images, in batches."""

    def __init__(self, images: torch.Tensor, batch: int) -> None:
        self.batches = iter(images[i : i + batch].numpy().astype(np.float32) for i in range(0, len(images), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.batches, None)
        return None if x is None else {INPUT: x}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all static calibration needs
        pass


def onnx_top1(session: Any, loader) -> dict[str, float]:
    """top1 (%) of an ONNX model over an evaluation loader (batches moved to the CPU)."""
    correct = total = 0
    for x, y in loader:
        logits = run_onnx(session, x)
        correct += int((logits.argmax(1) == y.cpu().numpy()).sum())
        total += len(y)
    return {"top1": 100.0 * correct / max(total, 1), "total": total}


def ptq(model: nn.Module, folder: Path, images: torch.Tensor, val_loader, s: PtqSettings) -> dict[str, Any]:
    """Export `model` (the deploy form, float32), quantize it with `images`, and evaluate both ONNX models on
    `val_loader`: the record's `quant` block (files relative to the trial folder)."""
    t0 = time.perf_counter()
    out = folder / EXPORT_DIR
    side = images.shape[-1]
    float_path = export_onnx(model, (images.shape[1], side, side), out / FLOAT_ONNX)
    int8_path = quantize_int8(float_path, out / INT8_ONNX, images, s)
    float_eval = onnx_top1(onnx_session(float_path), val_loader)
    int8_eval = onnx_top1(onnx_session(int8_path), val_loader)
    return {
        "method": "onnxruntime static QDQ (int8 weights, uint8 activations)",
        "per_channel": s.per_channel,
        "calibrate": s.calibrate,
        "calib_images": len(images),
        "float_onnx_top1": float_eval["top1"],
        "int8_top1": int8_eval["top1"],
        "val_images": int8_eval["total"],
        "files": {"float": f"{EXPORT_DIR}/{FLOAT_ONNX}", "int8": f"{EXPORT_DIR}/{INT8_ONNX}"},
        "quant_s": time.perf_counter() - t0,
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools log at INFO and warn about pre-processing: keep a trial's log readable."""
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)

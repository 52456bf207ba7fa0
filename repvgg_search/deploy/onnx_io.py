"""ONNX: export a model (PyTorch's dynamo exporter), open it in onnxruntime on the CPU, run and check it."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices import cpu_cores

INPUT, OUTPUT = "x", "logits"
for _name in ("onnx_ir", "onnxscript", "onnxruntime"):  # their INFO lines would crowd a trial's log
    logging.getLogger(_name).setLevel(logging.WARNING)


def example_size(input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """The example input an export traces: at least 64 px, so that no feature map is 1x1 (a size-1 dimension
    would be specialized, and the exported image side would not stay dynamic)."""
    side = max(int(input_size[1]), 64)
    return (int(input_size[0]), side, side)


def export_onnx(model: nn.Module, input_size: tuple[int, int, int], path: Path, batch: int = 2) -> Path:
    """Export `model` (float32, CPU, eval mode; a copy, the caller's model is untouched) to `path`, one file,
    through `torch.export` (PyTorch's maintained ONNX path); batch and (square) image side are dynamic."""
    import copy

    net = copy.deepcopy(model).float().cpu().eval()
    x = torch.randn(batch, *example_size(input_size))
    batch_dim, side_dim = torch.export.Dim("batch"), torch.export.Dim("side", min=32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), str(path), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
            dynamic_shapes={"x": {0: batch_dim, 2: side_dim, 3: side_dim}}, verbose=False, external_data=False,
        )  # fmt: skip
    return path


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with `threads` intra-op threads (null: every core this process may use)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: torch.Tensor | np.ndarray) -> np.ndarray:
    array = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else x
    return session.run([OUTPUT], {INPUT: np.ascontiguousarray(array, dtype=np.float32)})[0]

"""Export a model: ONNX (checked in onnxruntime) and `torch.export` (a .pt2 program), each checked against the
PyTorch model's own outputs. A finished trial's export (`trial.export.export_trial`) records them in its result.json."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BadInputError
from ..models import output_error
from .onnx_io import export_onnx, onnx_session, run_onnx

FORMATS = ("onnx", "torch_export")
FILES = {"onnx": "deploy.onnx", "torch_export": "deploy.pt2"}
TOLERANCE = 1e-5  # max relative difference from the PyTorch model's outputs, float32


class ExportError(RuntimeError):
    """An exported model's outputs differ from the PyTorch model's by more than the tolerance."""


def export_program(model: nn.Module, input_size: tuple[int, int, int], path: Path) -> Path:
    """`torch.export` of `model` (float32, CPU, a copy) saved as a .pt2 file: the batch is dynamic, the image size
    is `input_size`'s (a dynamic side is refused by torch.export's guards where a feature map reaches 1x1)."""
    net = copy.deepcopy(model).float().cpu().eval()
    example = (torch.randn(2, *input_size),)
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def check_input(input_size: tuple[int, int, int], batch: int = 4, seed: int = 0) -> torch.Tensor:
    """The fixed random batch the exports are checked on (a batch size other than the export's example)."""
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed))


def export_model(
    model: nn.Module, input_size: tuple[int, int, int], folder: Path, formats=FORMATS, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """Export `model` into `folder` in each format and check each against the model's own outputs on one fixed
    batch (float32, CPU; relative error as `models.output_error`); returns {format: {file, max_rel_error, ...}}."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise BadInputError(f"export formats {list(formats)}: allowed: {', '.join(FORMATS)}")
    x, out = check_input(input_size), {}
    with torch.no_grad():
        reference = copy.deepcopy(model).float().cpu().eval()(x).numpy()
    for fmt in formats:
        t0, path = time.perf_counter(), folder / FILES[fmt]
        if fmt == "onnx":
            export_onnx(model, input_size, path)
            exported = run_onnx(onnx_session(path), x)
        else:
            export_program(model, input_size, path)
            with torch.no_grad():
                exported = torch.export.load(str(path)).module()(x).numpy()
        error = output_error(reference, exported)["max_rel_error"]
        out[fmt] = {"file": path.name, "max_rel_error": error, "tolerance": tolerance, "passed": error <= tolerance,
                    "checked_on": [len(x), *input_size], "seconds": time.perf_counter() - t0}  # fmt: skip
    return out


def __getattr__(name: str) -> Any:
    """`deploy.export.export_trial`: deprecated (it moved to `trial.export` with the trial it records into);
    resolved lazily, removed in 0.3."""
    if name == "export_trial":
        import warnings

        warnings.warn("repvgg_search.deploy.export.export_trial is now repvgg_search.trial.export.export_trial; the "
                      "old path goes in 0.3", DeprecationWarning, stacklevel=2)  # fmt: skip
        from ..trial.export import export_trial

        return export_trial
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

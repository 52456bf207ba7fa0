"""Export a finished trial's deploy form: ONNX (checked in onnxruntime) and `torch.export` (a .pt2 program), each
checked against the PyTorch model's outputs and recorded in the trial's `result.json` (`export` block)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import records
from ..errors import BadInputError
from ..locks import holding
from ..records import EXPORT_DIR
from ..trial.artifact import TrialModel, from_trial
from ..trial.folder import LOCK
from .onnx_io import export_onnx, onnx_session, relative_error, run_onnx

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
    batch (float32, CPU; relative error as `onnx_io.relative_error`); returns {format: {file, max_rel_error, ...}}."""
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
        error = relative_error(reference, exported)
        out[fmt] = {"file": path.name, "max_rel_error": error, "tolerance": tolerance, "passed": error <= tolerance,
                    "checked_on": [len(x), *input_size], "seconds": time.perf_counter() - t0}  # fmt: skip
    return out


def export_trial(path: str | Path, formats=FORMATS, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Export a completed trial's deploy form into `<trial>/export/` and record it in its `result.json`; raises
    ExportError (after recording) when an export differs from PyTorch by more than `tolerance`."""
    taken: TrialModel = from_trial(path)
    with holding(taken.path / LOCK):  # nothing trains in the folder while its record is rewritten
        found = export_model(taken.model, taken.input_size, taken.path / EXPORT_DIR, formats, tolerance)
        for block in found.values():
            block["file"] = f"{EXPORT_DIR}/{block['file']}"
        record = records.read_json(taken.path / records.RESULT)
        record["export"] = {**(record.get("export") or {}), **found, "form": taken.form,
                            "versions": _versions()}  # fmt: skip
        records.write_json(taken.path / records.RESULT, record)
    failed = {f: b["max_rel_error"] for f, b in found.items() if not b["passed"]}
    if failed:
        raise ExportError(f"exports of {taken.path} differ from PyTorch by more than {tolerance:g}: {failed}")
    return found


def _versions() -> dict[str, str | None]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}

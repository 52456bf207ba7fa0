"""Export a finished trial's deploy form into `<trial>/export/` (ONNX and `torch.export`, each checked against the
PyTorch model) and record it in the trial's result.json (`export` block): `python -m repvgg_search.deploy TRIAL_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import files
from ..deploy.export import FORMATS, TOLERANCE, ExportError, export_model
from ..files import EXPORT_DIR
from ..locks import holding
from ..schema import Export, ExportCheck, parse, read_record, write_record
from .artifact import TrialModel, from_trial
from .folder import LOCK


def export_trial(path: str | Path, formats=FORMATS, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Export a completed trial's deploy form into `<trial>/export/` and record it in its `result.json`; raises
    ExportError (after recording) when an export differs from PyTorch by more than `tolerance`."""
    taken: TrialModel = from_trial(path)
    with holding(taken.path / LOCK):  # nothing trains in the folder while its record is rewritten
        found = export_model(taken.model, taken.input_size, taken.path / EXPORT_DIR, formats, tolerance)
        for block in found.values():
            block["file"] = f"{EXPORT_DIR}/{block['file']}"
        record = read_record(taken.path / files.RESULT)
        export = record.export or Export()
        for fmt, block in found.items():
            setattr(export, fmt, parse(ExportCheck, block, f"export.{fmt}"))
        export.form, export.versions = taken.form, _versions()
        record.export = export
        write_record(taken.path / files.RESULT, record)
    failed = {f: b["max_rel_error"] for f, b in found.items() if not b["passed"]}
    if failed:
        raise ExportError(f"exports of {taken.path} differ from PyTorch by more than {tolerance:g}: {failed}")
    return found


def _versions() -> dict[str, str | None]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}

"""Where a record holds each width-search objective and each table column: paths checked against the schema on
import, so a misspelt one fails here, not in a user's empty report."""

from __future__ import annotations

from typing import Any

from ..typed import field_type, has_field
from .record import TrialRecord


def check_path(keys: tuple[str, ...], cls: type = TrialRecord) -> tuple[str, ...]:
    """`keys` unchanged when they name a field of `cls` (through nested blocks); a misspelt path raises here,
    where a table or objective declares it, not when a user's report comes out empty."""
    current: Any = cls
    for i, k in enumerate(keys):
        if not has_field(current, k):
            raise KeyError(f"{'.'.join(keys)}: {'.'.join(keys[: i + 1])} is not a field of the trial record")
        current = field_type(current, k)
    return keys


# -- the width search's objectives, and the record's table columns -----------------------------------------------
# name -> (direction, where a trial record holds it, meaning)
OBJECTIVES: dict[str, tuple[str, tuple[str, ...], str]] = {
    name: (direction, check_path(path), meaning)
    for name, direction, path, meaning in (
        ("top1", "maximize", ("metrics", "top1"), "validation top-1 accuracy, %"),
        ("images_per_s", "maximize", ("speed", "images_per_s"), "deploy-form throughput on the trial's device"),
        ("latency_ms", "minimize", ("speed", "latency_ms"), "deploy-form median batch latency, ms"),
        ("macs", "minimize", ("complexity", "deploy", "macs"), "deploy-form MACs at 3x224x224 (fvcore)"),
        ("params", "minimize", ("complexity", "deploy", "params"), "deploy-form parameters"),
        ("int8_top1", "maximize", ("quant", "int8_top1"), "top-1 of the INT8 model (needs quant.ptq=true), %"),
        (
            "int8_images_per_s",
            "maximize",
            ("quant", "int8_speed", "images_per_s"),
            "INT8 throughput in onnxruntime, CPU (quant.ptq=true)",
        ),
    )
}
QUANT_OBJECTIVES = ("int8_top1", "int8_images_per_s")  # measured by the trial's quantization stage

# Table column -> where a record holds it: analysis.tables builds its columns from these (derived columns, such as
# the speed setup or the form a figure is of, are computed there from the typed record).
COLUMNS: dict[str, tuple[str, ...]] = {
    name: check_path(path)
    for name, path in {
        "trial_id": ("trial_id",),
        "status": ("status",),
        "group": ("group",),
        "seed": ("seed",),
        "top1": ("metrics", "top1"),
        "deploy_top1": ("metrics", "deploy_top1"),
        "train_top1": ("metrics", "train_top1"),
        "loss": ("metrics", "loss"),
        "deploy_macs": ("complexity", "deploy", "macs"),
        "deploy_params": ("complexity", "deploy", "params"),
        "train_macs": ("complexity", "train", "macs"),
        "train_params": ("complexity", "train", "params"),
        "images_per_s": ("speed", "images_per_s"),
        "latency_ms": ("speed", "latency_ms"),
        "latency_ms_iqr": ("speed", "latency_ms_iqr"),
        "device": ("speed", "device"),
        "device_name": ("speed", "device_name"),
        "threads": ("speed", "threads"),
        "batch_size": ("speed", "batch_size"),
        "dtype": ("speed", "dtype"),
        "speed_form": ("speed", "form"),
        "converted": ("conversion", "converted"),
        "max_abs_error": ("conversion", "max_abs_error"),
        "a": ("arch", "a"),
        "b": ("arch", "b"),
        "groups": ("arch", "groups"),
        "use_se": ("arch", "use_se"),
        "search_study": ("search", "study"),
        "search_number": ("search", "number"),
        "search_feasible": ("search", "feasible"),
        "search_state": ("search", "state"),
        "search_kind": ("search", "kind"),
        "rung": ("search", "rung"),  # search.fidelity=asha: the run's epochs (a rung, or train.epochs)
        "candidate": ("search", "candidate"),  # asha: the candidate (its full-fidelity trial id) the run is of
        "int8_top1": ("quant", "int8_top1"),
        "quant_drop": ("quant", "drop"),
        "float_onnx_top1": ("quant", "float_onnx_top1"),
        "reference_top1": ("quant", "reference_top1"),
        "runtime_gap": ("quant", "runtime_gap"),
        "quant_reference_drop": ("quant", "reference_drop"),
        "int8_images_per_s": ("quant", "int8_speed", "images_per_s"),
        "float_ort_images_per_s": ("quant", "float_speed", "images_per_s"),
        "int8_speedup": ("quant", "int8_speedup"),
        "error": ("error",),
    }.items()
}

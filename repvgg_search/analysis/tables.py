"""Result tables: one flat row per trial, ablation tables laid out like the paper's, markdown rendering; per-trial
hover texts and point labels for the figures."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..schema import COLUMNS, ArchBlock, SpeedFigure, TrialRecord, lookup, parse_record

ID_COLUMNS = ["trial_id", "status", "group", "preset", "variant", "seed", "data", "epochs"]
METRIC_COLUMNS = ["top1", "deploy_top1", "train_top1", "loss"]
SIZE_COLUMNS = ["deploy_macs", "deploy_params", "train_macs", "train_params", "macs_input"]
SPEED_COLUMNS = ["images_per_s", "latency_ms", "latency_ms_iqr", "speed_form", "form", "converted", "max_abs_error"]
DEVICE_COLUMNS = ["device", "device_name", "threads", "batch_size", "speed_input", "dtype", "speed_setup"]
ARCH_COLUMNS = ["a", "b", "depths", "groups", "grouped_layers", "use_se"]
SEARCH_COLUMNS = [
    "search_study", "search_number", "search_feasible", "search_state", "search_values", "search_kind", "rung",
    "candidate",
]  # fmt: skip
ORIGIN_COLUMNS = ["error", "origin", "where", "source"]
# INT8 post-training quantization (quant.ptq=true): top1, drop from the float ONNX top1 (same images, the float32
# graph before quantization), the exact simulation's top1 and the runtime gap, speed in onnxruntime (CPU).
# int8_used/quant_drop_used: the figures the tables use (the simulation's where |runtime_gap| > GAP_LIMIT).
QUANT_COLUMNS = ["int8_top1", "quant_drop", "float_onnx_top1", "reference_top1", "runtime_gap", "quant_reference_drop",
                 "int8_used", "quant_drop_used", "int8_images_per_s", "float_ort_images_per_s", "int8_speedup"]  # fmt: skip
QUANT_TEXT_COLUMNS = ["quant_protocol", "drop_from"]
GAP_LIMIT = 0.5  # top1 points: beyond it the runtime's INT8 arithmetic, not the quantization, moves the top1
TABLE_COLUMNS = [
    *ID_COLUMNS,
    *METRIC_COLUMNS,
    *SIZE_COLUMNS,
    *SPEED_COLUMNS,
    *DEVICE_COLUMNS,
    *ARCH_COLUMNS,
    *SEARCH_COLUMNS,
    *QUANT_COLUMNS,
    *QUANT_TEXT_COLUMNS,
    *ORIGIN_COLUMNS,
]

INTEGER_COLUMNS = ["seed", "epochs", "groups", "threads", "batch_size", "search_number", "rung"]


def _dims(size: Any) -> str | None:
    return "x".join(str(s) for s in size) if isinstance(size, list | tuple) and size else None


def _join(values: Any) -> str | None:
    return "-".join(str(v) for v in values) if isinstance(values, list | tuple) else values


def speed_setup(speed: SpeedFigure | None) -> str | None:
    """One label per measurement setup; speeds with different labels are never compared."""
    if speed is None or (speed.images_per_s is None and speed.latency_ms is None):
        return None
    device = speed.device or "unknown device"
    name = speed.device_name or "unnamed"
    threads = f", {speed.threads} threads" if device == "cpu" and speed.threads else ""
    layout = ", channels_last" if speed.channels_last else ""
    tf32 = ", TF32" if speed.tf32 else ""
    protocol = f"{speed.protocol}: " if speed.protocol else ""  # records older than protocols have none
    runtime = f" | {speed.runtime}" if speed.runtime not in (None, "eager") else ""  # runtimes never mix
    return (
        f"{protocol}{device} ({name}{threads}) | batch {speed.batch_size} | {_dims(speed.input_size)} | "
        f"{speed.dtype}{tf32}{layout}{runtime}"
    )


def _row(rec: TrialRecord) -> dict[str, Any]:
    """One table row: the schema's columns (`schema.COLUMNS`), then the ones derived from several fields."""
    row: dict[str, Any] = {name: lookup(rec, path) for name, path in COLUMNS.items()}
    arch, cfg, speed, origin = rec.arch or ArchBlock(), rec.config or {}, rec.speed, rec.origin or {}
    values = lookup(rec, ("search", "values"))
    row.update(
        status=rec.status.value,
        preset=arch.preset or lookup(cfg, ("model", "name")),
        variant=arch.variant or lookup(cfg, ("variant", "name")),
        seed=rec.seed if rec.seed is not None else lookup(cfg, ("seed",)),
        data=lookup(cfg, ("data", "name")),
        epochs=lookup(rec, ("metrics", "epochs")) or lookup(cfg, ("train", "epochs")),
        macs_input=_dims(lookup(rec, ("complexity", "input_size"))),
        form="train" if row["converted"] is False or row["speed_form"] == "train" else "deploy",
        speed_input=_dims(speed.input_size if speed else None),
        speed_setup=speed_setup(speed),
        depths=_join(arch.depths),
        grouped_layers=_join(arch.grouped_layers),
        search_values=", ".join(f"{v:.4g}" for v in values) if isinstance(values, list) else None,
        origin=origin.get("kind"),
        where=origin.get("where"),
        source=origin.get("source"),
        **_quant_cells(rec, row),
    )
    return row


def _quant_cells(rec: TrialRecord, row: dict[str, Any]) -> dict[str, Any]:
    """The drop from the float ONNX top1 (older records subtracted PyTorch's top1: recomputed where both are
    recorded), and the figures the tables use (`int8_used`, `quant_drop_used`, `drop_from`): the exact simulation's
    (`quant.reference_top1`) where |runtime_gap| > GAP_LIMIT, else the runtime's."""
    q = rec.quant
    out: dict[str, Any] = {"quant_protocol": (q.protocol or {}).get("name") if q is not None else None}
    if q is None or q.int8_top1 is None:
        return out | {"int8_used": None, "quant_drop_used": None, "drop_from": None}
    drop = q.float_onnx_top1 - q.int8_top1 if q.float_onnx_top1 is not None else row["quant_drop"]
    out["quant_drop"] = drop
    if q.runtime_gap is not None and abs(q.runtime_gap) > GAP_LIMIT and q.reference_top1 is not None:
        return out | {"int8_used": q.reference_top1, "quant_drop_used": q.float_onnx_top1 - q.reference_top1,
                      "drop_from": "simulation"}  # fmt: skip
    return out | {"int8_used": q.int8_top1, "quant_drop_used": drop, "drop_from": "runtime"}


def as_record(rec: TrialRecord | dict[str, Any]) -> TrialRecord:
    """A typed record from a typed one or its JSON form (a loader's `_origin`/`_source` keys become its origin)."""
    if isinstance(rec, TrialRecord):
        return rec
    typed = parse_record(rec, extra="ignore")
    origin = dict(rec.get("_origin") or {})
    if rec.get("_source") is not None:
        origin["source"] = rec["_source"]
    typed.origin = origin or None
    return typed


def metric_table(records: list[TrialRecord | dict[str, Any]]) -> pd.DataFrame:
    """One row per trial with flat columns (raw units: MACs and params are counts, top1 in percent); records are
    typed (`schema.TrialRecord`) or their JSON form."""
    df = pd.DataFrame([_row(as_record(r)) for r in records], columns=TABLE_COLUMNS)
    numeric = ["top1", "deploy_top1", "train_top1", "loss", "deploy_macs", "deploy_params", "train_macs"]
    numeric += ["train_params", "images_per_s", "latency_ms", "latency_ms_iqr", "a", "b", *QUANT_COLUMNS]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    for col in INTEGER_COLUMNS:  # nullable integers, so that a missing value does not turn 3 into 3.0
        values = pd.to_numeric(df[col], errors="coerce")
        df[col] = values.astype("Int64") if (values.dropna() % 1 == 0).all() else values
    return df


def format_value(value: Any, digits: int = 2) -> str:
    """A table cell: floats to `digits` decimals, missing values as "–", booleans as yes/no."""
    if value is None or (not isinstance(value, list | tuple | dict) and pd.isna(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("\n", " ")


def to_markdown(df: pd.DataFrame, digits: int | dict[str, int] = 2) -> str:
    """A GitHub markdown table (missing values as "–"); `digits` per column or for all float columns."""
    if df.empty:
        return "_(no rows)_"
    cols = list(df.columns)

    def nd(c: str) -> int:
        return digits.get(c, 2) if isinstance(digits, dict) else digits

    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = (format_value(v, nd(c)).replace("|", "\\|") for c, v in zip(cols, row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return (
        "–" if v is None or (not isinstance(v, str) and pd.isna(v)) else f"{v:.4g}" if isinstance(v, float) else str(v)
    )


def trial_hover(df: pd.DataFrame) -> pd.Series:
    """Per trial: its configuration and measurements, as plotly hover HTML (computed once per report)."""
    out = []
    for r in df.itertuples(index=False):
        lines = [
            f"trial {r.trial_id} ({r.group})",
            f"preset {r.preset}, variant {r.variant}, seed {_fmt(r.seed)}, data {r.data}, epochs {_fmt(r.epochs)}",
            f"a={_fmt(r.a)} b={_fmt(r.b)} depths={r.depths} groups={_fmt(r.groups)} "
            f"grouped_layers={_fmt(r.grouped_layers)} use_se={_fmt(r.use_se)}",
            f"top1 {_fmt(r.top1)} %, form: {r.form}"
            + (" (not re-parameterizable: train-form figures)" if r.form == "train" else ""),
        ]
        if pd.notna(r.search_number):
            lines.append(f"search {r.search_study} #{_fmt(r.search_number)} ({r.search_state})")
        out.append("<br>".join(lines))
    return pd.Series(out, index=df.index, dtype=object)


def hover_text(df: pd.DataFrame, x_label: str = "x") -> list[str]:
    """Per point: the trial's hover text (column `hover` when present) and its x value."""
    base = df["hover"] if "hover" in df.columns else trial_hover(df)
    x = df["x"].map(_fmt) if "x" in df.columns else pd.Series("–", index=df.index)
    return (base + f"<br>{x_label}: " + x).tolist()


def point_label(row: Any) -> str:
    """Short label of a point: search number and widths, or preset/variant and seed."""
    if pd.notna(row.search_number):
        return f"#{int(row.search_number)} a={_fmt(row.a)} b={_fmt(row.b)}"
    return f"{row.preset}/{row.variant} s{_fmt(row.seed)}"

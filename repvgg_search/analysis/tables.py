"""Result tables: one flat row per trial, ablation tables laid out like the paper's, markdown rendering."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .reference import paper_reference, reference_row, table_variants

ID_COLUMNS = ["trial_id", "status", "group", "preset", "variant", "seed", "data", "epochs"]
METRIC_COLUMNS = ["top1", "deploy_top1", "train_top1", "loss"]
SIZE_COLUMNS = ["deploy_macs", "deploy_params", "train_macs", "train_params", "macs_input"]
SPEED_COLUMNS = ["images_per_s", "latency_ms", "latency_ms_iqr", "speed_form", "form", "converted", "max_abs_error"]
DEVICE_COLUMNS = ["device", "device_name", "threads", "batch_size", "speed_input", "dtype", "speed_setup"]
ARCH_COLUMNS = ["a", "b", "depths", "groups", "grouped_layers", "use_se"]
SEARCH_COLUMNS = ["search_study", "search_number", "search_feasible", "search_state", "search_values"]
ORIGIN_COLUMNS = ["error", "origin", "where"]
COLUMNS = [
    *ID_COLUMNS,
    *METRIC_COLUMNS,
    *SIZE_COLUMNS,
    *SPEED_COLUMNS,
    *DEVICE_COLUMNS,
    *ARCH_COLUMNS,
    *SEARCH_COLUMNS,
    *ORIGIN_COLUMNS,
]

INTEGER_COLUMNS = ["seed", "epochs", "groups", "threads", "batch_size", "search_number"]
ABLATION_TITLES = {"table6": "Table 6: branches (identity, 1x1)", "table7": "Table 7: block designs"}
ABLATION_DIGITS = {"top1 mean": 2, "top1 std": 2, "deploy GMACs": 3, "reference top1": 2}
ABLATION_STD = "sample std over seeds (ddof=1)"


def _get(d: Any, *keys: str) -> Any:
    """Nested lookup that tolerates missing keys and null sub-objects."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _dims(size: Any) -> str | None:
    return "x".join(str(s) for s in size) if isinstance(size, list | tuple) and size else None


def _join(values: Any) -> str | None:
    return "-".join(str(v) for v in values) if isinstance(values, list | tuple) else values


def speed_setup(speed: dict[str, Any] | None) -> str | None:
    """One label per measurement setup; speeds with different labels are never compared."""
    if not speed or (speed.get("images_per_s") is None and speed.get("latency_ms") is None):
        return None
    device = speed.get("device") or "unknown device"
    name = speed.get("device_name") or "unnamed"
    threads = f", {speed['threads']} threads" if device == "cpu" and speed.get("threads") else ""
    layout = ", channels_last" if speed.get("channels_last") else ""
    return (
        f"{device} ({name}{threads}) | batch {speed.get('batch_size')} | {_dims(speed.get('input_size'))} | "
        f"{speed.get('dtype')}{layout}"
    )


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    arch, sp, cx, search = rec.get("arch") or {}, rec.get("speed") or {}, rec.get("complexity") or {}, rec.get("search")
    converted = _get(rec, "conversion", "converted")
    train_form = converted is False or sp.get("form") == "train"
    return {
        "trial_id": rec.get("trial_id"),
        "status": rec.get("status"),
        "group": rec.get("group"),
        "preset": arch.get("preset") or _get(rec, "config", "model", "name"),
        "variant": arch.get("variant") or _get(rec, "config", "variant", "name"),
        "seed": rec.get("seed", _get(rec, "config", "seed")),
        "data": _get(rec, "config", "data", "name"),
        "epochs": _get(rec, "metrics", "epochs") or _get(rec, "config", "train", "epochs"),
        **{k: _get(rec, "metrics", k) for k in ("top1", "deploy_top1", "train_top1", "loss")},
        "deploy_macs": _get(cx, "deploy", "macs"),
        "deploy_params": _get(cx, "deploy", "params"),
        "train_macs": _get(cx, "train", "macs"),
        "train_params": _get(cx, "train", "params"),
        "macs_input": _dims(cx.get("input_size")),
        **{k: sp.get(k) for k in ("images_per_s", "latency_ms", "latency_ms_iqr", "device", "device_name")},
        **{k: sp.get(k) for k in ("threads", "batch_size", "dtype")},
        "speed_form": sp.get("form"),
        "form": "train" if train_form else "deploy",
        "converted": converted,
        "max_abs_error": _get(rec, "conversion", "max_abs_error"),
        "speed_input": _dims(sp.get("input_size")),
        "speed_setup": speed_setup(sp),
        **{k: arch.get(k) for k in ("a", "b", "groups", "use_se")},
        "depths": _join(arch.get("depths")),
        "grouped_layers": _join(arch.get("grouped_layers")),
        **_search_cols(search),
        "error": rec.get("error"),
        "origin": _get(rec, "_origin", "kind"),
        "where": _get(rec, "_origin", "where"),
    }


def _search_cols(search: dict[str, Any] | None) -> dict[str, Any]:
    s = search or {}
    values = s.get("values")
    return {
        "search_study": s.get("study"),
        "search_number": s.get("number"),
        "search_feasible": s.get("feasible"),
        "search_state": s.get("state"),
        "search_values": ", ".join(f"{v:.4g}" for v in values) if isinstance(values, list) else None,
    }


def metric_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial with flat columns (raw units: MACs and params are counts, top1 in percent)."""
    df = pd.DataFrame([_row(r) for r in records], columns=COLUMNS)
    numeric = ["top1", "deploy_top1", "train_top1", "loss", "deploy_macs", "deploy_params", "train_macs"]
    numeric += ["train_params", "images_per_s", "latency_ms", "latency_ms_iqr", "a", "b"]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    for col in INTEGER_COLUMNS:  # nullable integers, so that a missing value does not turn 3 into 3.0
        values = pd.to_numeric(df[col], errors="coerce")
        df[col] = values.astype("Int64") if (values.dropna() % 1 == 0).all() else values
    return df


def _seed_list(seeds: pd.Series) -> str:
    return ",".join(str(s) for s in seeds.dropna())


def _ablation_row(trials: pd.DataFrame, table: str, variant: str) -> dict[str, Any]:
    done = trials[(trials["status"] == "completed") & trials["top1"].notna()]
    ref = reference_row(table, variant)
    forms = sorted(set(done["form"].dropna()))
    return {
        "top1 mean": done["top1"].mean() if len(done) else None,
        "top1 std": done["top1"].std(ddof=1) if len(done) > 1 else None,
        "n": len(done),
        "left out": len(trials) - len(done),
        "seeds": _seed_list(done["seed"].sort_values()),
        "deploy GMACs": done["deploy_macs"].mean() / 1e9 if len(done) else None,
        "form": "/".join(forms) or None,
        "reference top1": ref["top1"],
        "reference source": ref["source"] if ref["top1"] is not None else None,
        "reference note": ref["note"],
    }


def ablation_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Tables 6 and 7: top1 mean/std/n per (preset, data, variant) beside the paper's labelled numbers.

    A preset/data pair gets a table's rows only when it has at least one trial of that table's variants;
    the returned frames may be empty. Reference numbers are ImageNet RepVGG-B0 (see `reference_caption`).
    """
    out = {}
    t6 = paper_reference()["table6"]
    plain = df[df["search_study"].isna()]  # search candidates vary widths, not the block: not an ablation
    for table in ("table6", "table7"):
        variants = table_variants(table)
        subset = plain[plain["variant"].isin(variants)]
        rows = []
        for (preset, data), part in subset.groupby(["preset", "data"], dropna=False, sort=True):
            for v in variants:
                head = {"preset": preset, "data": data, "variant": v}
                if table == "table6":
                    head |= {"identity": _tick(t6[v]["identity"]), "1x1": _tick(t6[v]["conv1x1"])}
                rows.append(head | _ablation_row(part[part["variant"] == v], table, v))
        out[table] = pd.DataFrame(rows)
    return out


def ablation_markdown(df: pd.DataFrame) -> str:
    """Tables 6 and 7 as markdown with the reference caption (for a sweep's closing summary); "" if no ablation."""
    parts = [
        f"{ABLATION_TITLES[k]}\n\n{to_markdown(t, ABLATION_DIGITS)}"
        for k, t in ablation_tables(df).items()
        if not t.empty
    ]
    return "\n\n".join([*parts, reference_caption()]) if parts else ""


def _tick(flag: bool) -> str:
    return "yes" if flag else "no"


def reference_caption() -> str:
    """What the reference columns of the ablation tables are, in one sentence."""
    ref = paper_reference()
    return (
        f"reference top1: {ref['ablation_setting']}, with each number's source label (paper-text, third-party, "
        "derived); numbers the shared reference marks unverified are not shown. Our trials ran on other data "
        f"and scale, so compare orderings, not values. top1 std: {ABLATION_STD}."
    )


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

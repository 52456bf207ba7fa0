"""Collect a sweep: `results.csv` (one row per trial) and `summary.md` (paper-style tables), from the records."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..analysis.tables import ablation_markdown, metric_table, to_markdown
from .folder import SweepFolder

RESULT_COLUMNS = [
    "trial_id", "variant", "seed", "status", "top1", "deploy_top1", "deploy_macs", "deploy_params",
    "train_macs", "train_params", "images_per_s", "latency_ms", "device", "device_name", "speed_form",
    "preset", "a", "b", "depths", "groups", "error",
]  # fmt: skip


def results_table(folder: SweepFolder) -> pd.DataFrame:
    """One row per planned trial; trials with no record yet appear with status `missing`."""
    planned = folder.planned()
    records = []
    for t in planned:
        result = folder.result(t.trial_id) or {"trial_id": t.trial_id, "status": "missing", "config": t.config}
        result.setdefault("seed", t.config.get("seed"))
        result.setdefault("tags", [t.config.get("model", {}).get("name"), t.config.get("variant", {}).get("name")])
        records.append(result)
    df = metric_table(records)
    for t, idx in zip(planned, df.index):  # trials that never ran still show their variant and preset
        if pd.isna(df.at[idx, "variant"]):
            df.at[idx, "variant"] = t.config.get("variant", {}).get("name")
        if pd.isna(df.at[idx, "preset"]):
            df.at[idx, "preset"] = t.config.get("model", {}).get("name")
    return df[[c for c in RESULT_COLUMNS if c in df.columns]]


def summary_markdown(folder: SweepFolder, df: pd.DataFrame) -> str:
    """Counts, the ablation tables grouped like the paper's Tables 6 and 7, and the failed trials' errors."""
    definition = folder.read_definition() or {}
    counts = df["status"].value_counts().to_dict()
    lines = [f"# Sweep {definition.get('name')} ({folder.root})", ""]
    lines.append(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f" (of {len(df)} trials)")
    records = [r for t in folder.planned() if (r := folder.result(t.trial_id)) and r.get("status") == "completed"]
    if records:
        tables = ablation_markdown(metric_table(records))
        speed = records[0].get("speed", {})
        lines += [
            "",
            f"Speed: {speed.get('form')} form, batch {speed.get('batch_size')}, input {speed.get('input_size')}, "
            f"{speed.get('dtype')}, {speed.get('device_name')} ({speed.get('device')}, {speed.get('threads')} threads). "
            "MACs: fvcore, 1 multiply-add = 1, at 3x224x224.",
            "",
        ]
        lines.append(tables or _grid_table(df))
    failed = df[df["status"].isin(["failed", "cancelled", "interrupted"])]
    if len(failed):
        lines += ["", "## Not completed", ""]
        lines += [f"- {r.trial_id} ({r.variant}, seed {r.seed}): {r.status}: {r.error}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n"


def _grid_table(df: pd.DataFrame) -> str:
    cols = ["trial_id", "variant", "seed", "top1", "deploy_top1", "deploy_macs", "images_per_s"]
    return to_markdown(df[df["status"] == "completed"][cols])


def write_results(folder: SweepFolder) -> dict[str, Any]:
    df = results_table(folder)
    df.to_csv(folder.root / "results.csv", index=False)
    summary = summary_markdown(folder, df)
    (folder.root / "summary.md").write_text(summary)
    print(summary)
    return {"folder": str(folder.root), **df["status"].value_counts().to_dict(), "trials": len(df)}

"""Collect a sweep from its records: `results.csv` (one row per trial, with its paired difference from the same-seed
baseline), `groups.csv` (every axis value over its seeds), `comparisons.csv` (each variant against the baseline,
paired by seed, Holm-corrected) and `summary.md` (the paper's tables with those statistics)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import files
from ..analysis.ablation import ablation_markdown, compare_variants
from ..analysis.per_image import PER_IMAGE_CAPTION, per_image_comparisons, read_correct
from ..analysis.quant import quant_markdown
from ..analysis.sequential import SequentialDesign
from ..analysis.stats import group_stats
from ..analysis.tables import metric_table, to_markdown
from ..schema import MAC_CONVENTION, SpeedFigure, Status, TrialRecord
from ..tracking import TrackingConfig, log_sweep_summary
from .folder import PlannedTrial, SweepFolder

PerImage = dict[str, Any]  # trial id -> its per-image correctness (a bool array over the validation images)
RESULT_COLUMNS = [
    "trial_id", "variant", "seed", "status", "top1", "deploy_top1", "deploy_macs", "deploy_params",
    "train_macs", "train_params", "images_per_s", "latency_ms", "device", "device_name", "speed_form",
    "preset", "a", "b", "depths", "groups", "error",
]  # fmt: skip


def results_table(
    planned: list[PlannedTrial], results: dict[str, TrialRecord | None], definition: dict[str, Any]
) -> pd.DataFrame:
    """One row per planned trial (trials with no record yet have status `planned`), its axis values as columns,
    and `paired_diff`: its top1 minus the baseline's of the same seed and other axis values."""
    rows = []
    for t in planned:
        result = results[t.trial_id]
        if result is None:
            result = TrialRecord(trial_id=t.trial_id, status=Status.PLANNED, config=t.config, seed=t.config.get("seed"))
        rows.append(result)
    df = metric_table(rows)
    for t, idx in zip(planned, df.index):  # trials that never ran still show their variant and preset
        if pd.isna(df.at[idx, "variant"]):
            df.at[idx, "variant"] = t.config.get("variant", {}).get("name")
        if pd.isna(df.at[idx, "preset"]):
            df.at[idx, "preset"] = t.config.get("model", {}).get("name")
    grid = definition.get("kind", "grid") == "grid"
    axes = [a for a in _axis_columns(planned) if a not in RESULT_COLUMNS] if grid else []  # a search's are columns
    for path in axes:
        df[path] = [t.axes.get(path) for t in planned]
    # A multi-fidelity search's runs: which rung each is, and of which candidate (a rung run is not a final result).
    fidelity = [c for c in ("rung", "candidate") if not grid and c in df.columns and df[c].notna().any()]
    df = df[[*[c for c in RESULT_COLUMNS if c in df.columns], *axes, *fidelity]]
    if grid:
        df = _with_paired_diff(df, _baseline(definition), _pair_keys(axes))
    df.attrs["axes"], df.attrs["grid"] = axes, grid
    return df


def _axis_columns(planned: list) -> list[str]:
    """The sweep's axes other than the variant and the seed (already columns of their own)."""
    seen = dict.fromkeys(k for t in planned for k in t.axes)
    return [k for k in seen if k not in ("variant", "variant.name", "seed")]


def _pair_keys(axes: list[str]) -> list[str]:
    return ["preset", "seed", *axes]


def _baseline(definition: dict[str, Any]) -> str:
    return definition.get("baseline") or "full"


def _with_paired_diff(df: pd.DataFrame, baseline: str, keys: list[str]) -> pd.DataFrame:
    done = df[(df["status"] == "completed") & df["top1"].notna()]
    base = done[done["variant"] == baseline].groupby(keys, dropna=False)["top1"].mean().rename("baseline_top1")
    df = df.join(base, on=keys) if len(base) else df.assign(baseline_top1=float("nan"))
    df["paired_diff"] = df["top1"] - df["baseline_top1"]
    return df.drop(columns="baseline_top1")


def statistics_tables(
    df: pd.DataFrame, baseline: str, design: SequentialDesign | None = None, correct: PerImage | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(groups, comparisons): each axis value over its seeds, and each variant against the baseline paired by
    seed within each combination of the other axes (Holm-corrected within it; sequential verdicts with a `design`),
    with the per-image paired test beside each (`correct`: trial id -> per-image correctness)."""
    done = df[(df["status"] == "completed") & df["top1"].notna()]
    axes = df.attrs.get("axes", [])
    groups = [group_stats(done, by).rename(columns={by: "value"}).assign(axis=by) for by in ["variant", *axes]]
    comparisons = []
    for key, part in done.groupby(["preset", *axes], dropna=False, sort=False) if len(done) else []:
        if (found := compare_variants(part, baseline, design=design)) is not None:
            found = _with_per_image(found, part, baseline, correct or {}).reset_index()
            comparisons.append(found.assign(**dict(zip(["preset", *axes], key if isinstance(key, tuple) else (key,)))))
    return (
        pd.concat(groups, ignore_index=True) if groups else pd.DataFrame(),
        pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame(),
    )


def _with_per_image(found: pd.DataFrame, part: pd.DataFrame, baseline: str, correct: PerImage) -> pd.DataFrame:
    """The per-image paired test of each comparison (columns image_*), over the seeds with per-image records."""
    by_variant: dict[str, dict[int, Any]] = {}
    for r in part.itertuples():
        if r.trial_id in correct:
            by_variant.setdefault(r.variant, {})[int(r.seed)] = correct[r.trial_id]
    if baseline not in by_variant:
        return found
    tests = per_image_comparisons(by_variant, baseline).set_index("variant")
    keep = ["seeds", "variant_only", "baseline_only", "mean_diff", "ci_low", "ci_high", "p", "p_holm", "test"]
    return found.join(tests[keep].add_prefix("image_"))


def per_image_records(folder: SweepFolder, results: dict[str, TrialRecord | None]) -> PerImage:
    """trial id -> per-image correctness on the validation set, for the completed trials that recorded it."""
    out = {}
    for tid, r in results.items():
        if r is not None and r.status is Status.COMPLETED and r.per_image is not None:
            out[tid] = read_correct(folder.trial_dir(tid) / r.per_image.file, r.per_image.images, r.per_image.order)
    return out


def design_of(definition: dict[str, Any]) -> SequentialDesign | None:
    """The sequential design a sweep folder's definition holds (None: a fixed-seed sweep)."""
    found = definition.get("sequential")
    return SequentialDesign(**found) if found else None


def summary_markdown(
    folder: SweepFolder,
    df: pd.DataFrame,
    definition: dict[str, Any],
    records: list[TrialRecord],
    comparisons: pd.DataFrame | None = None,
) -> str:
    """Counts, the ablation tables grouped like the paper's Tables 6 and 7, the per-image paired tests, the seeds
    a sequential sweep used, and the failed trials' errors; `records` are the completed trials' records."""
    counts = df["status"].value_counts().to_dict()
    lines = [f"# Sweep {definition.get('name')} ({folder.root})", ""]
    lines.append(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f" (of {len(df)} trials)")
    if records:
        table = metric_table(records)
        tables = ablation_markdown(table, _baseline(definition), design_of(definition))
        lines += ["", speed_line(records), f"MACs: {MAC_CONVENTION}, at 3x224x224.", ""]
        lines.append(tables or _grid_table(df))
        lines += _per_image_lines(comparisons) + _seeds_used_lines(df, design_of(definition))
        if quant := quant_markdown(table, _baseline(definition)):
            lines += ["", quant]
        lines += _axis_tables(df)
    failed = df[df["status"].isin(["failed", "cancelled", "interrupted"])]
    if len(failed):
        lines += ["", "## Not completed", ""]
        lines += [f"- {r.trial_id} ({r.variant}, seed {r.seed}): {r.status}: {r.error}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n"


def _per_image_lines(comparisons: pd.DataFrame | None) -> list[str]:
    """The per-image paired test of every comparison (from the trials' val_correct.bits), with its caption."""
    if comparisons is None or comparisons.empty or "image_p" not in comparisons:
        return []
    cols = {"variant": "variant", "image_seeds": "seeds", "image_variant_only": "only variant right",
            "image_baseline_only": "only baseline right", "image_mean_diff": "Δ (points)", "image_ci_low": "CI low",
            "image_ci_high": "CI high", "image_p_holm": "p Holm", "image_test": "test"}  # fmt: skip
    table = comparisons[[c for c in cols if c in comparisons]].rename(columns=cols)
    return ["", "Per-image paired test (pooled over the seeds)", "", to_markdown(table, 3), "", PER_IMAGE_CAPTION]


def _seeds_used_lines(df: pd.DataFrame, design: SequentialDesign | None) -> list[str]:
    """What a sequential sweep spent: trials trained against the fixed design with the budget's seeds."""
    if design is None:
        return []
    trained = int(df["status"].isin(["completed", "failed", "diverged"]).sum())
    fixed = len(df)  # every seed the budget allows is planned up front: the fixed design trains them all
    return ["", f"Seeds used: {trained} trials trained of the {fixed} a fixed design with {design.looks()[-1]} seeds "
                f"per variant would train ({trained / fixed:.0%})."]  # fmt: skip


def speed_line(records: list[TrialRecord]) -> str:
    """How the sweep's speed figures were measured, and how many distinct figures stand behind its trials."""
    speeds = [r.speed or SpeedFigure() for r in records]
    sp = speeds[0]
    tf32 = "" if sp.tf32 is None else f", TF32 {'on' if sp.tf32 else 'off'}"
    layout = "channels_last" if sp.channels_last else "NCHW"
    keys = {s.key for s in speeds if s.key}
    unreliable = sum(1 for s in speeds if s.reliable is False)
    return (
        f"Speed: protocol {sp.protocol}, batch {sp.batch_size}, input {sp.input_size}, "
        f"{sp.dtype}{tf32}, {layout}, {sp.device_name} ({sp.device}, {sp.threads} "
        f"threads); median of {len(sp.rounds_images_per_s or [])} rounds; {len(keys)} distinct deploy "
        f"architecture(s) measured once each for {len(speeds)} trials"
        + (f"; {unreliable} unreliable" if unreliable else "")
        + "."
    )


def _mirror(
    folder: SweepFolder, planned: list[PlannedTrial], definition: dict[str, Any], tables: dict[str, pd.DataFrame]
) -> None:
    """The sweep's summary run in wandb (tables and verdicts); offline runs: how to upload them."""
    if not planned:
        return
    tracking = TrackingConfig(**(planned[0].config.get("tracking") or {}))
    comparisons = tables.get("comparisons")
    verdicts = (
        {f"verdict/{r.variant}": r.verdict for r in comparisons.itertuples()}
        if comparisons is not None and len(comparisons)
        else {}
    )
    run_dir = log_sweep_summary(tracking, name=str(definition.get("name")), folder=folder.root, config=definition,
                                tables=tables, summary={"trials": len(tables["results"]), **verdicts})  # fmt: skip
    if run_dir and tracking.mode == "offline":
        print(
            f"wandb (offline): upload this sweep's runs with `wandb sync {folder.root.resolve()}/trials/*/wandb/offline-run-* {run_dir}`"
        )


def _axis_tables(df: pd.DataFrame) -> list[str]:
    """Every axis other than variant and seed, over its values (n, mean, 95% t interval of top1)."""
    done = df[(df["status"] == "completed") & df["top1"].notna()]
    out = []
    for axis in df.attrs.get("axes", []):
        table = group_stats(done, axis).drop(columns="values")
        out += ["", f"By {axis} (top1 over the trials of each value; 95% t interval)", "", to_markdown(table)]
    return out


def _grid_table(df: pd.DataFrame) -> str:
    cols = ["trial_id", "variant", "seed", "top1", "deploy_top1", "deploy_macs", "images_per_s"]
    return to_markdown(df[df["status"] == "completed"][cols])


def write_results(folder: SweepFolder) -> dict[str, Any]:
    """results.csv, groups.csv, comparisons.csv and summary.md; prints the summary; returns the counts. The
    folder's definition, plan and records are read once."""
    definition, planned = folder.read_definition() or {}, folder.planned()
    results = {t.trial_id: folder.result(t.trial_id) for t in planned}
    df = results_table(planned, results, definition)
    files.write_csv(folder.root / "results.csv", df)
    tables = (df, _baseline(definition), design_of(definition), per_image_records(folder, results))
    groups, comparisons = statistics_tables(*tables) if df.attrs["grid"] else (None, None)
    if df.attrs["grid"]:  # a width search's candidates are compared by their Pareto set and EDF instead
        files.write_csv(folder.root / "groups.csv", groups)
        files.write_csv(folder.root / "comparisons.csv", comparisons)
    completed = [r for r in results.values() if r is not None and r.status is Status.COMPLETED]
    summary = summary_markdown(folder, df, definition, completed, comparisons)
    files.write_text(folder.root / "summary.md", summary)
    print(summary)
    _mirror(folder, planned, definition, {"results": df, "groups": groups, "comparisons": comparisons})
    return {"folder": str(folder.root), **df["status"].value_counts().to_dict(), "trials": len(df)}

"""Collecting a search: results.csv, summary.md, pareto.csv; status and cancel from the records."""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

import pandas as pd

from .. import files
from ..analysis.pareto import pareto_mask, search_candidate
from ..analysis.tables import to_markdown
from ..jobs.launchers import cancel_recorded
from ..schema import COLUMNS, OBJECTIVES, ArchBlock, Search, Status, TrialRecord, lookup, read_record
from ..sweep.collect import write_results
from ..sweep.folder import SWEEP_JSON, PlannedTrial, SweepFolder
from .plan import SEARCH_JSON, WORKERS_JSONL


def set_trial_ids(folder: SweepFolder, trial_ids: list[str]) -> None:
    """The search's candidates so far become the sweep's trial list (status, collect and reports read it)."""
    definition = folder.read_definition() or {}
    definition["trial_ids"] = trial_ids  # the definition hash stays: it identifies the search, not its trials
    files.write_json(folder.root / SWEEP_JSON, definition)


def searched_trials(folder: SweepFolder) -> list[tuple[str, TrialRecord]]:
    """(trial_id, result) of every candidate that has a record, in the order the study numbered them."""
    out = []
    for d in sorted(p for p in folder.trials_dir.iterdir() if p.is_dir()) if folder.trials_dir.exists() else []:
        result = read_record(d / files.RESULT)
        if result is not None:
            out.append((d.name, result))
    number = lambda r: lookup(r[1], ("search", "number"))  # noqa: E731
    return sorted(out, key=lambda r: (number(r) is None, number(r) or 0))


def pareto_table(
    folder: SweepFolder, objectives: list[str], trials: list[tuple[str, TrialRecord]] | None = None
) -> pd.DataFrame:
    """The trained, feasible trials no other one beats on every objective, best first on the first objective
    (`trials`: `searched_trials(folder)`, when the caller has read them already)."""
    rows = []
    for tid, r in searched_trials(folder) if trials is None else trials:
        if search_candidate(r):  # the report's rule too: its Pareto set is this one
            rows.append(_pareto_row(tid, r, objectives))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    maximize = [OBJECTIVES[o][0] == "maximize" for o in objectives]
    df = df[pareto_mask(df[objectives].to_numpy(dtype=float), maximize)]
    return df.sort_values(objectives[0], ascending=not maximize[0]).reset_index(drop=True)


def _pareto_row(tid: str, r: TrialRecord, objectives: list[str]) -> dict[str, Any]:
    arch = r.arch or ArchBlock()
    row = {
        "number": r.search.number,
        "trial_id": tid,
        "a": arch.a,
        "b": arch.b,
        "depths": "-".join(map(str, arch.depths or [])),
        "groups": arch.groups,
        "top1": lookup(r, COLUMNS["top1"]),
        "deploy_gmacs": lookup(r, COLUMNS["deploy_macs"]) / 1e9,
        "deploy_mparams": lookup(r, COLUMNS["deploy_params"]) / 1e6,
        "images_per_s": lookup(r, COLUMNS["images_per_s"]),
        "latency_ms": lookup(r, COLUMNS["latency_ms"]),
    }
    row.update(dict(zip(objectives, r.search.values or [])))
    return row


def collect_search(folder: SweepFolder) -> dict[str, Any]:
    """results.csv and summary.md (every candidate with a record), pareto.csv; prints the Pareto set."""
    plan = files.read_json(folder.root / SEARCH_JSON) or {}
    objectives = (plan.get("settings") or {}).get("objectives") or ["top1", "images_per_s"]
    trials = searched_trials(folder)
    set_trial_ids(folder, [tid for tid, _ in trials])
    folder.materialize([PlannedTrial(tid, r.config or {}, lookup(r, ("search", "params")) or {}) for tid, r in trials])
    summary = write_results(folder) if trials else {"folder": str(folder.root), "trials": 0}
    front = pareto_table(folder, objectives, trials)
    files.write_csv(folder.root / "pareto.csv", front)
    print(f"Pareto set ({', '.join(f'{OBJECTIVES[o][0]} {o}' for o in objectives)}; feasible trained trials):")
    print(to_markdown(front, {"deploy_gmacs": 3, "deploy_mparams": 2, "a": 3, "b": 3}) if len(front) else "_(none)_")
    kinds = Counter(lookup(r, ("search", "kind")) for _, r in trials)
    return {
        **summary,
        "pareto": len(front),
        "trained": kinds[Status.COMPLETED] + kinds[Status.PRUNED],
        "infeasible": kinds[Status.INFEASIBLE],
        "pareto_csv": str(folder.root / "pareto.csv"),
    }


def search_action(folder: SweepFolder, action: str) -> dict[str, Any]:
    """sweep.action=status | collect | cancel on a search folder (from its records; no storage access needed)."""
    if action == "collect":
        return collect_search(folder)
    if action == "cancel":
        return _cancel(folder)
    trials = searched_trials(folder)
    kinds = Counter((lookup(r, ("search", "kind")) or r.status).value for _, r in trials)
    driver = folder.live_driver()
    print(
        f"search {folder.root}: "
        + "  ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        + (f"  (driver pid {driver})" if driver else "")
    )
    for tid, r in trials:
        top1, search = lookup(r, COLUMNS["top1"]), r.search or Search()
        pairs = zip(search.objectives or [], search.values or [])
        values = ", ".join(f"{o} {v:.4g}" for o, v in pairs if o != "top1")
        shown = f"top1 {top1:6.2f}" if top1 is not None else "top1      -"
        number = search.number if search.number is not None else "-"
        print(f"  {tid}  #{number:<4} {r.status.value:<11} {shown}  {values}")
    done = [(r.metrics.top1, tid) for tid, r in trials if lookup(r, COLUMNS["top1"]) is not None
            and r.status is Status.COMPLETED]  # fmt: skip
    if done:
        print(f"best top1 so far: {max(done)[1]} {max(done)[0]:.2f}% (the Pareto set: sweep.action=collect)")
    return {"folder": str(folder.root), **kinds}


def _cancel(folder: SweepFolder) -> dict[str, Any]:
    """Stop the search: its driver when provably it (its handler cancels the worker jobs), the scheduler jobs
    recorded for its workers; never a process named only by a pid in a file."""
    driver = folder.proven_driver()
    if driver is not None:
        os.kill(driver, signal.SIGTERM)
    last = {row["worker"]: row for row in files.read_jsonl(folder.root / WORKERS_JSONL)}
    for row in last.values():
        cancel_recorded(row["launcher"], folder.jobs_dir, row["job_id"])
    print(f"cancelled the workers of {folder.root}")
    return {"folder": str(folder.root), "cancelled": len(last)}

"""Load trial records from a sweep folder, wandb offline runs or a wandb project; merge, check, filter."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..schema import READABLE_VERSIONS, RecordError, Status, TrialRecord, parse_record
from .wandb_source import SourceError, offline_run_id, read_offline_runs, read_project

__all__ = ["LoadResult", "SourceError", "load_records", "load_sources"]

SUMMARY_RUN = re.compile(r"-summary-[0-9a-f]{8}$")  # run ids of tracking.log_sweep_summary
# Lower rank wins when one trial id arrives from several places: the local record is the original.
_ORIGIN_RANK = {"result.json": 0, "wandb offline": 1, "wandb online": 2}
SOURCE_HELP = "a sweep folder, a trial folder, a folder of wandb offline runs, or wandb:ENTITY/PROJECT"


@dataclass
class LoadResult:
    """Records that passed the checks, what was left out and why, and where they came from."""

    records: list[TrialRecord]
    skipped: list[tuple[str, str]]
    sources: list[str]
    notes: list[str] = field(default_factory=list)
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    filters: dict[str, Any] = field(default_factory=dict)
    filtered_out: int = 0


def load_records(
    source: str | Path, *, group: str | None = None, tags: list[str] | None = None, state: str | None = None
) -> LoadResult:
    """All usable trial records of `source`, one per trial id; raise SourceError when nothing can be read."""
    try:
        status = Status.parse(state) if state else None
    except BadInputError as e:
        raise SourceError(str(e)) from None
    text = str(source)
    if text.startswith("wandb:"):
        raw = read_project(text[len("wandb:") :], group=group, tags=tags, state=status.value if status else None)
        result = LoadResult(records=raw, skipped=[], sources=[text])
        if not raw:
            raise SourceError(f"{text}: no runs matched (filters: {_filter_text(group, tags, status)})")
    else:
        result = _load_local(Path(text))
    result.records, schema_skips = _check_schema(result.records)
    result.skipped.extend(schema_skips)
    result.records, dup_notes = _dedupe(result.records)
    result.notes.extend(dup_notes)
    result.filters = {k: v for k, v in {"group": group, "tags": tags, "state": status and status.value}.items() if v}
    kept = [r for r in result.records if _matches(r, group, tags, status)]
    result.filtered_out = len(result.records) - len(kept)
    result.records = kept
    return result


def load_sources(sources: list[str | Path], **filters) -> LoadResult:
    """The records of several sources in one result, each record tagged with its source's label (`_source`):
    two searches (or a search and an ablation) compared in one report. A trial id is de-duplicated within a
    source, not across sources."""
    labels = _labels(sources)
    merged = LoadResult(records=[], skipped=[], sources=[])
    for source, label in zip(sources, labels):
        one = load_records(source, **filters)
        for r in one.records:
            r.origin = {**(r.origin or {}), "source": label}
        merged.records += one.records
        merged.skipped += one.skipped
        merged.sources += one.sources
        merged.notes += one.notes
        merged.sweeps += one.sweeps
        merged.filtered_out += one.filtered_out
        merged.filters = one.filters
    return merged


def _labels(sources: list[str | Path]) -> list[str]:
    """A short label per source (its folder name, or the wandb path), made unique."""
    names = [str(s) if str(s).startswith("wandb:") else Path(s).name or str(s) for s in sources]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _filter_text(group: str | None, tags: list[str] | None, state: str | None) -> str:
    parts = [
        f"group={group}" if group else "",
        f"tags={','.join(tags)}" if tags else "",
        f"state={state}" if state else "",
    ]
    return " ".join(p for p in parts if p) or "none"


def _load_local(root: Path) -> LoadResult:
    if not root.exists():
        raise SourceError(f"source not found: {root} (expected {SOURCE_HELP})")
    results, run_dirs, sweep_files = _discover(root)
    if not results and not run_dirs:
        raise SourceError(f"no result.json files or wandb offline runs under {root} (expected {SOURCE_HELP})")
    records, skipped = _read_results(results)
    local_ids = {r.get("trial_id") for r in records}  # raw JSON objects here: parsed after merging
    to_read, notes = _select_offline_runs(run_dirs, local_ids)
    wb_records, wb_skipped = read_offline_runs(to_read)
    sweeps = [s for s in (_read_json(p)[0] for p in sweep_files) if isinstance(s, dict)]
    notes += [
        f"sweep {s.get('name')!r} has sweep.json schema_version {s.get('schema_version')}; this analysis reads "
        f"{', '.join(map(str, READABLE_VERSIONS))} (its trials are checked one by one)"
        for s in sweeps
        if s.get("schema_version") not in READABLE_VERSIONS
    ]
    return LoadResult(records + wb_records, skipped + wb_skipped, [str(root)], notes, sweeps)


def _discover(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    if root.is_file():
        return ([root], [], []) if root.suffix == ".json" else ([], [], [])
    if offline_run_id(root):
        return [], [root], []
    results = sorted(p for p in root.rglob("result.json") if "wandb" not in p.parts[len(root.parts) :])
    runs = sorted(p for p in root.rglob("offline-run-*") if p.is_dir() and offline_run_id(p))
    return results, runs, sorted(root.rglob("sweep.json"))


def _read_json(path: Path) -> tuple[Any, str]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable JSON: {e}"


def _read_results(paths: list[Path]) -> tuple[list[dict], list[tuple[str, str]]]:
    records, skipped = [], []
    for p in paths:
        rec, why = _read_json(p)
        if not isinstance(rec, dict):
            skipped.append((str(p), why or "not a JSON object"))
            continue
        rec["_origin"] = {"kind": "result.json", "where": str(p)}
        records.append(rec)
    return records, skipped


def _select_offline_runs(run_dirs: list[Path], local_ids: set) -> tuple[list[Path], list[str]]:
    """Offline runs worth reading: the newest folder per run id, only for trials without a local record."""
    newest: dict[str, Path] = {}
    for d in run_dirs:  # sorted by name, and names start with the run's start time
        newest[offline_run_id(d)] = d
    summaries = [i for i in newest if SUMMARY_RUN.search(i)]  # a sweep's tables, not a trial
    for i in summaries:
        del newest[i]
    covered = sorted(i for i in newest if i in local_ids)
    notes = [f"{len(summaries)} sweep summary run(s) not read: they hold tables, not trials"] if summaries else []
    if covered:
        notes.append(
            f"{len(covered)} wandb offline run(s) not read: their trials have a local result.json, "
            "which is preferred (the wandb run mirrors it)"
        )
    older = sum(1 for d in run_dirs if not SUMMARY_RUN.search(offline_run_id(d))) - len(newest)
    if older:
        notes.append(f"{older} older offline run folder(s) of resumed trials ignored")
    return [d for i, d in newest.items() if i not in local_ids], notes


def _check_schema(records: list[dict]) -> tuple[list[TrialRecord], list[tuple[str, str]]]:
    """Each raw record parsed against the schema (older versions upgraded); the others skipped with the reason."""
    ok, skipped = [], []
    for r in records:
        origin = r.pop("_origin", {})
        where = origin.get("where", "?")
        if r.get("schema_version") is None:
            state = origin.get("wandb_state")
            suffix = f" (wandb run state: {state})" if state else ""
            skipped.append((where, "no schema_version: not a repvgg-search trial record" + suffix))
            continue
        if r.get("schema_version") not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            skipped.append((where, f"schema_version {r.get('schema_version')}: this analysis reads {readable}"))
            continue
        if not r.get("trial_id"):
            skipped.append((where, "no trial_id"))
            continue
        try:  # a wandb run's summary holds keys of its own (its epoch metrics): only record fields are read
            typed = parse_record(r, where=where, extra="ignore" if origin.get("kind") != "result.json" else "forbid")
        except RecordError as e:
            skipped.append((where, f"does not fit the record schema: {e}"))
            continue
        typed.origin = origin
        ok.append(typed)
    return ok, skipped


def _dedupe(records: list[TrialRecord]) -> tuple[list[TrialRecord], list[str]]:
    """One record per trial id: local before wandb, completed before anything else, then first found."""
    by_id: dict[str, list[TrialRecord]] = {}
    for r in records:
        by_id.setdefault(r.trial_id, []).append(r)
    kept, dropped = [], Counter()
    for copies in by_id.values():
        copies.sort(key=lambda r: (_ORIGIN_RANK.get(r.origin["kind"], 9), r.status is not Status.COMPLETED))
        kept.append(copies[0])
        for c in copies[1:]:
            dropped[(c.origin["kind"], copies[0].origin["kind"])] += 1
    notes = [
        f"{n} duplicate record(s) from {lost} dropped in favour of the copy from {won}"
        for (lost, won), n in sorted(dropped.items())
    ]
    return kept, notes


def _matches(r: TrialRecord, group: str | None, tags: list[str] | None, status: Status | None) -> bool:
    if group and r.group != group:
        return False
    if tags and not set(tags) <= set(r.tags or []):
        return False
    return not (status and r.status is not status)

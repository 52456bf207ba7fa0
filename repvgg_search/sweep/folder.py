"""A sweep folder on disk: its definition, the materialized trial configs, job submissions, trial states."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import files
from ..errors import BadInputError
from ..jobs.pool import JobLog
from ..locks import FileLock, LockBusy
from ..schema import SCHEMA_VERSION, Status, TrialRecord, read_record, write_record
from ..trial.folder import trains_now

SWEEP_JSON = "sweep.json"
JOBS = "jobs.jsonl"
PLAN = "plan.json"  # trial id -> the axis values (or search parameters) that made it
DRIVER_LOCK = "driver.lock"  # held by the folder's driver for as long as it runs


class SweepFolderError(BadInputError):
    """The sweep folder holds another sweep definition (its results are kept untouched)."""


@dataclass
class PlannedTrial:
    """One trial of a sweep: its id, its resolved config, and the axis values that made it."""

    trial_id: str
    config: dict[str, Any]
    axes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepFolder:
    """The folder of one sweep: `sweep.json`, `trials/<trial_id>/`, `jobs.jsonl`, `results.csv`, `summary.md`."""

    root: Path
    _driver: FileLock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._driver = FileLock(self.root / DRIVER_LOCK)

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials_dir / trial_id

    def read_definition(self) -> dict[str, Any] | None:
        return files.read_json(self.root / SWEEP_JSON)

    def claim(
        self, name: str, kind: str, trial_ids: list[str], extra: dict[str, Any] | None = None, identity: Any = None
    ) -> bool:
        """Create the folder for this definition, or accept it when it already holds the same definition (its
        trials, and `identity`: what else decides its results, e.g. a sequential design).

        Returns True when the folder already existed (the sweep resumes). Raises SweepFolderError, touching
        nothing, when it holds a different definition.
        """
        identity = None if identity is None else json.loads(json.dumps(identity, default=str))  # as stored
        digest = definition_hash(trial_ids, identity)
        existing = self.read_definition()
        if existing is not None:
            drift = definition_drift(existing, name, kind, trial_ids, identity)
            if drift:
                raise SweepFolderError(
                    f"sweep folder {self.root} holds another definition of sweep {existing.get('name')!r} "
                    f"({'; '.join(drift)}); its results are kept untouched. Rerun with the same settings to resume "
                    f"it, or use sweep.dir={self.root.parent / (self.root.name + '-' + digest[:8])} for this definition"
                )
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        definition = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "kind": kind,
            "definition_hash": digest,
            "trial_ids": trial_ids,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({} if identity is None else {"identity": identity}),
            **(extra or {}),
        }
        files.write_json(self.root / SWEEP_JSON, definition)
        return False

    def materialize(self, trials: list[PlannedTrial]) -> None:
        """Write every trial's config into its folder, and the axis values into `plan.json`, before launching."""
        for t in trials:
            files.write_config(self.trial_dir(t.trial_id), t.config)
        plan = files.read_json(self.root / PLAN) or {}
        plan.update({t.trial_id: t.axes for t in trials})
        files.write_json(self.root / PLAN, plan)

    def planned(self) -> list[PlannedTrial]:
        """The trials as materialized on disk (for status, collect and cancel on an existing sweep)."""
        definition = self.read_definition() or {}
        plan = files.read_json(self.root / PLAN) or {}
        out = []
        for tid in definition.get("trial_ids", []):
            out.append(PlannedTrial(tid, files.read_config(self.trial_dir(tid)), plan.get(tid, {})))
        return out

    def result(self, trial_id: str) -> TrialRecord | None:
        return read_record(self.trial_dir(trial_id) / files.RESULT)

    def status(self, trial_id: str) -> Status:
        """The trial's recorded status (completed, failed, interrupted, cancelled, running, ...), `planned` without
        a record, `unreadable` when its result.json is torn or edited (the trial must run, or be looked at, again)."""
        try:
            result = self.result(trial_id)
        except ValueError:
            return Status.UNREADABLE
        return result.status if result is not None else Status.PLANNED

    def stopped(self, trial_id: str, status: Status | None = None) -> bool:
        """Whether the trial's record says `running` (`status`: its status, already read) but no process holds its
        lock: its process died."""
        status = self.status(trial_id) if status is None else status
        return status is Status.RUNNING and not trains_now(self.trial_dir(trial_id))

    @property
    def speed_dir(self) -> Path:
        """The sweep's speed figures, one per (deploy architecture, device, protocol), shared by its trials."""
        return self.root.resolve() / "speed"

    @property
    def jobs_dir(self) -> Path:
        """Where submitit writes the jobs' files (pickles, logs)."""
        return self.root / "jobs"

    @property
    def job_log(self) -> JobLog:
        """Every submission of every trial (jobs.jsonl)."""
        return JobLog(self.root / JOBS, "trial_id")

    def submissions(self) -> dict[str, list[dict[str, Any]]]:
        """Every submission of every trial, oldest first."""
        return self.job_log.by_key()

    def mark(self, trial_id: str, status: Status, error: str) -> None:
        """Record a terminal status the trial could not record itself (a killed or cancelled job).

        A completed result is never overwritten.
        """
        path = self.trial_dir(trial_id) / files.RESULT
        result = read_record(path) or TrialRecord(trial_id=trial_id, status=status)
        if result.status is Status.COMPLETED:
            return
        result.status, result.error = Status.parse(status), error
        write_record(path, result)

    # -- the driver: one per folder, by lock ---------------------------------------------------------------------
    def acquire_driver(self) -> None:
        """Become the folder's driver (held until release or death); refuse while another live driver is."""
        try:
            self._driver.acquire(wait=False)
        except LockBusy as busy:
            who = f"pid {busy.holder['pid']} on {busy.holder['host']}" if busy.holder else "another process"
            raise SweepFolderError(
                f"another driver ({who}) is working on {self.root}; sweep.action=status shows it, "
                "sweep.action=cancel stops it"
            ) from None

    def release_driver(self) -> None:
        self._driver.release()

    def live_driver(self) -> int | None:
        """The pid a live driver wrote (for messages), if one holds the folder; None when no driver runs."""
        holder = FileLock(self.root / DRIVER_LOCK).holder()
        return holder["pid"] if holder else None

    def proven_driver(self) -> int | None:
        """The driver's pid when provably it: it holds the folder's lock and has the lock file open (same host)."""
        return FileLock(self.root / DRIVER_LOCK).proven_holder()


def definition_hash(trial_ids: list[str], identity: Any = None) -> str:
    """The identity of a sweep definition: the set of its trials, and `identity` when given (launcher settings do
    not change it)."""
    content = sorted(trial_ids) if identity is None else {"trials": sorted(trial_ids), "identity": identity}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def definition_drift(
    existing: dict[str, Any], name: str, kind: str, trial_ids: list[str], identity: Any = None
) -> list[str]:
    """How a folder's stored `sweep.json` differs from this definition (empty: the same). A grid's stored trial ids
    are compared themselves, not only the stored hash, so that an edited `sweep.json` is caught too (a search's
    definition, `search_definition`, is compared by search.driver.claim_search_folder)."""
    drift = [
        f"{key} {there!r} there, {here!r} here"
        for key, there, here in (("name", existing.get("name"), name), ("kind", existing.get("kind"), kind))
        if there != here
    ]
    if existing.get("identity") != identity:  # e.g. another sequential design: its verdicts would differ
        drift.append(f"its design {existing.get('identity')!r} there, {identity!r} here")
    if kind == "search":  # a search's trial_ids list the trials it has so far; search_definition is its identity
        return drift
    stored = existing.get("trial_ids")
    if not isinstance(stored, list) or not all(isinstance(t, str) for t in stored):
        return [*drift, f"its trial_ids={stored!r} is not a list of trial ids"]
    if existing.get("definition_hash") != definition_hash(stored, existing.get("identity")):
        drift.append("its trial_ids no longer give its definition_hash: sweep.json was edited")
    gone, new = sorted(set(stored) - set(trial_ids)), sorted(set(trial_ids) - set(stored))
    if gone or new:
        common = len(set(stored) & set(trial_ids))
        drift.append(
            f"{len(stored)} trials there, {len(trial_ids)} here, {common} in common; only there: "
            f"{_few(gone)}; only here: {_few(new)}"
        )
    return drift


def _few(ids: list[str], shown: int = 3) -> str:
    return (", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")) or "none"

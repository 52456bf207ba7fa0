"""The study's storage: an Optuna journal file with heartbeats, or an RDB URL; checked before any worker."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from .settings import SearchError, SearchSettings

_log = logging.getLogger(__name__)
HEARTBEAT_ATTR = "repvgg:heartbeat"  # journal storage: unix time of a running trial's last heartbeat


def is_rdb_url(storage: str) -> bool:
    return "://" in storage


def mask_url(storage: str) -> str:
    if not is_rdb_url(storage):
        return storage
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: show its scheme only
        return storage.split("://")[0] + "://..."


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats (it has none of its own): a heartbeat is a trial system attribute,
    and a RUNNING trial whose last one is older than `grace_period` is stale, as with RDBStorage."""

    def __init__(self, path: str, heartbeat_interval: int, grace_period: int, callback: Callable | None = None) -> None:
        super().__init__(JournalFileBackend(path))
        self._heartbeat_interval, self._grace_period, self._stale_callback = heartbeat_interval, grace_period, callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if now - _last_beat(t) > self._grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable | None:
        return self._stale_callback


def _last_beat(t: FrozenTrial) -> float:
    # A retried trial inherits its original's system attributes: its own start time counts too.
    started = t.datetime_start.timestamp() if t.datetime_start else 0.0
    return max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)


def make_storage(storage: str, s: SearchSettings) -> optuna.storages.BaseStorage:
    """The study's storage (a journal file's path or an RDB URL), with heartbeats and retries of stale trials."""
    with quiet():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=s.max_retry)
        if not is_rdb_url(storage):
            Path(storage).parent.mkdir(parents=True, exist_ok=True)
            repair_journal(Path(storage))
            return HeartbeatJournalStorage(storage, s.heartbeat_interval, s.grace_period, retry)
        connect = {"connect_args": {"connect_timeout": 10}} if storage.startswith("postgresql") else {}
        return RDBStorage(
            storage,
            engine_kwargs=connect,
            heartbeat_interval=s.heartbeat_interval,
            grace_period=s.grace_period,
            heartbeat_stale_trial_callback=retry,
        )


def check_storage(storage: str, s: SearchSettings) -> None:
    """Open the storage once (an RDB: connect, create the tables), so that a bad URL fails before any worker."""
    if not is_rdb_url(storage):
        _check_writable(Path(storage).parent)
        repair_journal(Path(storage))
        return
    if storage.startswith("sqlite"):
        _log.warning("search.storage is SQLite: not recommended for parallel workers (use PostgreSQL or the journal)")
    try:
        opened = make_storage(storage, s)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"search.storage={mask_url(storage)} cannot be used: {first}") from None
    opened.engine.dispose()


def repair_journal(path: Path) -> None:
    """Drop a torn last record of an Optuna journal file, or refuse a journal torn anywhere else.

    Optuna's JournalFileBackend.read_logs skips a last line that lacks its newline or is not JSON (a write cut
    short by a kill or a full disk), but its append_logs then writes the next record onto that line, and from then
    on every read raises JSONDecodeError. So the torn tail is cut off here, before Optuna opens the file: exactly
    the bytes Optuna never read, so the study it sees is unchanged. A bad line with records after it is what Optuna
    itself refuses to read: refused in one line naming the file and the fix. Runs under Optuna's own journal lock
    (JournalFileSymlinkLock, the backend's default), so no writer is mid-append meanwhile.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()  # a journal is small: a few hundred bytes a record
        lines = data.splitlines(keepends=True)
        offset = 0
        for number, line in enumerate(lines, start=1):
            if not _whole_record(line):
                if number < len(lines):
                    raise SearchError(
                        f"{path}: record {number} (at byte {offset}) is torn and {len(lines) - number} record(s) "
                        f"follow it, so Optuna cannot read the study; restore the file from a copy, or keep the "
                        f"records before it with `truncate -s {offset} {path}`"
                    )
                os.truncate(path, offset)
                _log.warning(
                    "%s: dropped a torn last record (%d bytes at byte %d, a write cut short); the study continues "
                    "from the %d whole records before it",
                    path, len(line), offset, number - 1,
                )  # fmt: skip
            offset += len(line)
    finally:
        lock.release()


def _whole_record(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return True


def _check_writable(folder: Path) -> None:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise SearchError(f"search.storage: cannot write the journal file under {folder} ({existing} is read-only)")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Heartbeats and retries are 'experimental' in optuna; they are what this design relies on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # ask/tell workers beat themselves (see `heartbeat`), which this warning does not know.
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        yield

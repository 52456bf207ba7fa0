"""The study's storage: an Optuna journal file with heartbeats, or an RDB URL; checked before any worker."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
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
        return
    if storage.startswith("sqlite"):
        _log.warning("search.storage is SQLite: not recommended for parallel workers (use PostgreSQL or the journal)")
    try:
        opened = make_storage(storage, s)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"search.storage={mask_url(storage)} cannot be used: {first}") from None
    opened.engine.dispose()


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

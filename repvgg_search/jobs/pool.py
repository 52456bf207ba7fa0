"""The one job loop: submit through a launcher, throttle, poll with bounded waits, resubmit, cancel, time out."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

from .. import files
from .launchers import Launcher

_log = logging.getLogger(__name__)

# Job states (submitit / sacct) in which a job may still produce a result.
ACTIVE_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "CONFIGURING", "COMPLETING",
    "RESIZING", "PREEMPTED", "UNKNOWN", "READY", "SIGNALING", "STAGE_OUT",
}  # fmt: skip


def job_state(job: Any) -> str:
    """The job's state in SLURM's words (COMPLETED, FAILED, CANCELLED, RUNNING, ...); UNKNOWN when unreadable."""
    try:
        state = job.state
    except Exception:  # sacct hiccups: treated as unknown and read again at the next poll
        return "UNKNOWN"
    state = str(state).upper()
    if state in ("FINISHED", "DONE"):  # a local or debug job's end: its result says whether its function raised
        return "FAILED" if _raised(job) else "COMPLETED"
    if state.startswith("NO PROCESS"):
        ended = getattr(job, "paths", None) and job.paths.result_pickle.exists()
        return "FAILED" if not ended or _raised(job) else "COMPLETED"
    return state.split()[0] if state else "UNKNOWN"


def _raised(job: Any) -> bool:
    """Whether a finished job's function raised (submitit's local jobs end "FINISHED" either way; SLURM says FAILED
    itself). A SIGTERM-ed search worker raises, and must read as failed to be restarted."""
    try:
        return job.exception() is not None
    except Exception:  # no readable result: it did not end by returning
        return True


def job_log(job: Any) -> str:
    """Where the job's stderr went."""
    try:
        return str(job.paths.stderr)
    except Exception:
        return "n/a"


class JobLog:
    """The submissions of a sweep, one JSON line each: which key (trial or worker) ran as which job."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = Path(path), key

    def append(self, key: Hashable, job_id: str, launcher: str, attempt: int) -> None:
        row = {self.key: key, "job_id": job_id, "launcher": launcher, "attempt": attempt, "time": time.time()}
        files.append_jsonl(self.path, row)

    def rows(self) -> list[dict[str, Any]]:
        return files.read_jsonl(self.path)

    def by_key(self) -> dict[Any, list[dict[str, Any]]]:
        """Every submission of every key, oldest first."""
        out: dict[Any, list[dict[str, Any]]] = {}
        for row in self.rows():
            out.setdefault(row[self.key], []).append(row)
        return out


Ended = Callable[[Hashable, Any, str], bool]  # (key, job, state) -> run the key again?


Make = Callable[[list[Hashable]], Callable[[], Any]]  # the keys one job runs -> the job's callable


class JobPool:
    """Runs keyed work through a launcher: `launcher.per_job` keys per job (trials side by side in one task), at
    most `launcher.max_parallel` jobs at once unless its scheduler queues them, debug jobs inline, every wait
    bounded by `max_wait_h`. A key whose `ended` hook asks for a rerun is resubmitted while its attempts (counted
    over driver runs through `attempts`) stay within `retries`."""

    def __init__(
        self,
        launcher: Launcher,
        folder: Path,
        log: JobLog,
        *,
        poll_s: float,
        max_wait_h: float,
        retries: int,
        attempts: dict[Hashable, int] | None = None,
        per_job: int | None = None,
    ) -> None:
        self.launcher, self.folder, self.log = launcher, Path(folder), log
        self.poll_s, self.max_wait_h, self.retries = poll_s, max_wait_h, retries
        self.per_job = per_job or launcher.per_job
        self.attempts: dict[Hashable, int] = dict(attempts or {})
        self.active: dict[tuple, Any] = {}  # the keys a job runs -> the job

    @property
    def active_keys(self) -> set[Hashable]:
        return {k for keys in self.active for k in keys}

    def submit(self, units: list[tuple], make: Make) -> None:
        if not units:
            return
        jobs = self.launcher.submit(self.folder, [make(list(unit)) for unit in units])
        for unit, job in zip(units, jobs):
            for key in unit:
                self.attempts[key] = self.attempts.get(key, 0) + 1
                self.log.append(key, str(job.job_id), self.launcher.name, self.attempts[key])
            self.active[unit] = job

    def run(
        self,
        keys: list[Hashable],
        make: Make,
        ended: Ended,
        *,
        show: Callable[[], None] = lambda: None,
        done: Callable[[Hashable], bool] = lambda key: False,
        detach: bool = False,
    ) -> bool:
        """Run every key to its end (rerunning as `ended` asks); False when it stopped waiting first.

        `done(key)` tells that a key's work is over before its job's state says so (a trial's final record).
        With `detach` and a scheduler that queues jobs, everything is submitted and the call returns at once.
        """
        queue, deadline = list(keys), time.monotonic() + self.max_wait_h * 3600
        while queue or self.active:
            units = [tuple(queue[i : i + self.per_job]) for i in range(0, len(queue), self.per_job)]
            room = len(units) if self.launcher.queues_itself else max(self.launcher.max_parallel - len(self.active), 0)
            self.submit(units[:room], make)
            queue = [k for unit in units[room:] for k in unit]
            if detach and self.launcher.queues_itself:
                return False
            if self.launcher.inline:
                self._run_inline()
            queue += self._reap(ended, done)
            show()
            if time.monotonic() > deadline:
                _log.warning("stopped waiting after %.1f h; jobs keep running (sweep.action=status)", self.max_wait_h)
                return False
            if self.active:
                time.sleep(self.poll_s)
        return True

    def _reap(self, ended: Ended, done: Callable[[Hashable], bool]) -> list[Hashable]:
        again = []
        for unit in [u for u, job in self.active.items() if all(map(done, u)) or job_state(job) not in ACTIVE_STATES]:
            job = self.active.pop(unit)
            self.launcher.release(job)
            state = job_state(job)
            for key in unit:
                if ended(key, job, state) and self.attempts.get(key, 0) <= self.retries:
                    _log.warning("%s %s ended; resubmitting (attempt %d)", self.log.key, key, self.attempts[key] + 1)
                    again.append(key)
        return again

    def _run_inline(self) -> None:
        for job in self.active.values():
            try:
                job.result()  # a DebugExecutor job runs here, in this process
            except Exception as exc:  # the job recorded its own failure; `ended` reads it
                _log.error("job %s failed: %s", job.job_id, exc)

    def cancel(self, on_cancel: Callable[[Hashable, Any], None] | None = None) -> None:
        """Cancel every active job (and tell `on_cancel` about each of its keys)."""
        for unit, job in list(self.active.items()):
            job.cancel(check=False)
            for key in unit if on_cancel is not None else ():
                on_cancel(key, job)
        self.active.clear()

    @contextlib.contextmanager
    def cancelling_on_exit(self, on_cancel: Callable[[Hashable, Any], None] | None = None) -> Iterator[None]:
        """SIGTERM or Ctrl-C while inside: cancel the active jobs, then let the interruption go on."""

        def handler(signum, frame):
            raise SystemExit(143)

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, handler) if main else None
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            self.cancel(on_cancel)
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)

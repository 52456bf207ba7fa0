"""File locks that the kernel releases when their process dies (`flock`): the project's only lock mechanism.

`FileLock` is an exclusive lock with a provable holder. A trial's folder has one (whatever trains the trial holds it:
a second process or search worker for the same trial waits or stops, never trains beside it), a sweep folder has
one for its driver. `flock(path, shared=...)` is a plain blocking reader-writer lock (a device's lock: trials share
it, a speed measurement takes it alone). The holder writes its pid and host into the
file for messages; to act on a holder (`sweep.action=cancel`), `holder()` proves it: the lock is held, and that
pid on this host has this very file open. A pid merely written in a file is never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class LockBusy(RuntimeError):
    """Another live process holds the lock."""

    def __init__(self, path: Path, holder: dict | None) -> None:
        who = f"pid {holder['pid']} on {holder['host']}" if holder else "another process"
        super().__init__(f"{path} is held by {who}")
        self.path, self.holder = path, holder


_HELD: dict[Path, int] = {}  # locks this process holds -> how many FileLock objects share each


class FileLock:
    """An exclusive lock on `path` (created if missing), held from `acquire` to `release` or process death.
    Re-entrant within a process: another object for the same file shares the hold (the last release frees it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = None
        self._shared = False

    @property
    def held(self) -> bool:
        return self._file is not None or self._shared

    def _key(self) -> Path:
        return self.path.resolve()

    def acquire(self, wait: bool = False, poll_s: float = 2.0, on_wait: Callable[[dict | None], None] | None = None):
        """Take the lock; without `wait`, raise LockBusy when another process holds it."""
        if self.held:
            return self
        if _HELD.get(self._key()):  # this process holds it already, through another object
            _HELD[self._key()] += 1
            self._shared = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 (held open for as long as the lock)
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not wait:
                    f.close()
                    raise LockBusy(self.path, self.holder()) from None
                if on_wait is not None:
                    on_wait(self.holder())
                time.sleep(poll_s)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {platform.node()}\n")
        f.flush()
        self._file = f
        _HELD[self._key()] = 1
        return self

    def release(self) -> None:
        if self._shared:
            self._shared = False
            _HELD[self._key()] -= 1
            return
        if self._file is not None:
            _HELD.pop(self._key(), None)
            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        """Whether some process (this one included) holds the lock now."""
        if self.held or _HELD.get(self._key()):
            return True
        if not self.path.exists():
            return False
        with open(self.path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    def holder(self) -> dict | None:
        """The holder's pid and host as it wrote them, when the lock is held (for messages); else None."""
        if not self.locked():
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid, host = self.path.read_text().split()[:2]
            return {"pid": int(pid), "host": host}
        return None

    def proven_holder(self) -> int | None:
        """The pid of the process on this host that provably holds the lock: the lock is held, and that pid has
        this file open (its /proc entry says so). None otherwise: a written pid alone proves nothing."""
        found = self.holder()
        if found is None or found["host"] != platform.node():
            return None
        pid, target = found["pid"], self.path.resolve()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(fd)) == target:
                        return pid
        return None


@contextlib.contextmanager
def holding(path: Path, wait: bool = False, **kwargs) -> Iterator[FileLock]:
    """`with holding(path):` the lock held inside (LockBusy without `wait` when another process holds it)."""
    lock = FileLock(path).acquire(wait=wait, **kwargs)
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def flock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold `path` (created if missing) locked inside, waiting for it: shared with other shared holders, or alone.
    No holder is written (many may hold it shared); the kernel releases it if the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

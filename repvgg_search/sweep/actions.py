"""What a user does to an existing sweep besides running it: status, cancel, and detaching a local driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from hydra.core.hydra_config import HydraConfig

from ..jobs.launchers import cancel_recorded
from .driver import count_states
from .folder import TERMINAL, SweepFolder

BACKGROUND = "REPVGG_SWEEP_BACKGROUND"  # set in a detached local sweep's background driver


def print_status(folder: SweepFolder) -> dict[str, Any]:
    trials = folder.planned()
    counts = count_states(folder, trials)
    driver = folder.live_driver()
    line = "  ".join(f"{k} {v}" for k, v in counts.items())
    print(f"sweep {folder.root}: {line}" + (f"  (driver pid {driver})" if driver else ""))
    subs = folder.submissions()
    for t in trials:
        last = subs.get(t.trial_id, [{}])[-1]
        axes = ", ".join(f"{k}={v}" for k, v in t.axes.items())
        print(f"  {t.trial_id}  {folder.status(t.trial_id):<11} job {last.get('job_id', '-'):<12} {axes}")
    return {"folder": str(folder.root), **counts}


def cancel(folder: SweepFolder) -> dict[str, Any]:
    """Cancel the sweep's unfinished jobs (a local sweep: stop its background driver, which cancels its jobs)."""
    driver = folder.live_driver()
    if driver is not None:
        os.kill(driver, signal.SIGTERM)
    cancelled = []
    for tid, subs in folder.submissions().items():
        if folder.status(tid) in TERMINAL:
            continue
        last = subs[-1]
        cancel_recorded(last["launcher"], folder.jobs_dir, last["job_id"])
        folder.mark(tid, "cancelled", f"job {last['job_id']} cancelled by sweep.action=cancel")
        cancelled.append(tid)
    print(f"cancelled {len(cancelled)} trial(s) of {folder.root}")
    return {"folder": str(folder.root), "cancelled": cancelled}


def in_background() -> bool:
    """Whether this process is a detached sweep's background driver."""
    return bool(os.environ.get(BACKGROUND))


def detach_local(folder: SweepFolder) -> dict[str, Any]:
    """Start this same command as a background driver (new session, log in the sweep folder) and return."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("sweep.detach")]
    cmd = [sys.executable, "-m", "repvgg_search.sweep", *overrides, f"sweep.dir={folder.root.resolve()}"]
    log = open(folder.root / "driver.log", "ab")  # noqa: SIM115 (the child owns it)
    env = {**os.environ, BACKGROUND: "1"}
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    folder.driver_pid_file.write_text(f"{proc.pid}\n")
    print(
        f"detached: background driver pid {proc.pid}, log {folder.root / 'driver.log'}; "
        f"follow with sweep.action=status sweep.dir={folder.root}"
    )
    return {"folder": str(folder.root), "detached": True, "driver_pid": proc.pid}

"""What a user does to an existing sweep besides running it: status, cancel, and detaching a local driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from .. import files
from ..jobs.launchers import cancel_recorded
from ..locks import FileLock
from ..schema import Status, lookup, read_record
from ..trial.folder import LOCK
from .collect import design_of
from .driver import count_states
from .folder import SweepFolder
from .sequential import SequentialPlan, describe

BACKGROUND = "REPVGG_SWEEP_BACKGROUND"  # set in a detached local sweep's background driver


def print_status(folder: SweepFolder) -> dict[str, Any]:
    trials = folder.planned()
    counts = count_states(folder, trials)
    driver = folder.live_driver()
    line = "  ".join(f"{k} {v}" for k, v in counts.items())
    print(f"sweep {folder.root}: {line}" + (f"  (driver pid {driver})" if driver else "  (no driver running)"))
    subs, best = folder.submissions(), None
    for t in trials:
        last = subs.get(t.trial_id, [{}])[-1]
        axes = ", ".join(f"{k}={v}" for k, v in t.axes.items())
        status = folder.status(t.trial_id)
        status = Status.STOPPED if folder.stopped(t.trial_id, status) else status  # `running`, process gone
        top1 = trial_top1(folder.trial_dir(t.trial_id))
        if top1 is not None and status is Status.COMPLETED and (best is None or top1 > best[0]):
            best = (top1, t.trial_id, axes)
        shown = f"{top1:6.2f}" if top1 is not None else "     -"
        print(f"  {t.trial_id}  {status.value:<11} top1 {shown}  job {last.get('job_id', '-'):<12} {axes}")
    if best is not None:
        print(f"best single trial so far: {best[1]} top1 {best[0]:.2f}% ({best[2]}); "
              "variants are compared over their seeds by sweep.action=collect")  # fmt: skip
    design = design_of(folder.read_definition() or {})
    if design is not None:  # a sequential sweep: where each comparison stands, from the records
        baseline = (folder.read_definition() or {}).get("baseline") or "full"
        comparisons = SequentialPlan(trials, design, baseline).state(
            folder.status, lambda t: trial_top1(folder.trial_dir(t))
        )
        looks = ", ".join(map(str, design.looks()))
        print(f"sequential seeds (looks at {looks} pairs; margin ±{design.margin}):")
        print("\n".join(describe(comparisons, design)))
    return {"folder": str(folder.root), **counts, "best": best[1] if best else None}


def trial_top1(trial_dir: Path) -> float | None:
    """The trial's val top1 in percent: the final one when completed, else its latest epoch's (None if none)."""
    try:
        result = read_record(trial_dir / files.RESULT)
    except ValueError:  # a torn or edited record: shown as unreadable, its top1 unknown
        return None
    top1 = lookup(result, ("metrics", "top1"))
    if top1 is None:
        rows = files.read_jsonl(trial_dir / files.METRICS)
        top1 = rows[-1].get("val_top1") if rows else None
    return top1


def cancel(folder: SweepFolder) -> dict[str, Any]:
    """Cancel the sweep's unfinished work, touching only processes provably its own: the driver holding the
    folder's lock, the trials holding their folders' locks (SIGINT: they record `interrupted` and stop), and the
    scheduler jobs the launcher recorded. A pid written in a file is never enough."""
    driver = folder.proven_driver()
    if driver is not None:
        os.kill(driver, signal.SIGTERM)  # its handler cancels the jobs it submitted
    elif folder.live_driver() is not None:
        print(f"a driver holds {folder.root} from another host or cannot be proven: not signalled")
    cancelled = []
    for tid, subs in folder.submissions().items():
        if folder.status(tid).terminal:
            continue
        last = subs[-1]
        cancel_recorded(last["launcher"], folder.jobs_dir, last["job_id"])
        trainer = FileLock(folder.trial_dir(tid) / LOCK).proven_holder()
        if trainer is not None:
            os.kill(trainer, signal.SIGINT)
        folder.mark(tid, Status.CANCELLED, f"job {last['job_id']} cancelled by sweep.action=cancel")
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
    print(
        f"detached: background driver pid {proc.pid}, log {folder.root / 'driver.log'}; "
        f"follow with sweep.action=status sweep.dir={folder.root}"
    )
    return {"folder": str(folder.root), "detached": True, "driver_pid": proc.pid}

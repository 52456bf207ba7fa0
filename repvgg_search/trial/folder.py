"""A trial's folder: which trial it belongs to, who works in it (one process at a time, by lock), and its log."""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

from .. import checkpoints, files
from ..distributed import process_rank
from ..errors import BadInputError
from ..locks import FileLock, LockBusy
from ..schema import Status, TrialRecord, Weights, read_record, write_record
from .settings import TrialSettings

_log = logging.getLogger(__name__)
LOG = "trial.log"  # the trial's log lines, appended by every run in its folder
LOCK = ".lock"  # held by whatever trains the trial


class TrialFolderError(BadInputError):
    """The trial folder belongs to another trial, or is not a folder; nothing in it is touched."""


class TrialBusy(LockBusy):
    """Another live process trains this trial in this folder now."""


def claim_folder(trial_dir: Path, s: TrialSettings) -> TrialRecord | None:
    """Refuse a folder holding another trial; return the result when this trial already completed there."""
    if trial_dir.exists() and not trial_dir.is_dir():
        raise TrialFolderError(f"output folder {trial_dir} is a file, not a folder; choose another (output_dir=PATH)")
    result = read_record(trial_dir / files.RESULT)
    owner = result.trial_id if result else None
    if owner is None:
        owner = checkpoints.checkpoint_owner(trial_dir / files.CHECKPOINT)
    if owner is not None and owner != s.trial_id:
        raise TrialFolderError(
            f"output folder {trial_dir} holds trial {owner}, not this trial ({s.trial_id}, {s.preset}/"
            f"{s.arch.variant.label}); refusing to touch it: choose another folder (output_dir=PATH)"
        )
    if result and result.status is Status.COMPLETED:
        return result
    return None


@contextlib.contextmanager
def working_in(trial_dir: Path, wait: bool) -> Iterator[None]:
    """Hold the trial's lock inside (rank 0 of a multi-process trial takes it for all ranks). Another process
    training it: wait for it to end (`wait`: then this one finds its result), or raise TrialBusy."""
    if process_rank() != 0:
        yield
        return
    lock = FileLock(trial_dir / LOCK)
    try:
        lock.acquire(wait=wait, poll_s=5.0, on_wait=_waiting(trial_dir))
    except LockBusy as busy:
        raise TrialBusy(busy.path, busy.holder) from None
    try:
        yield
    finally:
        lock.release()


def _waiting(trial_dir: Path):
    said = {"once": False}

    def on_wait(holder: dict | None) -> None:
        if not said["once"]:
            who = f"pid {holder['pid']} on {holder['host']}" if holder else "another process"
            _log.warning("trial in %s is being trained by %s: waiting for it to end (never beside it)", trial_dir, who)
            said["once"] = True

    return on_wait


def trains_now(trial_dir: Path) -> bool:
    """Whether some process holds the trial's lock (a `running` record without it is a dead process's)."""
    return FileLock(Path(trial_dir) / LOCK).locked()


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Copy this package's log lines into the trial folder (rank 0 only), whoever started the trial."""
    if process_rank() != 0:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("repvgg_search")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def keep_traceback(trial_dir: Path) -> None:
    """The exception being handled, in full, into the trial's log (the console gets one line)."""
    with contextlib.suppress(OSError), open(Path(trial_dir) / LOG, "a") as f:
        traceback.print_exc(file=f)


def kept(keep: str) -> Weights:
    """The `weights` block of a completed record: the files `keep_checkpoint=keep` leaves (paths in the folder)."""
    return Weights(
        deploy=files.DEPLOY_WEIGHTS if keep in ("all", "deploy") else None,
        checkpoint=files.CHECKPOINT if keep == "all" else None,
    )


def keep_only(trial_dir: Path, keep: str, result: TrialRecord | None = None) -> TrialRecord | None:
    """Apply `keep_checkpoint` to a completed trial's folder: the safety copy `last.prev.pt` always goes, the
    training checkpoints unless `all`, the deploy weights and the quantization stage's ONNX models with `none`.
    Only ever called on a completed trial, which nothing resumes or retries. A record given is brought up to date with what is left."""
    saved = (trial_dir / files.CHECKPOINT).parent
    checkpoints.previous(trial_dir / files.CHECKPOINT).unlink(missing_ok=True)
    if keep != "all" and saved.is_dir():
        for f in saved.iterdir():
            f.unlink()
        saved.rmdir()
    if keep == "none":
        (trial_dir / files.DEPLOY_WEIGHTS).unlink(missing_ok=True)
        for f in sorted((trial_dir / files.EXPORT_DIR).glob("*.onnx")):  # the quantization stage's models
            f.unlink()
    if result is not None:
        every = kept("all")
        left = Weights(**{k: v if v is not None and (trial_dir / v).exists() else None
                          for k, v in (("deploy", every.deploy), ("checkpoint", every.checkpoint))})  # fmt: skip
        if result.weights != left:
            result.weights = left
            write_record(trial_dir / files.RESULT, result)
    return result


JOB_LOGS = "job_logs"  # links to the stdout/stderr of every scheduler job that worked on the trial


def link_job_logs(trial_dir: Path) -> None:
    """Inside a submitit job: link its stdout and stderr files into `<trial>/job_logs/<job id>.out|.err`, so a
    trial's folder leads to every job log of its runs (requeued and retried jobs add their own links)."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return
    with contextlib.suppress(Exception):  # a convenience: never a reason for a trial to fail
        import submitit

        paths = submitit.JobEnvironment().paths
        folder = trial_dir / JOB_LOGS
        folder.mkdir(parents=True, exist_ok=True)
        for target, suffix in ((paths.stdout, "out"), (paths.stderr, "err")):
            link = folder / f"{paths.job_id}.{suffix}"
            if not link.is_symlink():
                link.symlink_to(os.path.relpath(Path(target).resolve(), folder.resolve()))

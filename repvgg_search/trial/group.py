"""Several trials side by side in one job (one SLURM array task, `launcher.trials_per_task`): each in its own process,
the job's GPUs shared round-robin and its cores evenly. A small trial uses a few percent of a big GPU; packing
them fills it. Speed is still measured with the device to itself (the device lock), never beside training."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import submitit
import torch

from .. import files
from ..devices import cpu_cores
from ..schema import TrialRecord, read_record
from .runner import EXIT_INTERRUPTED, TrialInterrupted, TrialRunner

_MEMBERS: list[Any] = []  # this process's running members (processes cannot be pickled with the group)


class TrialGroup(submitit.helpers.Checkpointable):
    """Runs its trials at once and waits for all; on preemption or time-out each member is stopped at its
    checkpoint (SIGTERM: it records `interrupted`) and the group is requeued, so every member resumes."""

    def __init__(self, members: list[TrialRunner]) -> None:
        self.members = members

    def __call__(self) -> list[TrialRecord | None]:
        ctx = multiprocessing.get_context("spawn")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        threads = max(1, cpu_cores() // len(self.members))
        procs = [
            ctx.Process(target=_run_member, args=(m, i % gpus if gpus else None, threads), name=f"trial-{i}")
            for i, m in enumerate(self.members)
        ]
        _MEMBERS[:] = procs
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return [read_record(Path(m.trial_dir) / files.RESULT) for m in self.members]

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        for p in _MEMBERS:
            if p.is_alive():
                p.terminate()
        for p in _MEMBERS:
            p.join(timeout=120)
        return super().checkpoint(*args, **kwargs)


def _run_member(member: TrialRunner, gpu: int | None, threads: int) -> None:
    """One member in its own process: its GPU and its share of the cores; SIGTERM stops it at its checkpoint."""
    os.environ.pop("SUBMITIT_FOLDER", None)  # a plain process here: the trial handles SIGTERM itself
    config = {**member.config, "threads": member.config.get("threads") or threads}
    if gpu is not None:
        config["device"] = f"cuda:{gpu}"
    runner = TrialRunner(config, member.trial_dir, member.speed_dir)
    try:
        runner(progress=False)
    except TrialInterrupted:
        raise SystemExit(EXIT_INTERRUPTED) from None

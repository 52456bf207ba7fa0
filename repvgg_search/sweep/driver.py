"""The grid sweep: plan (trials written out before launch), run through the job layer, then collect."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..analysis.sequential import SequentialDesign
from ..jobs.launchers import Launcher
from ..jobs.pool import JobPool, job_log
from ..progress import Progress
from ..schema import Status
from ..trial import TrialGroup, TrialRunner
from .collect import write_results
from .folder import PlannedTrial, SweepFolder
from .grid import expand
from .sequential import SequentialPlan
from .spec import design_of

_log = logging.getLogger(__name__)
SHOWN = (Status.PLANNED, Status.RUNNING, Status.COMPLETED, Status.FAILED)  # always in a status line; others when > 0


def count_states(folder: SweepFolder, trials: list[PlannedTrial], active: set[str] | None = None) -> dict[str, int]:
    """Trials per status; a trial interrupted and resubmitted is planned again, a `running` one whose process
    died is stopped."""
    counts = dict.fromkeys((s.value for s in SHOWN), 0)
    for t in trials:
        status = folder.status(t.trial_id)
        mine = bool(active) and t.trial_id in active
        if status is Status.INTERRUPTED and mine:
            status = Status.PLANNED
        elif status is Status.RUNNING and not mine and folder.stopped(t.trial_id, status):
            status = Status.STOPPED
        counts[status.value] = counts.get(status.value, 0) + 1
    return counts


def finished(counts: dict[str, int]) -> int:
    """Trials whose run is over (the progress line's count)."""
    return sum(n for name, n in counts.items() if Status(name).terminal)


@dataclass
class GridSweep:
    """A validated grid sweep, its folder claimed and its trials written out."""

    folder: SweepFolder
    launcher: Launcher
    spec: Any  # the `sweep:` settings
    trials: list[PlannedTrial]
    resumed: bool

    design: SequentialDesign | None = None  # sweep.sequential=true: seeds in batches

    @classmethod
    def from_config(cls, cfg: DictConfig, folder: SweepFolder, launcher: Launcher) -> GridSweep:
        """Validate every trial, claim the folder for this definition, write the trial configs (a sequential sweep:
        every seed its budget allows)."""
        trials = expand(cfg, launcher.threads)
        design = design_of(cfg.sweep)
        extra = {
            "axes": OmegaConf.to_container(cfg.sweep.axes),
            "seeds": cfg.sweep.seeds,
            "baseline": cfg.sweep.baseline,
            **({"sequential": dataclasses.asdict(design)} if design is not None else {}),
        }
        identity = extra.get("sequential")  # a changed design is another sweep: its verdicts would differ
        resumed = folder.claim(cfg.sweep.name, "grid", [t.trial_id for t in trials], extra, identity)
        folder.materialize(trials)
        return cls(folder, launcher, cfg.sweep, trials, resumed, design)

    def print_plan(self) -> None:
        statuses = [self.folder.status(t.trial_id) for t in self.trials]
        done = sum(s is Status.COMPLETED for s in statuses)
        verb = "resuming" if self.resumed else "new sweep"
        print(f"{verb}: {self.folder.root} ({len(self.trials)} trials, {done} already completed)")
        for t, status in zip(self.trials, statuses):
            axes = ", ".join(f"{k}={v}" for k, v in t.axes.items())
            print(f"  {t.trial_id}  {status.value:<11} {axes}")

    def dry_run(self) -> dict[str, Any]:
        self.print_plan()
        return {"folder": str(self.folder.root), "trials": len(self.trials), "submitted": 0}

    def prepare(self) -> None:
        self.print_plan()

    def drive(self, detach: bool = False) -> dict[str, Any]:
        """Run the trials that still need to run; collect when every job has ended. The caller is the folder's
        driver (`SweepFolder.acquire_driver`)."""
        folder = self.folder
        attempts = {tid: len(subs) for tid, subs in folder.submissions().items()}
        pool = JobPool(self.launcher, folder.jobs_dir, folder.job_log, poll_s=self.spec.poll_s,
                       max_wait_h=self.spec.max_wait_h, retries=self.spec.retries, attempts=attempts)  # fmt: skip
        progress = Progress(f"sweep {folder.root.name}", len(self.trials))
        by_id = {t.trial_id: t for t in self.trials}

        def runner(tids: list[str]) -> TrialRunner | TrialGroup:
            members = [TrialRunner(by_id[t].config, str(folder.trial_dir(t)), str(folder.speed_dir)) for t in tids]
            return members[0] if len(members) == 1 else TrialGroup(members)

        def show() -> None:
            counts = count_states(folder, self.trials, pool.active_keys)
            progress.show("  ".join(f"{k} {v}" for k, v in counts.items() if v or Status(k) in SHOWN), finished(counts))

        def run(tids: list[str]) -> bool:
            return pool.run(tids, runner, self._ended, show=show, done=lambda tid: folder.status(tid).terminal,
                            detach=detach)  # fmt: skip

        try:
            with pool.cancelling_on_exit(self._cancelled):
                if self.design is None:
                    run(self.to_run(pool.attempts))
                else:
                    self._batches(run, pool.attempts, detach)
        finally:
            progress.close()
        if detach and self.launcher.queues_itself:
            print(f"submitted; follow with sweep.action=status sweep.dir={folder.root}")
            return {"folder": str(folder.root), "detached": True}
        return write_results(folder)

    def _batches(self, run: Callable[[list[str]], bool], attempts: dict[str, int], detach: bool) -> None:
        """Sequential seeds: run the trials the next look needs, update every comparison, repeat while any is open
        and has seeds left (a driver restarted here finds the same state in the records)."""
        plan = self.sequential_plan()
        while True:
            comparisons = plan.state(self.folder.status, self._top1)
            todo = self.to_run(attempts, plan.wanted(comparisons, self.folder.status))
            decided = sum(not c.open for c in comparisons)
            print(f"sequential: {decided} of {len(comparisons)} comparisons decided; next batch {len(todo)} trials")
            if not todo:
                for c in plan.exhausted(comparisons, self.folder.status):
                    print(f"  {c.variant}: open, but its seeds ran out (failed trials): undecided at its budget")
                return
            if not run(todo) or (detach and self.launcher.queues_itself):
                return  # stopped waiting, or detached: a rerun of the command submits the next batch

    def sequential_plan(self) -> SequentialPlan:
        return SequentialPlan(self.trials, self.design, self.spec.baseline)

    def _top1(self, tid: str) -> float | None:
        result = self.folder.result(tid)
        return result.metrics.top1 if result is not None and result.metrics is not None else None

    def to_run(self, attempts: dict[str, int], among: list[str] | None = None) -> list[str]:
        """Trials without a result whose attempts are not used up (failed ones get `retries` more); `among`: only
        those (a sequential sweep's next batch)."""
        out = []
        wanted = None if among is None else set(among)
        for t in self.trials:
            if wanted is not None and t.trial_id not in wanted:
                continue
            status = self.folder.status(t.trial_id)
            if status.is_result:  # a rerun would give the same
                continue
            if status in (Status.FAILED, Status.CANCELLED) and attempts.get(t.trial_id, 0) > self.spec.retries:
                continue
            out.append(t.trial_id)
        return out

    def _ended(self, tid: str, job: Any, state: str) -> bool:
        """Record an end the trial could not record itself; run a failed or interrupted trial again (an interrupted
        one resumes from its checkpoint; a user stops a sweep with sweep.action=cancel)."""
        status = self.folder.status(tid)
        if status is Status.INTERRUPTED and not state.startswith("CANCELLED"):  # SIGTERM to its job: resumed
            return True
        if not status.terminal:  # the job ended without the trial recording an end: killed, cancelled, ...
            status = Status.CANCELLED if state.startswith("CANCELLED") else Status.FAILED
            self.folder.mark(tid, status, f"job {job.job_id} ended ({state}) without a result; log: {job_log(job)}")
        return status is Status.FAILED

    def _cancelled(self, tid: str, job: Any) -> None:
        self.folder.mark(tid, Status.CANCELLED, f"job {job.job_id} cancelled with its sweep driver")

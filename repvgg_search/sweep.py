"""`python -m repvgg_search.sweep +sweep=NAME`: expand a sweep into trials, launch them, wait, collect.

Actions (`sweep.action`): run (default; resumes an existing sweep folder), status, collect, cancel.
`sweep.dry_run=true` writes the trial configs and prints the plan without submitting; `sweep.detach=true`
submits and returns (a local sweep keeps a background driver that throttles its trials).
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import CONF_DIR, REPO_ROOT, TrialConfig, exit_on_bad_input, register_configs
from .launchers import local_slots, make_executor, register_launchers, validate_launcher, visible_gpus
from .sweep_folder import TERMINAL, PlannedTrial, SweepFolder
from .trial import TrialRunner, settings_from_typed, typed_config

_log = logging.getLogger("repvgg_search.sweep")
ACTIONS = ("run", "status", "collect", "cancel")
KINDS = ("grid", "search")
SWEEPS_DIR = REPO_ROOT / "sweeps"
# Job states (sacct) in which a trial job may still produce a result.
ACTIVE_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "CONFIGURING", "COMPLETING",
    "RESIZING", "PREEMPTED", "UNKNOWN", "READY", "SIGNALING", "STAGE_OUT",
}  # fmt: skip


class SweepError(ValueError):
    """A sweep definition or sweep setting is invalid; nothing has been submitted."""


@dataclass
class SweepSpec:
    """What a sweep varies and how the driver runs it (sweep files under sweeps/ set these)."""

    name: str | None = None  # the sweep's name; set by the sweep file (+sweep=NAME)
    kind: str = "grid"  # grid: the cross product of `axes` | search: an Optuna search (see `search`)
    axes: dict[str, list[Any]] = field(default_factory=dict)  # config path -> values, e.g. {seed: [0, 1]}
    dir: str | None = None  # sweep folder; null = outputs/sweeps/<name> (stable: rerunning resumes it)
    action: str = "run"  # run | status | collect | cancel
    dry_run: bool = False  # write the trial configs and print the plan; submit nothing
    detach: bool = False  # submit and return; `sweep.action=status` shows progress later
    retries: int = 1  # resubmissions of a failed trial (within a run and over reruns)
    poll_s: float = 2.0  # seconds between polls of job states (bounded waits)
    max_wait_h: float = 168.0  # the driver gives up waiting after this long (jobs keep running)


@dataclass
class LaunchConfig(TrialConfig):
    """`python -m repvgg_search.sweep`: the base trial config, the sweep, the launcher, the search."""

    sweep: SweepSpec = field(default_factory=SweepSpec)
    launcher: Any = None
    search: Any = None  # the width search's settings (sweeps/width_search.yaml)


def register() -> None:
    from hydra.core.config_store import ConfigStore

    register_configs()
    register_launchers()
    ConfigStore.instance().store(name="launch_schema", node=LaunchConfig)


register()


# -- planning -----------------------------------------------------------------------------------------------
def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def sweep_folder(cfg: DictConfig) -> SweepFolder:
    return SweepFolder(Path(cfg.sweep.dir or Path("outputs") / "sweeps" / cfg.sweep.name))


def validate_spec(cfg: DictConfig) -> None:
    spec = cfg.sweep
    if spec.name is None:
        raise SweepError(f"no sweep selected: add +sweep=NAME; available: {', '.join(available_sweeps())}")
    if spec.kind not in KINDS:
        raise SweepError(f"sweep.kind={spec.kind!r} is unknown; allowed: {', '.join(KINDS)}")
    if spec.action not in ACTIONS:
        raise SweepError(f"sweep.action={spec.action!r} is unknown; allowed: {', '.join(ACTIONS)}")
    if spec.retries < 0 or spec.poll_s <= 0 or spec.max_wait_h <= 0:
        raise SweepError("sweep.retries must be >= 0, sweep.poll_s and sweep.max_wait_h > 0")


def base_trial_config(cfg: DictConfig) -> DictConfig:
    """The trial part of the launch config (everything but sweep, launcher, search)."""
    fields = set(TrialConfig.__dataclass_fields__)
    return OmegaConf.create(
        {
            k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg
            if k in fields
        }
    )


def expand(cfg: DictConfig, threads: int | None = None) -> list[PlannedTrial]:
    """Every trial of a grid sweep, validated (raises SweepError naming the trial and the field).

    OmegaConf type-checks each distinct axis value once; trials are then built as plain dataclasses, so that
    planning a thousand trials takes a second or two.
    """
    base = typed_config(base_trial_config(cfg))
    axes = {k: list(v) for k, v in OmegaConf.to_container(cfg.sweep.axes, resolve=True).items()}
    checked = _checked_axis_values(axes)
    trials, seen = [], {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        trial = copy.deepcopy(base)
        for path, value in values.items():
            _set_path(trial, path, copy.deepcopy(checked[path, repr(value)]))
        trial.tracking.group = cfg.sweep.name
        if threads is not None and trial.threads is None:
            trial.threads = threads
        try:
            settings = settings_from_typed(trial)
        except ValueError as exc:
            raise SweepError(f"trial {values} of sweep {cfg.sweep.name!r} is invalid: {exc}") from None
        if settings.trial_id in seen:
            raise SweepError(f"trials {seen[settings.trial_id]} and {values} are the same trial; remove the duplicate")
        seen[settings.trial_id] = values
        trials.append(PlannedTrial(settings.trial_id, settings.config, values))
    return trials


def _checked_axis_values(axes: dict[str, list[Any]]) -> dict[tuple[str, str], Any]:
    """Each distinct axis value, type-checked and converted by OmegaConf against the trial schema."""
    node = OmegaConf.structured(TrialConfig)
    out = {}
    for path, values in axes.items():
        if not values:
            raise SweepError(f"sweep.axes.{path} has no values")
        if OmegaConf.select(node, path, default="__missing__") == "__missing__":
            raise SweepError(f"sweep.axes: {path!r} is not a trial config field (e.g. variant.name, seed, model.a)")
        for value in values:
            try:
                OmegaConf.update(node, path, value, merge=False)
            except Exception as exc:  # OmegaConf's ValidationError and friends
                raise SweepError(f"sweep.axes.{path}: value {value!r} does not fit the field: {exc}") from None
            leaf = OmegaConf.select(node, path)
            out[path, repr(value)] = OmegaConf.to_container(leaf) if OmegaConf.is_config(leaf) else leaf
    return out


def _set_path(obj: Any, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        obj = getattr(obj, name)
    setattr(obj, leaf, value)


def validate(cfg: DictConfig) -> list[PlannedTrial]:
    """Entry-point validation hook (tests compose every conf/ file through it): base trial, launcher, sweep."""
    from .launchers import to_launcher

    to_launcher(cfg.launcher)
    if cfg.sweep.name is None or cfg.sweep.kind != "grid":
        settings = settings_from_typed(typed_config(base_trial_config(cfg)))
        return [PlannedTrial(settings.trial_id, settings.config)]
    validate_spec(cfg)
    return expand(cfg)


# -- the driver ---------------------------------------------------------------------------------------------
class Driver:
    """Submits the trials that still need to run, throttled; polls their jobs until every one has ended."""

    def __init__(self, folder: SweepFolder, launcher: Any, spec: Any, trials: list[PlannedTrial]) -> None:
        self.folder, self.launcher, self.spec, self.trials = folder, launcher, spec, trials
        self.by_id = {t.trial_id: t for t in trials}
        self.active: dict[str, Any] = {}  # trial_id -> submitit job
        self.attempts = {tid: len(subs) for tid, subs in folder.submissions().items()}
        if launcher.name == "local":
            self.cap, self.threads, self.gpus_per_trial = local_slots(launcher)
        else:
            self.cap = 1 if launcher.name == "debug" else 10**9  # SLURM throttles arrays itself
            self.gpus_per_trial = 0
        self.free_gpus = list(range(visible_gpus())) if self.gpus_per_trial else []
        self.gpu_of: dict[str, list[int]] = {}

    def to_run(self) -> list[str]:
        """Trials not completed whose attempts are not used up (failed ones get `retries` more)."""
        out = []
        for t in self.trials:
            status = self.folder.status(t.trial_id)
            if status in ("completed", "infeasible"):
                continue
            if status in ("failed", "cancelled") and self.attempts.get(t.trial_id, 0) > self.spec.retries:
                continue
            out.append(t.trial_id)
        return out

    def submit(self, trial_ids: list[str]) -> None:
        if not trial_ids:
            return
        if self.launcher.name == "slurm":
            ex = make_executor(self.launcher, self.folder.root / "jobs")
            with ex.batch():
                jobs = [ex.submit(TrialRunner(self.by_id[t].config, str(self.folder.trial_dir(t)))) for t in trial_ids]
            for tid, job in zip(trial_ids, jobs):
                self._record(tid, job)
            return
        for tid in trial_ids:
            gpus = [self.free_gpus.pop(0) for _ in range(self.gpus_per_trial)] if self.gpus_per_trial else None
            ex = make_executor(self.launcher, self.folder.root / "jobs", gpu_ids=gpus)
            job = ex.submit(TrialRunner(self.by_id[tid].config, str(self.folder.trial_dir(tid))))
            self.gpu_of[tid] = gpus or []
            self._record(tid, job)

    def _record(self, tid: str, job: Any) -> None:
        self.attempts[tid] = self.attempts.get(tid, 0) + 1
        self.folder.record_submission(tid, str(job.job_id), self.launcher.name, self.attempts[tid])
        self.active[tid] = job

    def run(self, progress: Progress, detach: bool = False) -> None:
        queue = self.to_run()
        deadline = time.monotonic() + self.spec.max_wait_h * 3600
        if self.launcher.name == "slurm":
            self.submit(queue)
            queue = []
            if detach:
                return
        while queue or self.active:
            free = self.cap - len(self.active)
            if free > 0 and queue:
                batch, queue = queue[:free], queue[free:]
                self.submit(batch)
            if self.launcher.name == "debug":
                self._run_debug()
            for tid in [t for t, job in self.active.items() if self._ended(t, job)]:
                self._finish(tid, queue)
            progress.update(self.folder, self.trials, self.active)
            if time.monotonic() > deadline:
                _log.warning(
                    "stopped waiting after %.1f h; jobs keep running (sweep.action=status)", self.spec.max_wait_h
                )
                return
            if self.active:
                time.sleep(self.spec.poll_s)

    def _run_debug(self) -> None:
        for job in self.active.values():
            try:
                job.result()  # the DebugExecutor runs the trial here, in this process
            except Exception as exc:  # the trial recorded its failure; the sweep goes on
                _log.error("trial job %s failed: %s", job.job_id, exc)

    def _ended(self, tid: str, job: Any) -> bool:
        if self.folder.status(tid) in TERMINAL:
            return True
        state = _job_state(job)
        return state not in ACTIVE_STATES and state != "RUNNING"

    def _finish(self, tid: str, queue: list[str]) -> None:
        job = self.active.pop(tid)
        self.free_gpus.extend(self.gpu_of.pop(tid, []))
        status = self.folder.status(tid)
        if status not in TERMINAL:  # the job ended without the trial recording an end: killed, cancelled, ...
            state = _job_state(job)
            status = "cancelled" if state.startswith("CANCELLED") else "failed"
            self.folder.mark(tid, status, f"job {job.job_id} ended ({state}) without a result; log: {_job_log(job)}")
        if status == "failed" and self.attempts.get(tid, 0) <= self.spec.retries:
            _log.warning("trial %s failed; resubmitting (attempt %d)", tid, self.attempts[tid] + 1)
            queue.append(tid)


def _job_state(job: Any) -> str:
    try:
        state = job.state
    except Exception:  # sacct hiccups: treat as unknown, retried at the next poll
        return "UNKNOWN"
    state = str(state).upper()
    if state in ("FINISHED", "DONE"):
        return "COMPLETED"
    if state.startswith("NO PROCESS"):
        return "COMPLETED" if getattr(job, "paths", None) and job.paths.result_pickle.exists() else "FAILED"
    return state.split()[0] if state else "UNKNOWN"


def _job_log(job: Any) -> str:
    try:
        return str(job.paths.stderr)
    except Exception:
        return "n/a"


# -- progress -----------------------------------------------------------------------------------------------
class Progress:
    """Counts of pending / running / done / failed trials: a live line for a person, log lines in batch jobs."""

    def __init__(self, interactive: bool) -> None:
        self.interactive, self.last, self.last_time = interactive, None, 0.0
        self.live = None
        if interactive:
            from rich.live import Live

            self.live = Live(refresh_per_second=2, transient=False)
            self.live.start()

    def update(self, folder: SweepFolder, trials: list[PlannedTrial], active: dict[str, Any]) -> None:
        counts = count_states(folder, trials, active)
        line = "  ".join(f"{k} {v}" for k, v in counts.items())
        if self.live is not None:
            self.live.update(f"[bold]{folder.root.name}[/bold]  {line}")
        elif line != self.last or time.monotonic() - self.last_time > 60:
            print(f"[sweep {folder.root.name}] {line}", flush=True)
            self.last, self.last_time = line, time.monotonic()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def count_states(
    folder: SweepFolder, trials: list[PlannedTrial], active: dict[str, Any] | None = None
) -> dict[str, int]:
    counts = dict.fromkeys(("pending", "running", "done", "failed", "cancelled", "interrupted"), 0)
    for t in trials:
        status = folder.status(t.trial_id)
        key = {"completed": "done", "infeasible": "done", "running": "running"}.get(status, status)
        if status == "missing" or (status == "interrupted" and active and t.trial_id in active):
            key = "pending"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _interactive() -> bool:
    batch = any(k in os.environ for k in ("SLURM_JOB_ID", "SUBMITIT_FOLDER"))
    return sys.stderr.isatty() and not batch


# -- actions ------------------------------------------------------------------------------------------------
def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate everything, then carry out `sweep.action`; returns a small summary (for tests and scripts)."""
    validate_spec(cfg)
    folder = sweep_folder(cfg)
    action = cfg.sweep.action
    if action != "run":
        definition = folder.read_definition()
        if definition is None:
            raise SweepError(f"sweep.action={action}: {folder.root} holds no sweep (sweep.dir=PATH names one)")
        if definition.get("kind") == "search":
            from .search import search_action

            return search_action(folder, action)
        return {"status": print_status, "collect": collect, "cancel": cancel}[action](folder)
    launcher = validate_launcher(cfg.launcher)
    if cfg.sweep.kind == "search":
        from .search import run_search

        return run_search(cfg, folder, launcher)
    threads = local_slots(launcher)[1] if launcher.name == "local" else None
    trials = expand(cfg, threads)
    resumed = folder.claim(
        cfg.sweep.name, "grid", [t.trial_id for t in trials], {"axes": OmegaConf.to_container(cfg.sweep.axes)}
    )
    folder.materialize(trials)
    print_plan(folder, trials, resumed)
    if cfg.sweep.dry_run:
        return {"folder": str(folder.root), "trials": len(trials), "submitted": 0}
    if cfg.sweep.detach and launcher.name == "local" and not os.environ.get("REPVGG_SWEEP_BACKGROUND"):
        return detach_local(folder)
    return drive(folder, launcher, cfg.sweep, trials)


def drive(folder: SweepFolder, launcher: Any, spec: Any, trials: list[PlannedTrial]) -> dict[str, Any]:
    folder.acquire_driver()
    driver = Driver(folder, launcher, spec, trials)
    progress = Progress(_interactive())
    restore = _cancel_jobs_on_sigterm(driver)
    try:
        driver.run(progress, detach=spec.detach)
    except KeyboardInterrupt:
        _cancel_active(driver)
        raise
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, restore)
        folder.driver_pid_file.unlink(missing_ok=True)
    if spec.detach:
        print(f"submitted; follow with sweep.action=status sweep.dir={folder.root}")
        return {"folder": str(folder.root), "detached": True}
    return collect(folder)


def _cancel_jobs_on_sigterm(driver: Driver):
    def handler(signum, frame):
        _cancel_active(driver)
        raise SystemExit(143)

    return signal.signal(signal.SIGTERM, handler)


def _cancel_active(driver: Driver) -> None:
    for tid, job in list(driver.active.items()):
        job.cancel(check=False)
        driver.folder.mark(tid, "cancelled", f"job {job.job_id} cancelled with its sweep driver")


def detach_local(folder: SweepFolder) -> dict[str, Any]:
    """Start this same command as a background driver (new session, log in the sweep folder) and return."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("sweep.detach")]
    cmd = [sys.executable, "-m", "repvgg_search.sweep", *overrides, f"sweep.dir={folder.root.resolve()}"]
    log = open(folder.root / "driver.log", "ab")  # noqa: SIM115 (the child owns it)
    env = {**os.environ, "REPVGG_SWEEP_BACKGROUND": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=os.getcwd(),
    )
    folder.driver_pid_file.write_text(f"{proc.pid}\n")
    print(
        f"detached: background driver pid {proc.pid}, log {folder.root / 'driver.log'}; "
        f"follow with sweep.action=status sweep.dir={folder.root}"
    )
    return {"folder": str(folder.root), "detached": True, "driver_pid": proc.pid}


def print_plan(folder: SweepFolder, trials: list[PlannedTrial], resumed: bool) -> None:
    statuses = [folder.status(t.trial_id) for t in trials]
    done = sum(s == "completed" for s in statuses)
    verb = "resuming" if resumed else "new sweep"
    print(f"{verb}: {folder.root} ({len(trials)} trials, {done} already completed)")
    for t, status in zip(trials, statuses):
        axes = ", ".join(f"{k}={v}" for k, v in t.axes.items())
        shown = "planned" if status == "missing" else status
        print(f"  {t.trial_id}  {shown:<11} {axes}")


def print_status(folder: SweepFolder) -> dict[str, Any]:
    trials = folder.planned()
    counts = count_states(folder, trials)
    driver = folder.live_driver()
    print(
        f"sweep {folder.root}: "
        + "  ".join(f"{k} {v}" for k, v in counts.items())
        + (f"  (driver pid {driver})" if driver else "")
    )
    subs = folder.submissions()
    for t in trials:
        last = subs.get(t.trial_id, [{}])[-1]
        axes = ", ".join(f"{k}={v}" for k, v in t.axes.items())
        print(f"  {t.trial_id}  {folder.status(t.trial_id):<11} job {last.get('job_id', '-'):<12} {axes}")
    return {"folder": str(folder.root), **counts}


def collect(folder: SweepFolder) -> dict[str, Any]:
    """Write results.csv and summary.md from the trial records, print the summary, return the counts."""
    from .collect import write_results

    return write_results(folder)


def cancel(folder: SweepFolder) -> dict[str, Any]:
    """Cancel the sweep's unfinished jobs (SLURM: scancel; local: stop the background driver and its trials)."""
    import submitit

    driver = folder.live_driver()
    if driver is not None:
        os.kill(driver, signal.SIGTERM)
    cancelled = []
    for tid, subs in folder.submissions().items():
        last = subs[-1]
        if folder.status(tid) in TERMINAL:
            continue
        if last["launcher"] == "slurm":
            job = submitit.SlurmJob(folder=folder.root / "jobs", job_id=last["job_id"])
            job.cancel(check=False)
        folder.mark(tid, "cancelled", f"job {last['job_id']} cancelled by sweep.action=cancel")
        cancelled.append(tid)
    print(f"cancelled {len(cancelled)} trial(s) of {folder.root}")
    return {"folder": str(folder.root), "cancelled": cancelled}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="launch")
@exit_on_bad_input
def main(cfg: DictConfig) -> None:
    """Hydra entry point: exit 2 on bad input, before anything is submitted."""
    run(cfg)


if __name__ == "__main__":
    main()

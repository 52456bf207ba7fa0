"""Launchers: where jobs run (local processes, a SLURM cluster, or in the driver's process), on submitit's own API.

A launcher object answers, in one place, how many jobs run at once, with how many threads and which GPUs, and on
which executor; nothing outside this module looks at a launcher's name.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import torch
from omegaconf import DictConfig

from ..config import plain_dict
from ..devices import cpu_cores
from ..errors import BadInputError


class LauncherError(BadInputError):
    """A launcher setting is invalid, or the cluster it names cannot be reached."""


@dataclass
class LocalLauncherConfig:
    """Jobs as local processes (submitit's LocalExecutor), at most `max_parallel` at once."""

    name: str = "local"
    max_parallel: int | None = None  # jobs at once; null = visible GPUs, or CPU cores (at most 8) without GPUs
    threads_per_trial: int | None = None  # torch CPU threads per job; null = cores // max_parallel (>= 1)
    gpus_per_trial: int | None = None  # null = 1 when GPUs are visible, else 0
    trials_per_gpu: int = 1  # trials sharing one GPU at once (small trials leave most of a big GPU idle)
    timeout_min: float = 720.0  # wall-clock limit of one job, minutes


@dataclass
class SlurmLauncherConfig:
    """Jobs as SLURM job arrays; preemption and time-outs requeue a trial, which resumes from its checkpoint."""

    name: str = "slurm"
    partition: str | None = None  # null = the cluster's default partition
    gpus_per_node: int = 0  # GPUs per job (--gpus-per-node)
    cpus_per_task: int = 2  # CPU cores per task
    mem_gb: float | None = None  # memory per job, GB; null = the partition's default
    timeout_min: int = 60  # time limit per job, minutes (a job near it is requeued and resumes)
    max_parallel: int = 16  # jobs running at once: the array's %N (grid sweeps), the workers (searches)
    trials_per_task: int = 1  # trials run side by side inside one array task, sharing its GPUs and cores
    nodes: int = 1  # nodes per job (DDP across nodes when > 1)
    tasks_per_node: int = 1  # processes per node (one per GPU for DDP)
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    constraint: str | None = None  # --constraint
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # other sbatch options, {mail-type: END}
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ..., source ...)


@dataclass
class DebugLauncherConfig:
    """Jobs in the driver's own process, one after another (submitit's DebugExecutor): for a debugger."""

    name: str = "debug"
    max_parallel: int = 1  # always 1


def visible_gpus() -> int:
    """CUDA devices this process can see."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class Launcher:
    """Where jobs run. `max_parallel`: jobs at once; `threads`: torch threads per job (None: the job's own);
    `queues_itself`: the scheduler holds the queue (submit everything at once); `inline`: jobs run in the driver
    when polled; `background_driver`: a detached sweep needs a background driver to throttle its jobs."""

    name = ""
    queues_itself = False
    inline = False
    background_driver = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.max_parallel = 1
        self.threads: int | None = None
        self.per_job = 1  # trials (keys) one job runs side by side

    def check(self) -> None:
        """Refuse settings no job can run with, before anything is submitted."""

    def submit(self, folder: Path, fns: list[Callable[[], Any]]) -> list[submitit.Job]:
        """Submit `fns` as jobs writing their files under `folder`."""
        ex = self.executor(folder)
        return [ex.submit(fn) for fn in fns]

    def executor(self, folder: Path) -> submitit.Executor:
        raise NotImplementedError

    def release(self, job: submitit.Job) -> None:
        """A job ended: give back what it held (GPUs)."""

    @classmethod
    def cancel_recorded(cls, jobs_folder: Path, job_id: str) -> None:
        """Cancel a job an earlier driver submitted (only a scheduler's jobs outlive their driver)."""


class LocalLauncher(Launcher):
    """Local processes, at most `max_parallel` at once, each with its own GPUs and its share of the cores."""

    name = "local"
    background_driver = True

    def __init__(self, cfg: LocalLauncherConfig) -> None:
        super().__init__(cfg)
        gpus = visible_gpus()
        self.gpus_per_job = cfg.gpus_per_trial if cfg.gpus_per_trial is not None else (1 if gpus else 0)
        self.slots = GpuSlots(gpus, max(cfg.trials_per_gpu, 1))
        auto = self.slots.capacity(self.gpus_per_job) if self.gpus_per_job else min(cpu_cores(), 8)
        self.max_parallel = cfg.max_parallel or max(auto, 1)
        self.threads = cfg.threads_per_trial or max(1, cpu_cores() // self.max_parallel)
        self.held: dict[str, list[int]] = {}

    def check(self) -> None:
        cfg = self.cfg
        if cfg.max_parallel is not None and cfg.max_parallel < 1:
            raise LauncherError(f"launcher.max_parallel={cfg.max_parallel} must be >= 1 (or null for auto)")
        if cfg.trials_per_gpu < 1:
            raise LauncherError(f"launcher.trials_per_gpu={cfg.trials_per_gpu} must be >= 1")
        if cfg.timeout_min <= 0:
            raise LauncherError(f"launcher.timeout_min={cfg.timeout_min} must be > 0")
        if self.gpus_per_job > visible_gpus():
            raise LauncherError(f"launcher.gpus_per_trial={self.gpus_per_job} but {visible_gpus()} GPU(s) are visible")
        if self.gpus_per_job and self.max_parallel > self.slots.capacity(self.gpus_per_job):
            raise LauncherError(
                f"launcher.max_parallel={self.max_parallel} trials x {self.gpus_per_job} GPU(s) each, but "
                f"{visible_gpus()} GPU(s) x launcher.trials_per_gpu={cfg.trials_per_gpu} hold "
                f"{self.slots.capacity(self.gpus_per_job)}"
            )

    def submit(self, folder: Path, fns: list[Callable[[], Any]]) -> list[submitit.Job]:
        jobs = []
        for fn in fns:
            gpus = self.slots.take(self.gpus_per_job)
            ex = submitit.LocalExecutor(folder=folder)
            params: dict[str, Any] = {"timeout_min": self.cfg.timeout_min}
            if gpus:
                params.update(gpus_per_node=len(gpus), visible_gpus=gpus)
            ex.update_parameters(**params)
            job = ex.submit(fn)
            self.held[str(job.job_id)] = gpus
            jobs.append(job)
        return jobs

    def release(self, job: submitit.Job) -> None:
        self.slots.give(self.held.pop(str(job.job_id), []))


class GpuSlots:
    """Which GPU each new trial gets: every GPU holds `per_gpu` trials at once; a trial needing k GPUs takes a slot
    on k distinct ones, the least loaded first."""

    def __init__(self, gpus: int, per_gpu: int) -> None:
        self.per_gpu = per_gpu
        self.free = dict.fromkeys(range(gpus), per_gpu)

    def capacity(self, per_trial: int) -> int:
        """Trials that fit at once."""
        return len(self.free) * self.per_gpu // per_trial if per_trial else 0

    def take(self, k: int) -> list[int]:
        chosen = sorted((g for g, n in self.free.items() if n > 0), key=lambda g: (-self.free[g], g))[:k]
        if len(chosen) < k:
            raise RuntimeError(f"no free GPU slot for a trial of {k} GPU(s): {self.free}")  # a throttling bug
        for g in chosen:
            self.free[g] -= 1
        return chosen

    def give(self, gpus: list[int]) -> None:
        for g in gpus:
            self.free[g] += 1


class SlurmLauncher(Launcher):
    """SLURM job arrays: the scheduler queues them and runs at most `max_parallel` at once (%N)."""

    name = "slurm"
    queues_itself = True

    def __init__(self, cfg: SlurmLauncherConfig) -> None:
        super().__init__(cfg)
        self.max_parallel = cfg.max_parallel
        self.per_job = cfg.trials_per_task

    def check(self) -> None:
        for key in ("cpus_per_task", "timeout_min", "max_parallel", "nodes", "tasks_per_node", "trials_per_task"):
            if getattr(self.cfg, key) < 1:
                raise LauncherError(f"launcher.{key}={getattr(self.cfg, key)} must be >= 1")
        if self.per_job > 1 and (self.cfg.nodes > 1 or self.cfg.tasks_per_node > 1):
            raise LauncherError(
                f"launcher.trials_per_task={self.per_job} packs single-process trials into one task; it does not go "
                f"with multi-process trials (launcher.nodes={self.cfg.nodes}, tasks_per_node={self.cfg.tasks_per_node})"
            )
        check_slurm(self.cfg.partition)

    def submit(self, folder: Path, fns: list[Callable[[], Any]]) -> list[submitit.Job]:
        ex = self.executor(folder)
        ex.update_parameters(array_parallelism=max(1, min(self.max_parallel, len(fns))))
        with ex.batch():
            jobs = [ex.submit(fn) for fn in fns]
        return jobs

    def executor(self, folder: Path) -> submitit.Executor:
        c = self.cfg
        ex = submitit.SlurmExecutor(folder=folder)
        # Append to the job logs: a requeued (preempted or timed-out) trial keeps the log of its earlier runs.
        extra = {"open-mode": "append", **c.additional_parameters}
        optional = {"partition": c.partition, "account": c.account, "qos": c.qos, "constraint": c.constraint}
        ex.update_parameters(
            time=c.timeout_min,
            cpus_per_task=c.cpus_per_task,
            nodes=c.nodes,
            ntasks_per_node=c.tasks_per_node,
            setup=list(c.setup),
            additional_parameters=extra,
            **{k: v for k, v in optional.items() if v},
            **({"gpus_per_node": c.gpus_per_node} if c.gpus_per_node else {}),
            **({"mem": f"{int(c.mem_gb * 1024)}M"} if c.mem_gb else {}),
        )
        return ex

    @classmethod
    def cancel_recorded(cls, jobs_folder: Path, job_id: str) -> None:
        submitit.SlurmJob(folder=jobs_folder, job_id=job_id).cancel(check=False)


class DebugLauncher(Launcher):
    """In the driver's process, one job at a time, run when the driver polls it."""

    name = "debug"
    inline = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.kept: list[submitit.Job] = []

    def submit(self, folder: Path, fns: list[Callable[[], Any]]) -> list[submitit.Job]:
        # submitit names a debug job DEBUG_<id() of its submission>; CPython hands a freed object's id to the next
        # one, so the jobs stay referenced for the launcher's life and no two jobs of one run share an id (job log
        # rows, log files)
        jobs = super().submit(folder, fns)
        self.kept += jobs
        return jobs

    def executor(self, folder: Path) -> submitit.Executor:
        return submitit.DebugExecutor(folder=folder)


LAUNCHERS: dict[str, tuple[type, type[Launcher]]] = {
    "local": (LocalLauncherConfig, LocalLauncher),
    "slurm": (SlurmLauncherConfig, SlurmLauncher),
    "debug": (DebugLauncherConfig, DebugLauncher),
}


def register_launchers() -> None:
    """Store one schema per launcher, so that a field of another launcher is a composition error."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, (schema, _) in LAUNCHERS.items():
        cs.store(group="launcher", name=f"{name}_schema", node=schema)


def launcher_config(cfg: DictConfig | dict | Any) -> Any:
    """The typed launcher config (a field foreign to the chosen launcher is refused, naming both)."""
    data = plain_dict(cfg)
    name = data.get("name")
    if name not in LAUNCHERS:
        raise LauncherError(f"launcher.name={name!r} is unknown; allowed: {', '.join(LAUNCHERS)}")
    schema = LAUNCHERS[name][0]
    foreign = sorted(set(data) - set(schema.__dataclass_fields__))
    if foreign:
        raise LauncherError(
            f"launcher field(s) {foreign} do not belong to launcher={name}; its fields: "
            f"{', '.join(schema.__dataclass_fields__)}"
        )
    return schema(**data)


def make_launcher(cfg: DictConfig | dict | Any, *, check: bool = True) -> Launcher:
    """The launcher a config names, checked (for SLURM: the cluster and partition exist) unless `check=False`."""
    typed = launcher_config(cfg)
    launcher = LAUNCHERS[typed.name][1](typed)
    if check:
        launcher.check()
    return launcher


def cancel_recorded(launcher: str, jobs_folder: Path, job_id: str) -> None:
    """Cancel job `job_id` that launcher `launcher` (its name, as recorded in the job log) submitted."""
    LAUNCHERS[launcher][1].cancel_recorded(jobs_folder, job_id)


def check_slurm(partition: str | None) -> list[str]:
    """The cluster's partitions; raises LauncherError when SLURM is unreachable or `partition` is unknown."""
    if shutil.which("sinfo") is None:
        raise LauncherError("launcher=slurm but SLURM is not installed here (no `sinfo` on PATH); use launcher=local")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise LauncherError(
            "launcher=slurm but the SLURM cluster is unreachable: the controller did not answer `sinfo` within 20 s"
        ) from None
    if out.returncode != 0:
        raise LauncherError(f"launcher=slurm but the SLURM cluster is unreachable: {out.stderr.strip()}")
    partitions = sorted({p.strip() for p in out.stdout.split() if p.strip()})
    if partition is not None and partition not in partitions:
        raise LauncherError(f"launcher.partition={partition!r} is unknown; partitions: {', '.join(partitions)}")
    return partitions

"""Launchers: where trials run (local processes, a SLURM cluster, or in-process), built on submitit's own API."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import torch
from omegaconf import DictConfig, OmegaConf


class LauncherError(ValueError):
    """A launcher setting is invalid, or the cluster it names cannot be reached."""


@dataclass
class LocalLauncherConfig:
    """Trials as local processes (submitit's LocalExecutor), at most `max_parallel` at once."""

    name: str = "local"
    max_parallel: int | None = None  # trials at once; null = visible GPUs, or CPU cores (at most 8) without GPUs
    threads_per_trial: int | None = None  # torch CPU threads per trial; null = cores // max_parallel (>= 1)
    gpus_per_trial: int | None = None  # null = 1 when GPUs are visible, else 0
    timeout_min: float = 720.0  # wall-clock limit of one trial job, minutes


@dataclass
class SlurmLauncherConfig:
    """Trials as SLURM jobs: one job array per submission; preemption and timeouts requeue the trial."""

    name: str = "slurm"
    partition: str | None = None  # null = the cluster's default partition
    gpus_per_node: int = 0  # GPUs per trial job (--gpus-per-node)
    cpus_per_task: int = 2  # CPU cores per trial job
    mem_gb: float | None = None  # memory per job, GB; null = the partition's default
    timeout_min: int = 60  # time limit per job, minutes (a job near it is requeued and resumes)
    array_parallelism: int = 16  # array tasks running at once (%N)
    max_parallel: int = 16  # search workers (width search): concurrent jobs that ask -> run -> tell
    nodes: int = 1  # nodes per trial job (DDP across nodes when > 1)
    tasks_per_node: int = 1  # processes per node (one per GPU for DDP)
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    constraint: str | None = None  # --constraint
    additional_parameters: dict[str, Any] = field(
        default_factory=dict
    )  # any other sbatch option, e.g. {mail-type: END}
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ..., source ...)


@dataclass
class DebugLauncherConfig:
    """Trials in the driver's own process, one after another (submitit's DebugExecutor): for a debugger."""

    name: str = "debug"
    max_parallel: int = 1  # always 1


SCHEMAS = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig, "debug": DebugLauncherConfig}


def register_launchers() -> None:
    """Store one schema per launcher, so that a field of another launcher is a composition error."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(group="launcher", name=f"{name}_schema", node=schema)


def to_launcher(cfg: DictConfig | dict | Any) -> Any:
    """The typed launcher config (a field foreign to the chosen launcher is refused, naming both)."""
    if isinstance(cfg, DictConfig):
        data = OmegaConf.to_container(cfg, resolve=True)
    else:
        data = dict(vars(cfg)) if hasattr(cfg, "__dataclass_fields__") else dict(cfg)
    name = data.get("name")
    if name not in SCHEMAS:
        raise LauncherError(f"launcher.name={name!r} is unknown; allowed: {', '.join(SCHEMAS)}")
    schema = SCHEMAS[name]
    foreign = sorted(set(data) - set(schema.__dataclass_fields__))
    if foreign:
        raise LauncherError(
            f"launcher field(s) {foreign} do not belong to launcher={name}; its fields: "
            f"{', '.join(schema.__dataclass_fields__)}"
        )
    return schema(**data)


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_slots(cfg: LocalLauncherConfig) -> tuple[int, int, int]:
    """(max_parallel, threads_per_trial, gpus_per_trial) for this machine."""
    gpus = visible_gpus()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_trial_gpus = cfg.gpus_per_trial if cfg.gpus_per_trial is not None else (1 if gpus else 0)
    parallel = cfg.max_parallel or (max(1, gpus // max(per_trial_gpus, 1)) if per_trial_gpus else min(cores, 8))
    threads = cfg.threads_per_trial or max(1, cores // parallel)
    return parallel, threads, per_trial_gpus


def validate_launcher(cfg: Any) -> Any:
    """Check the launcher before anything is submitted; for SLURM, that the cluster and partition exist."""
    launcher = to_launcher(cfg)
    if launcher.name == "local":
        if launcher.max_parallel is not None and launcher.max_parallel < 1:
            raise LauncherError(f"launcher.max_parallel={launcher.max_parallel} must be >= 1 (or null for auto)")
        if launcher.timeout_min <= 0:
            raise LauncherError(f"launcher.timeout_min={launcher.timeout_min} must be > 0")
        _, _, gpus = local_slots(launcher)
        if gpus > visible_gpus():
            raise LauncherError(f"launcher.gpus_per_trial={gpus} but {visible_gpus()} GPU(s) are visible")
    elif launcher.name == "slurm":
        for key in ("cpus_per_task", "timeout_min", "array_parallelism", "max_parallel", "nodes", "tasks_per_node"):
            if getattr(launcher, key) < 1:
                raise LauncherError(f"launcher.{key}={getattr(launcher, key)} must be >= 1")
        check_slurm(launcher.partition)
    return launcher


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


def make_executor(launcher: Any, folder: Path, *, gpu_ids: list[int] | None = None) -> submitit.Executor:
    """A submitit executor writing its job files under `folder`."""
    folder = Path(folder)
    if launcher.name == "debug":
        return submitit.DebugExecutor(folder=folder)
    if launcher.name == "local":
        ex = submitit.LocalExecutor(folder=folder)
        params: dict[str, Any] = {"timeout_min": launcher.timeout_min}
        if gpu_ids:
            params.update(gpus_per_node=len(gpu_ids), visible_gpus=list(gpu_ids))
        ex.update_parameters(**params)
        return ex
    ex = submitit.SlurmExecutor(folder=folder)
    # Append to the job logs: a requeued (preempted or timed-out) trial keeps the log of its earlier runs.
    extra = {"open-mode": "append", **launcher.additional_parameters}
    ex.update_parameters(
        **({"partition": launcher.partition} if launcher.partition else {}),
        time=launcher.timeout_min,
        cpus_per_task=launcher.cpus_per_task,
        nodes=launcher.nodes,
        ntasks_per_node=launcher.tasks_per_node,
        array_parallelism=launcher.array_parallelism,
        setup=list(launcher.setup),
        **({"gpus_per_node": launcher.gpus_per_node} if launcher.gpus_per_node else {}),
        **({"mem": f"{int(launcher.mem_gb * 1024)}M"} if launcher.mem_gb else {}),
        **{
            k: v
            for k, v in (("account", launcher.account), ("qos", launcher.qos), ("constraint", launcher.constraint))
            if v
        },
        **({"additional_parameters": extra} if extra else {}),
    )
    return ex

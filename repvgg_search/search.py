"""`+sweep=width_search`: an asynchronous multi-objective Optuna search over RepVGG widths, depths and groups.

The driver validates everything, then starts `launcher.max_parallel` worker jobs (local processes, a SLURM job
array, or in-process for launcher=debug). Each worker loops ask -> run trial -> tell on one shared study (a
journal file in the sweep folder, or `search.storage=<RDB URL>`) until the study holds `search.n_trials` trained
trials; no worker waits for another's trial. `python -m repvgg_search.search SWEEP_DIR` joins a study as one more
worker by hand.

Trial kinds (user attribute `kind`), and what counts toward `n_trials`:
  trained, pruned   a training job ran to its end (pruned: stopped early by the pruner)      counts
  infeasible        over the MAC or params budget, or not a valid architecture: no job ran,   does not count
                    recorded COMPLETE with violated constraints (the samplers learn from it)
  duplicate         an architecture already trained (or in training) in this study: no job    does not count
  surplus           asked after every remaining slot was taken by other workers: FAIL          does not count
  failed            the trial raised (e.g. diverged): FAIL                                    does not count
  interrupted       the worker was preempted or timed out: FAIL, and its parameters retried   does not count
A worker killed outright leaves its trial RUNNING; heartbeats fail it after `grace_period` and its parameters are
retried in the same trial folder, resuming from the trial's checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import typing
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import submitit
import torch
from omegaconf import OmegaConf
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from . import records
from .launchers import local_slots, make_executor, visible_gpus
from .models import VARIANTS, ArchConfig, ArchError, arch_config, build_model, reparameterize_model
from .models.arch import PRESETS
from .profile import MAC_CONVENTION, complexity
from .sweep import ACTIVE_STATES, Progress, _interactive, _job_state, base_trial_config
from .sweep_folder import SWEEP_JSON, PlannedTrial, SweepFolder
from .trial import _NOT_IN_ID, TrialInterrupted, run_trial, settings_from_config

_log = logging.getLogger("repvgg_search.search")

# name -> (direction, where the trial result holds it, meaning)
OBJECTIVES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "top1": ("maximize", ("metrics", "top1"), "validation top-1 accuracy, %"),
    "images_per_s": ("maximize", ("speed", "images_per_s"), "deploy-form throughput on the trial's device"),
    "latency_ms": ("minimize", ("speed", "latency_ms"), "deploy-form median batch latency, ms"),
    "macs": ("minimize", ("complexity", "deploy", "macs"), "deploy-form MACs at 3x224x224 (fvcore)"),
    "params": ("minimize", ("complexity", "deploy", "params"), "deploy-form parameters"),
}
SAMPLERS = ("tpe", "nsgaii", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
KIND = "kind"  # trial user attribute: trained | pruned | infeasible | duplicate | surplus | failed | interrupted
TRAINED_KINDS = ("trained", "pruned")
SKIPPED_KINDS = ("infeasible", "duplicate")
RELEASED_KINDS = ("infeasible", "duplicate", "surplus", "failed", "interrupted")  # end without using a slot
TOLD_KINDS = (*TRAINED_KINDS, *RELEASED_KINDS)
HEARTBEAT_ATTR = "repvgg:heartbeat"  # journal storage: unix time of a running trial's last heartbeat
SEARCH_JSON = "search.json"
WORKERS_JSONL = "workers.jsonl"
STAGES = 5
INTERRUPTS = (SystemExit, KeyboardInterrupt, TrialInterrupted, submitit.core.utils.UncompletedJobError)


class SearchError(ValueError):
    """A search setting is invalid or cannot be met; nothing has been launched."""


# -- settings (sweeps/width_search.yaml, `search:`) ------------------------------------------------------------
@dataclass
class BoundsSpec:
    """A width multiplier's range: low, low + step, ..., high (step null: any value in [low, high])."""

    low: float = 0.5  # > 0
    high: float = 1.5  # >= low
    step: float | None = 0.25  # > 0 and divides high - low; null = continuous (not with sampler=grid)


@dataclass
class SpaceSpec:
    """What the search varies; everything else comes from the base config (model=..., variant=..., data=...)."""

    a: BoundsSpec = field(default_factory=lambda: BoundsSpec(0.5, 1.5, 0.25))  # stages 1-3: 64a, 128a, 256a channels
    b: BoundsSpec = field(default_factory=lambda: BoundsSpec(1.0, 2.5, 0.5))  # last stage: 512b channels
    depths: dict[int, list[int]] | None = None  # stage (0-4) -> layer counts to choose from; others: the preset's
    groups: list[int] = field(default_factory=lambda: [1, 2, 4])  # groups of the grouped layers (1 = none)
    preset: str | None = None  # base architecture (depths, grouped layers, ...); null = model.name
    variant: str | None = None  # block variant; null = variant.name


@dataclass
class ConstraintSpec:
    """Budgets; null = none. MACs and params are the deploy form's, counted by fvcore at 3x224x224 with the
    trial's classifier (what result.json records as complexity.deploy): known before training."""

    max_gmacs: float | None = None  # 1e9 MACs (1 multiply-add = 1); over-budget candidates are never trained
    max_mparams: float | None = None  # 1e6 parameters; over-budget candidates are never trained
    max_latency_ms: float | None = None  # median batch latency (speed.*) on the trial's device: known after training


@dataclass
class SearchSettings:
    """The width search: space, objectives, budgets, sampler, and how many trials to train."""

    space: SpaceSpec = field(default_factory=SpaceSpec)
    objectives: list[str] = field(default_factory=lambda: ["top1", "images_per_s"])  # see OBJECTIVES
    constraints: ConstraintSpec = field(default_factory=ConstraintSpec)
    sampler: str = "tpe"  # tpe | nsgaii | random | grid
    sampler_options: dict[str, Any] | None = None  # keyword arguments of the optuna sampler; null = none
    pruner: str = "none"  # none | median | hyperband: stop trials early on per-epoch top1 (objectives: [top1])
    n_trials: int = 12  # trained trials (completed or pruned) the study ends with
    seed: int = 0  # seeds the samplers (each worker draws from its own stream)
    storage: str | None = None  # null = a journal file in the sweep folder; an RDB URL (postgresql://...) or a path
    study_name: str | None = None  # null = the sweep's name; also the wandb group of every trial
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int = 180  # seconds without a heartbeat after which a running trial is failed and retried
    max_retry: int = 3  # retries of a trial whose worker died or was preempted
    max_failed: int | None = None  # stop after this many trials raised; null = n_trials
    max_skipped: int | None = None  # stop after this many infeasible/duplicate proposals; null = max(100, 10 n_trials)


def search_settings(node: Any) -> SearchSettings:
    """The validated settings of a `search:` node (DictConfig or dict); SearchError names the bad key."""
    if node is None:
        raise SearchError("sweep.kind=search needs a `search:` section (see sweeps/width_search.yaml)")
    data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else copy.deepcopy(dict(node))
    _check_keys(data, SearchSettings, "search")
    space = data.get("space") or {}
    if isinstance(space, dict) and isinstance(space.get("depths"), dict):
        space["depths"] = _stage_keys(space["depths"])
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SearchSettings), data))
    except Exception as exc:  # omegaconf's type errors name the key
        raise SearchError(f"search: {str(exc).splitlines()[0]} ({_full_key(exc)})") from None
    validate_settings(typed)
    return typed


def _check_keys(data: Any, schema: type, path: str) -> None:
    if not isinstance(data, dict):
        return
    hints = typing.get_type_hints(schema)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise SearchError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(hints)}")
    for key, value in data.items():
        if dataclasses.is_dataclass(hints[key]):
            _check_keys(value, hints[key], f"{path}.{key}")


def _stage_keys(depths: dict) -> dict[int, Any]:
    try:
        return {int(k): v for k, v in depths.items()}
    except (TypeError, ValueError):
        raise SearchError(f"search.space.depths: keys must be stage indices 0-4, got {sorted(depths)}") from None


def _full_key(exc: Exception) -> str:
    return f"key search.{getattr(exc, 'full_key', '?')}"


def validate_settings(s: SearchSettings) -> None:
    """Refuse settings no search can run with (before anything is created or launched)."""
    _check_space(s.space, s.sampler)
    _check_objectives(s)
    if s.sampler not in SAMPLERS:
        raise SearchError(f"search.sampler={s.sampler!r} is unknown; allowed: {', '.join(SAMPLERS)}")
    for key in ("max_gmacs", "max_mparams", "max_latency_ms"):
        value = getattr(s.constraints, key)
        if value is not None and not value > 0:
            raise SearchError(f"search.constraints.{key}={value} must be > 0 (or null for no budget)")
    for key in ("n_trials", "heartbeat_interval", "grace_period", "max_failed", "max_skipped"):
        value = getattr(s, key)
        if value is not None and value < 1:
            raise SearchError(f"search.{key}={value} must be >= 1")
    if s.grace_period <= s.heartbeat_interval:
        raise SearchError(f"search.grace_period={s.grace_period} must exceed heartbeat_interval={s.heartbeat_interval}")
    if s.max_retry < 0:
        raise SearchError(f"search.max_retry={s.max_retry} must be >= 0")
    size = space_size(s.space)
    if size is not None and s.n_trials > size:
        raise SearchError(f"search.n_trials={s.n_trials} but the space holds only {size} distinct candidates")


def _check_objectives(s: SearchSettings) -> None:
    if not s.objectives:
        raise SearchError(f"search.objectives is empty; choose from {', '.join(OBJECTIVES)}")
    for name in s.objectives:
        if name not in OBJECTIVES:
            raise SearchError(f"search.objectives: {name!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
    if len(set(s.objectives)) != len(s.objectives):
        raise SearchError(f"search.objectives={s.objectives} lists an objective twice")
    if s.pruner not in PRUNERS:
        raise SearchError(f"search.pruner={s.pruner!r} is unknown; allowed: {', '.join(PRUNERS)}")
    if s.pruner != "none" and s.objectives != ["top1"]:
        raise SearchError(
            f"search.pruner={s.pruner} prunes on per-epoch top1, so it needs objectives: [top1] (a single "
            f"objective); got {s.objectives}"
        )


def _check_space(space: SpaceSpec, sampler: str) -> None:
    for name in ("a", "b"):
        _check_bounds(getattr(space, name), f"search.space.{name}", sampler)
    if not space.groups:
        raise SearchError("search.space.groups is empty; list at least one of 1, 2, 4")
    if any(g < 1 for g in space.groups) or len(set(space.groups)) != len(space.groups):
        raise SearchError(f"search.space.groups={space.groups} must be distinct positive integers, e.g. [1, 2, 4]")
    for stage, choices in (space.depths or {}).items():
        if not 0 <= stage < STAGES:
            raise SearchError(f"search.space.depths: stage {stage} does not exist; stages are 0-4")
        if not choices or any(d < 1 for d in choices):
            raise SearchError(f"search.space.depths.{stage}={choices} must list positive layer counts")
    if space.preset is not None and space.preset not in PRESETS:
        raise SearchError(f"search.space.preset={space.preset!r} is unknown; allowed: {', '.join(PRESETS)}")
    if space.variant is not None and space.variant not in VARIANTS:
        raise SearchError(f"search.space.variant={space.variant!r} is unknown; allowed: {', '.join(VARIANTS)}")


def _check_bounds(b: BoundsSpec, path: str, sampler: str) -> None:
    if not (math.isfinite(b.low) and math.isfinite(b.high)) or b.low <= 0:
        raise SearchError(f"{path}: low={b.low}, high={b.high}: bounds must be finite and low > 0")
    if b.low > b.high:
        raise SearchError(f"{path}: inverted bounds, low={b.low} > high={b.high}")
    if b.step is None:
        if sampler == "grid":
            raise SearchError(f"{path}.step is null but sampler=grid needs a step")
        if b.low == b.high:
            raise SearchError(f"{path}: empty range low = high = {b.low} without a step; set step or widen it")
        return
    if not b.step > 0:
        raise SearchError(f"{path}.step={b.step} must be > 0")
    n = (b.high - b.low) / b.step
    if abs(n - round(n)) > 1e-6:
        top = b.low + math.floor(n + 1e-6) * b.step
        raise SearchError(
            f"{path}: high - low = {b.high - b.low:g} is not a multiple of step={b.step}; e.g. high={top:g}"
        )


def axis_values(b: BoundsSpec) -> list[float] | None:
    """The values a stepped multiplier takes (None when continuous)."""
    if b.step is None:
        return None
    return [round(b.low + i * b.step, 10) for i in range(round((b.high - b.low) / b.step) + 1)]


def space_size(space: SpaceSpec) -> int | None:
    """Distinct candidates in the space (None when a multiplier is continuous)."""
    a, b = axis_values(space.a), axis_values(space.b)
    if a is None or b is None:
        return None
    return len(a) * len(b) * len(space.groups) * math.prod(len(c) for c in (space.depths or {}).values())


# -- candidates: parameters -> trial config ---------------------------------------------------------------------
def suggest(trial: optuna.Trial, space: SpaceSpec) -> dict[str, Any]:
    """Draw a candidate (a retried trial gets its original parameters back)."""
    params = {
        "a": trial.suggest_float("a", space.a.low, space.a.high, step=space.a.step),
        "b": trial.suggest_float("b", space.b.low, space.b.high, step=space.b.step),
        "groups": trial.suggest_categorical("groups", list(space.groups)),
    }
    for stage, choices in sorted((space.depths or {}).items()):
        if len(choices) > 1:
            params[f"depth{stage}"] = trial.suggest_categorical(f"depth{stage}", list(choices))
    return params


def grid_space(space: SpaceSpec) -> dict[str, list[Any]]:
    """The GridSampler's search space: the same names and values `suggest` draws."""
    grid: dict[str, list[Any]] = {"a": axis_values(space.a), "b": axis_values(space.b), "groups": list(space.groups)}
    for stage, choices in sorted((space.depths or {}).items()):
        if len(choices) > 1:
            grid[f"depth{stage}"] = list(choices)
    return grid


def candidate_config(base: dict[str, Any], space: SpaceSpec, params: dict[str, Any], group: str) -> dict[str, Any]:
    """The full trial config of a candidate: the base config with the searched fields replaced."""
    cfg = copy.deepcopy(base)
    model = cfg["model"]
    model["name"] = space.preset or model["name"]
    cfg["variant"]["name"] = space.variant or cfg["variant"]["name"]
    # Rounded so that 0.1 * 3 and 0.3 are the same trial (the trial id hashes the config).
    model.update(a=round(float(params["a"]), 10), b=round(float(params["b"]), 10), groups=int(params["groups"]))
    if space.depths:
        depths = list(model.get("depths") or arch_config(model["name"]).depths)
        for stage, choices in space.depths.items():
            depths[stage] = int(params.get(f"depth{stage}", choices[0]))
        model["depths"] = depths
    cfg["tracking"]["group"] = group
    return cfg


@functools.lru_cache(maxsize=512)
def deploy_size(arch: ArchConfig) -> tuple[int, int]:
    """(MACs, params) of the deploy form at 3x224x224, as the trial counts them, before any training.

    The model is built and converted on the meta device (shapes only, no weights) and counted with fvcore's rules
    (`complexity(..., method="meta")`): milliseconds, even for the largest candidates.
    """
    with torch.device("meta"):
        model = build_model(arch).eval()
    if VARIANTS[arch.variant].reparameterizable:
        model = reparameterize_model(model)
    c = complexity(model, (3, 224, 224), method="meta")
    return int(c["macs"]), int(c["params"])


def budget_violations(c: ConstraintSpec, macs: int, params: int) -> dict[str, float]:
    """Relative excess over each MAC/params budget (> 0: violated, <= 0: met), for the budgets that are set."""
    out = {}
    if c.max_gmacs is not None:
        out["gmacs"] = macs / 1e9 / c.max_gmacs - 1
    if c.max_mparams is not None:
        out["mparams"] = params / 1e6 / c.max_mparams - 1
    return out


# -- the plan: everything a worker needs (picklable; search.json in the sweep folder) ----------------------------
@dataclass
class SearchPlan:
    """A validated search: settings, base trial config, storage, folder, workers."""

    folder: str
    name: str  # sweep name
    study_name: str
    storage: str  # RDB URL, or the journal file's path
    settings: SearchSettings
    base: dict[str, Any]  # the base trial config (resolved)
    definition: str  # digest of what determines the study's results (a changed one needs a new folder/study)
    workers: int = 1
    threads: int | None = None  # torch threads per trial (local launcher)
    poll_s: float = 2.0
    smallest: dict[str, Any] = field(default_factory=dict)  # the space's smallest candidate (shown in the plan)

    @property
    def sweep_folder(self) -> SweepFolder:
        return SweepFolder(Path(self.folder))

    @property
    def is_rdb(self) -> bool:
        return is_rdb_url(self.storage)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.settings.objectives]

    @property
    def budget(self) -> Budget:
        s = self.settings
        return Budget(s.n_trials, s.max_failed or s.n_trials, s.max_skipped or max(100, 10 * s.n_trials))

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["storage"] = mask_url(self.storage)  # credentials stay out of the results folder
        if data["settings"]["storage"]:
            data["settings"]["storage"] = mask_url(data["settings"]["storage"])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], storage: str | None = None) -> SearchPlan:
        data = {**data, "settings": search_settings(data["settings"])}
        if storage:
            data["storage"] = storage
        return cls(**data)


@dataclass(frozen=True)
class Budget:
    """When workers stop: `n_trials` trained trials, or too many failures or skipped proposals."""

    n_trials: int
    max_failed: int
    max_skipped: int

    def stop_reason(self, counts: Counter) -> str | None:
        if counts["trained"] >= self.n_trials:
            return f"the study holds its {self.n_trials} trained trials"
        if counts["failed"] >= self.max_failed:
            return f"{counts['failed']} trials failed (search.max_failed={self.max_failed}): see their result.json"
        if counts["skipped"] >= self.max_skipped:
            return (
                f"{counts['skipped']} proposals were infeasible or already trained (search.max_skipped="
                f"{self.max_skipped}): the space holds too few feasible new candidates"
            )
        return None


def plan_search(cfg: Any, folder: SweepFolder, launcher: Any) -> SearchPlan:
    """Validate the whole search (settings, base config, budgets, storage) before anything is created."""
    settings = search_settings(cfg.get("search"))
    base = base_trial_config(cfg)
    base = OmegaConf.to_container(base, resolve=True)
    workers, threads = _workers(launcher)
    if threads is not None and base.get("threads") is None:
        base["threads"] = threads
    name = cfg.sweep.name
    study_name = settings.study_name or name
    storage = settings.storage or str((folder.root / "study.journal").resolve())
    if not is_rdb_url(storage):
        storage = str(Path(storage).expanduser().resolve())
    plan = SearchPlan(
        str(folder.root),
        name,
        study_name,
        storage,
        settings,
        base,
        definition_digest(settings, base),
        workers,
        threads,
        float(cfg.sweep.poll_s),
    )
    make_sampler(plan, settings.seed)  # refuses sampler_options the sampler does not take
    plan.smallest = check_budgets(plan)
    check_storage(plan)
    return plan


def _workers(launcher: Any) -> tuple[int, int | None]:
    if launcher.name == "local":
        workers, threads, gpus = local_slots(launcher)
        if gpus and workers * gpus > visible_gpus():
            raise SearchError(
                f"launcher.max_parallel={workers} workers x {gpus} GPU(s) each, but {visible_gpus()} GPU(s) are visible"
            )
        return workers, threads
    return (1, None) if launcher.name == "debug" else (launcher.max_parallel, None)


def definition_digest(s: SearchSettings, base: dict[str, Any]) -> str:
    """What determines the study's results: the base trial config and the search, not its size or plumbing."""
    trial_part = {k: v for k, v in base.items() if k not in ("tracking", "threads", "device", "output_dir")}
    trial_part["data"] = {k: v for k, v in base["data"].items() if k not in _NOT_IN_ID["data"]}
    search_part = {
        k: v
        for k, v in dataclasses.asdict(s).items()
        if k in ("space", "objectives", "constraints", "sampler", "sampler_options", "pruner", "seed")
    }
    text = json.dumps({"trial": trial_part, "search": search_part}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _arch_of(plan: SearchPlan, params: dict[str, Any]) -> ArchConfig:
    return settings_from_config(candidate_config(plan.base, plan.settings.space, params, plan.study_name)).arch


def corner_candidates(space: SpaceSpec) -> list[dict[str, Any]]:
    """The smallest candidates: lowest multipliers and depths, for each groups value (largest first)."""
    depths = {f"depth{k}": min(v) for k, v in (space.depths or {}).items() if len(v) > 1}
    a_values = (axis_values(space.a) or [space.a.low])[:8]
    b_values = (axis_values(space.b) or [space.b.low])[:8]
    # Small multipliers may leave channels that a groups value does not divide: try the next ones up.
    return [
        {"a": a, "b": b, "groups": g, **depths}
        for g in sorted(space.groups, reverse=True)
        for a in a_values
        for b in b_values
    ]


def check_budgets(plan: SearchPlan) -> dict[str, Any]:
    """The smallest valid candidate's size; SearchError when no candidate can meet a MAC or params budget."""
    sizes, errors = [], []
    seen: set[int] = set()
    for params in corner_candidates(plan.settings.space):
        if params["groups"] in seen:
            continue
        try:
            arch = _arch_of(plan, params)
        except ArchError as exc:  # other bad base settings (data, train, ...) are reported as they are
            errors.append(str(exc))
            continue
        seen.add(params["groups"])
        sizes.append((*deploy_size(arch), params))
    if not sizes:
        raise SearchError(f"no corner of search.space is a valid architecture: {errors[0]}")
    macs, params, at = min(sizes, key=lambda t: t[0])
    _refuse_unreachable(plan.settings.constraints, macs, min(t[1] for t in sizes), at)
    return {"macs": macs, "params": min(t[1] for t in sizes), "params_at": at}


def _refuse_unreachable(c: ConstraintSpec, macs: int, params: int, at: dict[str, Any]) -> None:
    where = ", ".join(f"{k}={v}" for k, v in at.items())
    hint = "raise the budget or lower search.space.a.low / b.low / the depth choices"
    if c.max_gmacs is not None and macs / 1e9 > c.max_gmacs:
        raise SearchError(
            f"search.constraints.max_gmacs={c.max_gmacs} cannot be met: the smallest candidate of the space "
            f"({where}) has {macs / 1e9:.4g} GMACs (deploy form, fvcore, 3x224x224); {hint}"
        )
    if c.max_mparams is not None and params / 1e6 > c.max_mparams:
        raise SearchError(
            f"search.constraints.max_mparams={c.max_mparams} cannot be met: the smallest candidate of the space "
            f"has {params / 1e6:.4g} M parameters (deploy form); {hint}"
        )


# -- storage ---------------------------------------------------------------------------------------------------
def is_rdb_url(storage: str) -> bool:
    return "://" in storage


def mask_url(storage: str) -> str:
    if not is_rdb_url(storage):
        return storage
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: show its scheme only
        return storage.split("://")[0] + "://..."


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats (it has none of its own): a heartbeat is a trial system attribute,
    and a RUNNING trial whose last one is older than `grace_period` is stale, as with RDBStorage."""

    def __init__(self, path: str, heartbeat_interval: int, grace_period: int, callback: Callable | None = None) -> None:
        super().__init__(JournalFileBackend(path))
        self._heartbeat_interval, self._grace_period, self._stale_callback = heartbeat_interval, grace_period, callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if now - _last_beat(t) > self._grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable | None:
        return self._stale_callback


def _last_beat(t: FrozenTrial) -> float:
    # A retried trial inherits its original's system attributes: its own start time counts too.
    started = t.datetime_start.timestamp() if t.datetime_start else 0.0
    return max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)


def make_storage(plan: SearchPlan) -> optuna.storages.BaseStorage:
    """The study's storage, with heartbeats and retries of stale trials."""
    s = plan.settings
    with _quiet():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=s.max_retry)
        if not plan.is_rdb:
            Path(plan.storage).parent.mkdir(parents=True, exist_ok=True)
            return HeartbeatJournalStorage(plan.storage, s.heartbeat_interval, s.grace_period, retry)
        connect = {"connect_args": {"connect_timeout": 10}} if plan.storage.startswith("postgresql") else {}
        return RDBStorage(
            plan.storage,
            engine_kwargs=connect,
            heartbeat_interval=s.heartbeat_interval,
            grace_period=s.grace_period,
            heartbeat_stale_trial_callback=retry,
        )


def check_storage(plan: SearchPlan) -> None:
    """Open the storage once (an RDB: connect, create the tables), so that a bad URL fails before any worker."""
    if not plan.is_rdb:
        _check_writable(Path(plan.storage).parent)
        return
    if plan.storage.startswith("sqlite"):
        _log.warning("search.storage is SQLite: not recommended for parallel workers (use PostgreSQL or the journal)")
    try:
        storage = make_storage(plan)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"search.storage={mask_url(plan.storage)} cannot be used: {first}") from None
    storage.engine.dispose()


def _check_writable(folder: Path) -> None:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise SearchError(f"search.storage: cannot write the journal file under {folder} ({existing} is read-only)")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Heartbeats and retries are 'experimental' in optuna; they are what this design relies on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # ask/tell workers beat themselves (see `heartbeat`), which this warning does not know.
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        yield


# -- the study: samplers, pruners, opening -------------------------------------------------------------------------
def make_sampler(plan: SearchPlan, seed: int | None) -> optuna.samplers.BaseSampler:
    s = plan.settings
    opts = dict(s.sampler_options or {})
    try:
        if s.sampler == "tpe":
            opts.setdefault("n_startup_trials", min(10, max(3, s.n_trials // 4)))
            return optuna.samplers.TPESampler(seed=seed, **opts)  # constant_liar (the default) suits parallel workers
        if s.sampler == "nsgaii":
            opts.setdefault("population_size", min(50, max(4, s.n_trials // 4)))
            return optuna.samplers.NSGAIISampler(seed=seed, **opts)
        if s.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed, **opts)
        return optuna.samplers.GridSampler(grid_space(s.space), seed=seed, **opts)
    except (TypeError, ValueError) as exc:
        raise SearchError(f"search.sampler_options={s.sampler_options} do not fit sampler={s.sampler}: {exc}") from None


def make_pruner(plan: SearchPlan) -> optuna.pruners.BasePruner:
    pruner = plan.settings.pruner
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(plan.base["train"]["epochs"]))
    return optuna.pruners.NopPruner()


def worker_seed(seed: int, worker: int, finished: int) -> int:
    """Each worker (and each restart of it) draws from its own stream: equal seeds would propose equal candidates."""
    return int(np.random.SeedSequence([seed, worker, finished]).generate_state(1)[0])


def prepare_study(plan: SearchPlan) -> optuna.Study:
    """Create the study, or check that the existing one was made by this same search definition."""
    with _quiet():
        study = optuna.create_study(
            storage=make_storage(plan), study_name=plan.study_name, directions=plan.directions, load_if_exists=True
        )
    found = study.user_attrs.get("definition")
    if found is None:
        study.set_user_attr("definition", plan.definition)
        study.set_user_attr("objectives", plan.settings.objectives)
        study.set_user_attr("sweep_folder", plan.folder)
    elif found != plan.definition:
        raise SearchError(
            f"study {plan.study_name!r} in {mask_url(plan.storage)} was made by another search definition "
            f"(space, objectives, budgets, sampler or base config differ); its trials are kept. Use "
            f"search.study_name=NAME (and sweep.dir=DIR) for this definition"
        )
    return study


def open_study(plan: SearchPlan, worker: int) -> optuna.Study:
    """A worker's handle on the study, with its own sampler stream."""
    storage = make_storage(plan)
    with _quiet():
        study_id = storage.get_study_id_from_name(plan.study_name)
        done = len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
        sampler = make_sampler(plan, worker_seed(plan.settings.seed, worker, done))
        return optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler, pruner=make_pruner(plan))


# -- the worker loop: ask -> run -> tell, no barrier ------------------------------------------------------------
def holds_slot(t: FrozenTrial) -> bool:
    """Whether a trial takes one of the n_trials slots: trained, or running/queued towards training."""
    kind = t.user_attrs.get(KIND)
    if t.state == TrialState.WAITING:
        return True
    if t.state == TrialState.RUNNING:  # "trained" is set just before the tell: the slot stays taken
        return kind not in RELEASED_KINDS
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) and kind in TRAINED_KINDS


def tally(trials: list[FrozenTrial]) -> Counter:
    """trained, holding (slots taken), waiting (queued retries), running, failed, skipped, surplus, lost."""
    counts: Counter = Counter()
    for t in trials:
        kind = t.user_attrs.get(KIND)
        finished = t.state.is_finished()
        counts["holding"] += holds_slot(t)
        counts["waiting"] += t.state == TrialState.WAITING
        counts["running"] += t.state == TrialState.RUNNING
        counts["trained"] += finished and kind in TRAINED_KINDS
        counts["failed"] += finished and kind == "failed"
        counts["skipped"] += finished and kind in SKIPPED_KINDS
        counts["infeasible"] += finished and kind == "infeasible"
        counts["duplicate"] += finished and kind == "duplicate"
        counts["surplus"] += finished and kind == "surplus"
        counts["lost"] += t.state == TrialState.FAIL and kind not in TOLD_KINDS  # a dead worker's: retried
    return counts


def claim_slot(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """Whether this trial may train: fewer than n_trials slot holders come before it.

    Trial numbers order the claims, so workers asking at the same moment agree on who gets the last slots and
    the study never ends with more than n_trials trained trials.
    """
    before = sum(holds_slot(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number)
    return before < n_trials


def record(
    study: optuna.Study,
    trial: optuna.Trial,
    kind: str,
    values: list[float] | None = None,
    state: TrialState = TrialState.COMPLETE,
) -> str:
    """Tell the study how a trial ended (its kind first, so that counting never sees it half told)."""
    try:
        trial.set_user_attr(KIND, kind)
        study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker declared this trial stale (missed heartbeats) and queued a retry, which will find the
        # finished trial folder and report it without training again.
        _log.warning("trial %d was failed as stale by another worker; its retry reuses the result", trial.number)
        return "lost"
    return kind


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Beat for a running trial from a thread, so that a dead worker's trial can be told apart."""
    storage = study._storage  # optuna has no public accessor; ask/tell users must beat themselves
    if not is_heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is what heartbeats tolerate
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(study: optuna.Study) -> None:
    """Fail trials whose worker stopped beating; the retry callback queues their parameters again."""
    with _quiet():
        optuna.storages.fail_stale_trials(study)


Evaluate = Callable[[optuna.Study, optuna.Trial], str]


def search_loop(study: optuna.Study, budget: Budget, evaluate: Evaluate, *, poll_s: float = 2.0) -> tuple[Counter, str]:
    """Ask -> evaluate (which tells) until the study holds `budget.n_trials` trained trials.

    A worker only waits when every remaining slot is held by a running trial: at the very end, or while a dead
    worker's trial awaits its heartbeat deadline (after which it is retried here).
    """
    mine: Counter = Counter()  # the kinds of the trials this worker told
    while True:
        fail_stale(study)
        counts = tally(study.get_trials(deepcopy=False))
        reason = budget.stop_reason(counts)
        if reason is not None:
            _log.info("worker stops: %s", reason)
            return mine, reason
        if counts["holding"] >= budget.n_trials and not counts["waiting"]:
            time.sleep(poll_s)
            continue
        with _quiet():
            trial = study.ask()
        with heartbeat(study, trial):
            mine[evaluate(study, trial)] += 1


# -- one candidate: check, train (or reuse), tell, record --------------------------------------------------------
class CandidateRunner:
    """Evaluates asked trials for one worker: budgets, slot, duplicate check, training, records."""

    def __init__(self, plan: SearchPlan, worker: int) -> None:
        self.plan, self.worker, self.s = plan, worker, plan.settings
        self.folder = plan.sweep_folder
        self.base = plan.base

    def __call__(self, study: optuna.Study, trial: optuna.Trial) -> str:
        params = suggest(trial, self.s.space)
        config = candidate_config(self.base, self.s.space, params, self.plan.study_name)
        try:
            settings = settings_from_config(config)
        except ArchError as exc:  # e.g. groups that do not divide a layer's channels
            trial.set_constraint("valid", 1.0)
            trial.set_user_attr("error", str(exc))
            return record(study, trial, "infeasible", self._worst(None))
        trial.set_user_attr("trial_id", settings.trial_id)
        macs, n_params = deploy_size(settings.arch)
        over = budget_violations(self.s.constraints, macs, n_params)
        for key, value in over.items():
            trial.set_constraint(key, value)
        if any(v > 0 for v in over.values()):
            return self._infeasible(study, trial, settings, params, (macs, n_params), over)
        if not claim_slot(study, trial, self.s.n_trials):
            return record(study, trial, "surplus", state=TrialState.FAIL)
        write_config(self.folder.trial_dir(settings.trial_id), settings.config)
        with trial_lock(self.folder.trial_dir(settings.trial_id)) as mine:
            if not mine:  # another worker is training this very architecture now
                return record(study, trial, "duplicate", state=TrialState.FAIL)
            earlier = _trained_with(study, settings.trial_id, trial.number)
            if earlier is not None:
                trial.set_user_attr("duplicate_of", earlier.number)
                if "latency_ms" in earlier.constraints:  # the budgets' constraints are set above already
                    trial.set_constraint("latency_ms", earlier.constraints["latency_ms"])
                return record(study, trial, "duplicate", list(earlier.values))
            return self._train(study, trial, settings, params)

    def _worst(self, size: tuple[int, int] | None) -> list[float]:
        """Objective values of a candidate never trained: the worst for unknowns, the counts where known."""
        known = {"macs": size[0], "params": size[1]} if size else {}
        return [float(known.get(o, 0.0 if OBJECTIVES[o][0] == "maximize" else math.inf)) for o in self.s.objectives]

    def _infeasible(self, study, trial, settings, params, size, over) -> str:
        values = self._worst(size)
        reason = "; ".join(f"{k} over budget by {v:+.1%}" for k, v in over.items() if v > 0)
        trial.set_user_attr("error", reason)
        write_config(self.folder.trial_dir(settings.trial_id), settings.config)
        path = self.folder.trial_dir(settings.trial_id) / records.RESULT
        if (records.read_json(path) or {}).get("status") != "completed":
            records.write_json(
                path, infeasible_record(settings, size, reason, self._search(trial, "infeasible", values, over))
            )
        return record(study, trial, "infeasible", values)

    def _train(self, study, trial, settings, params) -> str:
        trial_dir = self.folder.trial_dir(settings.trial_id)
        trial.set_user_attr(KIND, "training")
        try:
            result = self._run(trial, settings, trial_dir)
        except optuna.TrialPruned:
            self._annotate(trial_dir, self._search(trial, "pruned", None, {}), status="pruned")
            return record(study, trial, "pruned", state=TrialState.PRUNED)
        except INTERRUPTS:
            self._interrupted(study, trial)
            raise
        except Exception as exc:
            _log.error("trial %s (%s) failed: %s", settings.trial_id, params, exc)
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            self._annotate(trial_dir, self._search(trial, "failed", None, {}))
            return record(study, trial, "failed", state=TrialState.FAIL)
        return self._finish(study, trial, result, trial_dir)

    def _run(self, trial: optuna.Trial, settings, trial_dir: Path) -> dict[str, Any]:
        on_epoch = _epoch_reporter(trial) if self.s.pruner != "none" else None
        return run_trial(settings, trial_dir, progress=False, on_epoch=on_epoch)

    def _finish(self, study, trial, result: dict[str, Any], trial_dir: Path) -> str:
        values = [_get(result, OBJECTIVES[o][1]) for o in self.s.objectives]
        if any(v is None for v in values):  # e.g. a record from an older runner
            missing = [o for o, v in zip(self.s.objectives, values) if v is None]
            trial.set_user_attr("error", f"the trial's result.json has no value for {missing}")
            return record(study, trial, "failed", state=TrialState.FAIL)
        values = [float(v) for v in values]
        over = budget_violations(self.s.constraints, *_result_size(result))
        latency = _get(result, ("speed", "latency_ms"))
        if self.s.constraints.max_latency_ms is not None and latency is not None:
            over["latency_ms"] = latency / self.s.constraints.max_latency_ms - 1
            trial.set_constraint("latency_ms", over["latency_ms"])
        self._annotate(trial_dir, self._search(trial, "trained", values, over))
        return record(study, trial, "trained", values)

    def _interrupted(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Preemption or timeout: fail the trial and queue its parameters at once (the checkpoint stays)."""
        with contextlib.suppress(Exception):
            if record(study, trial, "interrupted", state=TrialState.FAIL) == "interrupted":
                frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
                with _quiet():
                    RetryHeartbeatStaleTrialCallback(max_retry=self.s.max_retry)(study, frozen)

    def _search(self, trial: optuna.Trial, kind: str, values, over: dict[str, float]) -> dict[str, Any]:
        """The `search` block of the trial's result.json (what analysis reads)."""
        return {
            "study": self.plan.study_name,
            "number": trial.number,
            "state": {"trained": "COMPLETE", "infeasible": "COMPLETE", "pruned": "PRUNED"}.get(kind, "FAIL"),
            "kind": kind,
            "feasible": all(v <= 0 for v in over.values()) if kind in ("trained", "infeasible") else None,
            "values": values,
            "objectives": list(self.s.objectives),
            "directions": self.plan.directions,
            "params": dict(trial.params),
            "constraints": over,
            "retry_of": trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial"),
            "worker": self.worker,
        }

    @staticmethod
    def _annotate(trial_dir: Path, search: dict[str, Any], status: str | None = None) -> None:
        path = trial_dir / records.RESULT
        result = records.read_json(path) or {"schema_version": records.SCHEMA_VERSION}
        result["search"] = search
        if status is not None:
            result["status"] = status
        records.write_json(path, result)


def _epoch_reporter(trial: optuna.Trial) -> Callable[[int, dict[str, Any]], None]:
    def on_epoch(epoch: int, row: dict[str, Any]) -> None:
        trial.report(float(row["val_top1"]), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} (val top1 {row['val_top1']:.2f}%)")

    return on_epoch


def _trained_with(study: optuna.Study, trial_id: str, number: int) -> FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.user_attrs.get("trial_id") == trial_id and t.user_attrs.get(KIND) == "trained":
            return t
    return None


def _get(d: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _result_size(result: dict[str, Any]) -> tuple[int, int]:
    return int(_get(result, ("complexity", "deploy", "macs"))), int(_get(result, ("complexity", "deploy", "params")))


def infeasible_record(settings: Any, size: tuple[int, int], reason: str, search: dict[str, Any]) -> dict[str, Any]:
    """result.json of a candidate that was never trained because it breaks a budget."""
    arch, spec = settings.arch, VARIANTS[settings.arch.variant]
    return {
        "schema_version": records.SCHEMA_VERSION,
        "trial_id": settings.trial_id,
        "status": "infeasible",
        "group": settings.tracking.group,
        "tags": [settings.preset, arch.variant],
        "arch": {
            "preset": settings.preset,
            **dataclasses.asdict(arch),
            "widths": list(arch.widths),
            "reparameterizable": spec.reparameterizable,
            "plain": spec.plain,
        },
        "seed": settings.seed,
        "config": settings.config,
        "complexity": {
            "input_size": [3, 224, 224],
            "convention": MAC_CONVENTION,
            "deploy": {"macs": size[0], "params": size[1]},
            "deploy_is_train_form": not spec.reparameterizable,
        },
        "error": reason,
        "search": search,
    }


def write_config(trial_dir: Path, config: dict[str, Any]) -> None:
    """The candidate's config.yaml, before anything runs (workers never touch the sweep-wide plan.json: the
    driver writes it when collecting, as its only writer)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    if not (trial_dir / records.CONFIG).exists():
        (trial_dir / records.CONFIG).write_text(OmegaConf.to_yaml(config))


@contextlib.contextmanager
def trial_lock(trial_dir: Path) -> Iterator[bool]:
    """Hold an exclusive lock on a trial folder while training in it (yields False when another process holds it).

    flock locks belong to the open file, so they also exclude threads, and die with a killed process.
    """
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / ".search.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def worker_loop(plan: SearchPlan, worker: int = 0) -> dict[str, Any]:
    """One worker: loop on the study until it holds n_trials trained trials; returns what this worker did."""
    study = open_study(plan, worker)
    kinds, reason = search_loop(study, plan.budget, CandidateRunner(plan, worker), poll_s=plan.poll_s)
    return {"worker": worker, "told": dict(kinds), "stopped": reason}


class SearchWorker(submitit.helpers.Checkpointable):
    """A worker job for submitit; on preemption or timeout it is requeued and rejoins the study."""

    def __init__(self, plan: SearchPlan, worker: int) -> None:
        self.plan, self.worker = plan, worker

    def __call__(self) -> dict[str, Any]:
        if not logging.getLogger().handlers:  # a batch job: log lines on stderr (the job's log file)
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return worker_loop(self.plan, self.worker)


# -- the driver -----------------------------------------------------------------------------------------------------
def run_search(cfg: Any, folder: SweepFolder, launcher: Any) -> dict[str, Any]:
    """`sweep.kind=search`: validate, create or continue the study, run the workers, collect; returns a summary."""
    plan = plan_search(cfg, folder, launcher)
    resumed = claim_search_folder(plan)
    if cfg.sweep.dry_run:
        print_plan(plan, resumed, None)
        return dry_run(plan)
    study = prepare_study(plan)
    print_plan(plan, resumed, study)
    if cfg.sweep.detach and launcher.name == "local" and not os.environ.get("REPVGG_SWEEP_BACKGROUND"):
        from .sweep import detach_local

        return detach_local(folder)
    return drive(plan, launcher, cfg.sweep, study)


def claim_search_folder(plan: SearchPlan) -> bool:
    """sweep.json (kind search) and search.json; refuses a folder that holds another sweep or search."""
    folder = plan.sweep_folder
    existing = folder.read_definition()
    if existing is not None and existing.get("search_definition") != plan.definition:
        what = "another search definition" if existing.get("kind") == "search" else f"a {existing.get('kind')} sweep"
        raise SearchError(
            f"sweep folder {folder.root} holds {what} of sweep {existing.get('name')!r}; its results are kept "
            f"untouched. Rerun with the same settings to continue it, or use "
            f"sweep.dir={folder.root.parent / (folder.root.name + '-' + plan.definition[:8])}"
        )
    extra = {"search_definition": plan.definition, "study_name": plan.study_name, "storage": mask_url(plan.storage)}
    resumed = folder.claim(plan.name, "search", [], extra)
    records.write_json(folder.root / SEARCH_JSON, plan.to_json())
    return resumed


def print_plan(plan: SearchPlan, resumed: bool, study: optuna.Study | None) -> None:
    s, sp, smallest = plan.settings, plan.settings.space, plan.smallest
    held = tally(study.get_trials(deepcopy=False)) if study is not None else Counter()
    verb = "continuing" if resumed or held["trained"] else "new search"
    size = space_size(sp)
    print(
        f"{verb}: {plan.folder} (study {plan.study_name!r} in {mask_url(plan.storage)}; {held['trained']} of "
        f"{s.n_trials} trained trials done)"
    )
    depths = ", ".join(f"stage {k}: {v}" for k, v in sorted((sp.depths or {}).items())) or "the preset's"
    print(
        f"  space: a {_bounds(sp.a)} | b {_bounds(sp.b)} | groups {sp.groups} | depths {depths} | preset "
        f"{sp.preset or plan.base['model']['name']}, variant {sp.variant or plan.base['variant']['name']}"
        f"{f' ({size} candidates)' if size else ''}"
    )
    print(
        f"  objectives: {', '.join(f'{OBJECTIVES[o][0]} {o}' for o in s.objectives)}; budgets: "
        f"{_budgets(s.constraints)}; smallest candidate {smallest['macs'] / 1e9:.3g} GMACs, "
        f"{smallest['params'] / 1e6:.3g} M params"
    )
    print(f"  sampler {s.sampler} (seed {s.seed}), pruner {s.pruner}, {plan.workers} worker(s)")


def _bounds(b: BoundsSpec) -> str:
    return f"{b.low:g}..{b.high:g}" + (f" step {b.step:g}" if b.step else "")


def _budgets(c: ConstraintSpec) -> str:
    parts = [f"{k} {v:g}" for k, v in dataclasses.asdict(c).items() if v is not None]
    return ", ".join(parts) or "none"


def dry_run(plan: SearchPlan) -> dict[str, Any]:
    """Materialize the candidates the workers would start with on a fresh study; submit nothing."""
    planned = []
    for worker in range(plan.workers):
        study = optuna.create_study(
            directions=plan.directions, sampler=make_sampler(plan, worker_seed(plan.settings.seed, worker, 0))
        )
        params = suggest(study.ask(), plan.settings.space)
        try:
            settings = settings_from_config(candidate_config(plan.base, plan.settings.space, params, plan.study_name))
        except ValueError as exc:
            print(f"  worker {worker}: {params} is not a valid architecture: {exc}")
            continue
        macs, n_params = deploy_size(settings.arch)
        over = any(v > 0 for v in budget_violations(plan.settings.constraints, macs, n_params).values())
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(
            f"  {settings.trial_id}  {'infeasible' if over else 'planned':<11} {shown}  "
            f"({macs / 1e9:.3g} GMACs, {n_params / 1e6:.3g} M params)"
        )
        if settings.trial_id not in {t.trial_id for t in planned}:
            planned.append(PlannedTrial(settings.trial_id, settings.config, params))
    plan.sweep_folder.materialize(planned)
    _set_trial_ids(plan.sweep_folder, [t.trial_id for t in planned])
    return {"folder": plan.folder, "trials": len(planned), "submitted": 0}


def drive(plan: SearchPlan, launcher: Any, spec: Any, study: optuna.Study) -> dict[str, Any]:
    """Start the workers, follow the study until they end (bounded), then collect."""
    folder = plan.sweep_folder
    folder.acquire_driver()
    pool = WorkerPool(plan, launcher, spec, study)
    progress = SearchProgress(_interactive())
    previous = signal.signal(signal.SIGTERM, pool.cancel_on_signal)
    try:
        pool.start()
        if not (spec.detach and launcher.name == "slurm"):
            pool.wait(progress)
    except KeyboardInterrupt:
        pool.cancel()
        raise
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous)
        folder.driver_pid_file.unlink(missing_ok=True)
    if spec.detach and launcher.name == "slurm":
        print(f"submitted {plan.workers} workers; follow with sweep.action=status sweep.dir={folder.root}")
        return {"folder": plan.folder, "detached": True}
    counts = tally(study.get_trials(deepcopy=False))
    if counts["trained"] < plan.settings.n_trials:
        reason = plan.budget.stop_reason(counts) or "the workers ended early (see jobs/*.err)"
        print(
            f"the study holds {counts['trained']} of {plan.settings.n_trials} trained trials: {reason}; rerun the "
            "same command to continue it"
        )
    return {**collect_search(folder), "study": dict(counts)}


class WorkerPool:
    """The worker jobs of one driver run: submits them, follows them, resubmits crashed ones."""

    def __init__(self, plan: SearchPlan, launcher: Any, spec: Any, study: optuna.Study) -> None:
        self.plan, self.launcher, self.spec, self.study = plan, launcher, spec, study
        self.active: dict[int, Any] = {}
        self.attempts: Counter = Counter()

    def start(self) -> None:
        self.submit(list(range(self.plan.workers)))

    def submit(self, workers: list[int]) -> None:
        jobs_dir = self.plan.sweep_folder.root / "jobs"
        if self.launcher.name == "slurm":  # one job array, every worker running at once
            ex = make_executor(self.launcher, jobs_dir)
            ex.update_parameters(array_parallelism=max(len(workers), 1))
            with ex.batch():
                jobs = [ex.submit(SearchWorker(self.plan, w)) for w in workers]
        else:
            jobs = [self._executor(w, jobs_dir).submit(SearchWorker(self.plan, w)) for w in workers]
        for w, job in zip(workers, jobs):
            self.attempts[w] += 1
            self.active[w] = job
            row = {
                "worker": w,
                "job_id": str(job.job_id),
                "launcher": self.launcher.name,
                "attempt": self.attempts[w],
                "time": time.time(),
            }
            records.append_jsonl(self.plan.sweep_folder.root / WORKERS_JSONL, row)

    def _executor(self, worker: int, jobs_dir: Path) -> submitit.Executor:
        if self.launcher.name != "local":
            return make_executor(self.launcher, jobs_dir)
        gpus = local_slots(self.launcher)[2]
        ids = list(range(worker * gpus, (worker + 1) * gpus)) if gpus else None
        return make_executor(self.launcher, jobs_dir, gpu_ids=ids)

    def wait(self, progress: SearchProgress) -> None:
        deadline = time.monotonic() + self.spec.max_wait_h * 3600
        while self.active:
            if self.launcher.name == "debug":
                self._run_debug()
            for w in [w for w, job in self.active.items() if _job_state(job) not in ACTIVE_STATES]:
                self._ended(w)
            progress.show(self.plan, tally(self.study.get_trials(deepcopy=False)), len(self.active))
            if time.monotonic() > deadline:
                _log.warning("stopped waiting after %.1f h; workers keep running", self.spec.max_wait_h)
                return
            if self.active:
                time.sleep(self.plan.poll_s)

    def _run_debug(self) -> None:
        for job in self.active.values():
            with contextlib.suppress(Exception):  # the worker ran here, in this process; _ended reports
                job.result()

    def _ended(self, worker: int) -> None:
        job = self.active.pop(worker)
        state = _job_state(job)
        if state == "COMPLETED":
            return
        counts = tally(self.study.get_trials(deepcopy=False))
        log = getattr(getattr(job, "paths", None), "stderr", "n/a")
        _log.warning("worker %d (job %s) ended %s; log: %s", worker, job.job_id, state, log)
        cancelled = state.startswith("CANCELLED")
        if (
            not cancelled
            and self.plan.budget.stop_reason(counts) is None
            and self.attempts[worker] <= self.spec.retries
        ):
            self.submit([worker])

    def cancel(self) -> None:
        for job in self.active.values():
            job.cancel(check=False)
        self.active.clear()

    def cancel_on_signal(self, signum, frame) -> None:
        self.cancel()
        raise SystemExit(143)


class SearchProgress(Progress):
    """The study's counts: a live line for a person, log lines in batch jobs."""

    def show(self, plan: SearchPlan, counts: Counter, workers: int) -> None:
        keys = ("running", "infeasible", "duplicate", "failed", "lost")
        line = f"trained {counts['trained']}/{plan.settings.n_trials}  " + "  ".join(f"{k} {counts[k]}" for k in keys)
        line += f"  workers {workers}"
        if self.live is not None:
            self.live.update(f"[bold]{plan.study_name}[/bold]  {line}")
        elif line != self.last or time.monotonic() - self.last_time > 60:
            print(f"[search {plan.study_name}] {line}", flush=True)
            self.last, self.last_time = line, time.monotonic()


# -- collecting: results.csv, summary.md, pareto.csv -----------------------------------------------------------------
def _set_trial_ids(folder: SweepFolder, trial_ids: list[str]) -> None:
    definition = folder.read_definition() or {}
    definition["trial_ids"] = trial_ids  # the definition hash stays: it identifies the search, not its trials
    records.write_json(folder.root / SWEEP_JSON, definition)


def searched_trials(folder: SweepFolder) -> list[tuple[str, dict[str, Any]]]:
    """(trial_id, result) of every candidate that has a record, in the order the study numbered them."""
    out = []
    for d in sorted(p for p in folder.trials_dir.iterdir() if p.is_dir()) if folder.trials_dir.exists() else []:
        result = records.read_json(d / records.RESULT)
        if result is not None:
            out.append((d.name, result))
    return sorted(out, key=lambda r: (_get(r[1], ("search", "number")) is None, _get(r[1], ("search", "number")) or 0))


def pareto_table(folder: SweepFolder, objectives: list[str]) -> pd.DataFrame:
    """The trained, feasible trials no other one beats on every objective, best first on the first objective."""
    from analysis.pareto import pareto_mask

    rows = []
    for tid, r in searched_trials(folder):
        search = r.get("search") or {}
        if r.get("status") == "completed" and search.get("kind") == "trained" and search.get("feasible"):
            rows.append(_pareto_row(tid, r, search, objectives))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    maximize = [OBJECTIVES[o][0] == "maximize" for o in objectives]
    df = df[pareto_mask(df[objectives].to_numpy(dtype=float), maximize)]
    return df.sort_values(objectives[0], ascending=not maximize[0]).reset_index(drop=True)


def _pareto_row(tid: str, r: dict[str, Any], search: dict[str, Any], objectives: list[str]) -> dict[str, Any]:
    arch = r.get("arch") or {}
    row = {
        "number": search.get("number"),
        "trial_id": tid,
        "a": arch.get("a"),
        "b": arch.get("b"),
        "depths": "-".join(map(str, arch.get("depths") or [])),
        "groups": arch.get("groups"),
        "top1": _get(r, ("metrics", "top1")),
        "deploy_gmacs": _get(r, ("complexity", "deploy", "macs")) / 1e9,
        "deploy_mparams": _get(r, ("complexity", "deploy", "params")) / 1e6,
        "images_per_s": _get(r, ("speed", "images_per_s")),
        "latency_ms": _get(r, ("speed", "latency_ms")),
    }
    row.update(dict(zip(objectives, search.get("values") or [])))
    return row


def collect_search(folder: SweepFolder) -> dict[str, Any]:
    """results.csv and summary.md (every candidate with a record), pareto.csv; prints the Pareto set."""
    from analysis.tables import to_markdown

    from .collect import write_results

    plan = records.read_json(folder.root / SEARCH_JSON) or {}
    objectives = (plan.get("settings") or {}).get("objectives") or ["top1", "images_per_s"]
    trials = searched_trials(folder)
    _set_trial_ids(folder, [tid for tid, _ in trials])
    folder.materialize(
        [PlannedTrial(tid, r.get("config") or {}, _get(r, ("search", "params")) or {}) for tid, r in trials]
    )
    summary = write_results(folder) if trials else {"folder": str(folder.root), "trials": 0}
    front = pareto_table(folder, objectives)
    front.to_csv(folder.root / "pareto.csv", index=False)
    print(f"Pareto set ({', '.join(f'{OBJECTIVES[o][0]} {o}' for o in objectives)}; feasible trained trials):")
    print(to_markdown(front, {"deploy_gmacs": 3, "deploy_mparams": 2, "a": 3, "b": 3}) if len(front) else "_(none)_")
    kinds = Counter(_get(r, ("search", "kind")) for _, r in trials)
    return {
        **summary,
        "pareto": len(front),
        "trained": kinds["trained"] + kinds["pruned"],
        "infeasible": kinds["infeasible"],
        "pareto_csv": str(folder.root / "pareto.csv"),
    }


def search_action(folder: SweepFolder, action: str) -> dict[str, Any]:
    """sweep.action=status | collect | cancel on a search folder (from its records; no storage access needed)."""
    if action == "collect":
        return collect_search(folder)
    if action == "cancel":
        return _cancel(folder)
    kinds = Counter(_get(r, ("search", "kind")) or r.get("status") for _, r in searched_trials(folder))
    driver = folder.live_driver()
    print(
        f"search {folder.root}: "
        + "  ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        + (f"  (driver pid {driver})" if driver else "")
    )
    return {"folder": str(folder.root), **kinds}


def _cancel(folder: SweepFolder) -> dict[str, Any]:
    driver = folder.live_driver()
    if driver is not None:
        os.kill(driver, signal.SIGTERM)  # its handler cancels the local worker jobs
    last = {row["worker"]: row for row in records.read_jsonl(folder.root / WORKERS_JSONL)}
    for row in last.values():
        if row["launcher"] == "slurm":
            submitit.SlurmJob(folder=folder.root / "jobs", job_id=row["job_id"]).cancel(check=False)
    print(f"cancelled the workers of {folder.root}")
    return {"folder": str(folder.root), "cancelled": len(last)}


# -- joining a study by hand ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`python -m repvgg_search.search SWEEP_DIR`: one more worker on an existing search."""
    parser = argparse.ArgumentParser(prog="python -m repvgg_search.search", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the search's sweep folder (holds search.json)")
    parser.add_argument("--storage", help="the RDB URL with its password (search.json keeps it masked)")
    parser.add_argument("--worker", type=int, default=os.getpid(), help="worker index (seeds its sampler stream)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = records.read_json(args.sweep_dir / SEARCH_JSON)
    try:
        if data is None:
            raise SearchError(f"{args.sweep_dir} holds no search (no {SEARCH_JSON}); start it with the sweep command")
        plan = SearchPlan.from_json(data, args.storage)
        if plan.is_rdb and "***" in plan.storage:
            raise SearchError(f"the study lives in {plan.storage}: pass --storage with the full URL")
        check_storage(plan)
        prepare_study(plan)  # creates it when this worker comes first; refuses a study of another definition
        print(json.dumps(worker_loop(plan, args.worker)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

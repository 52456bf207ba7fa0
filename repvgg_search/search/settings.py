"""The width search's settings (`search:` in conf/sweep/width_search.yaml): schema, checks, space size."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from ..errors import BadInputError
from ..models import VARIANTS
from ..models.arch import PRESETS
from ..schema import OBJECTIVES, QUANT_OBJECTIVES  # noqa: F401 (search.settings.OBJECTIVES: their home is the schema)
from .asha import check_tolerance

SAMPLERS = ("tpe", "nsgaii", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
FIDELITIES = ("none", "asha")  # search.fidelity (search/asha.py)
STAGES = 5


class SearchError(BadInputError):
    """A search setting is invalid or cannot be met; nothing has been launched."""


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
    depths: dict[int, list[int]] = field(default_factory=dict)  # stage (0-4) -> layer counts to choose from;
    #   stages not named keep the preset's. On the command line: '++search.space.depths={2:[2,4]}'
    groups: list[int] = field(default_factory=lambda: [1, 2, 4])  # groups of the grouped layers (1 = none)
    preset: str | None = None  # base architecture (depths, grouped layers, ...); null = model.name
    variant: str | None = None  # block variant; null = variant.name


@dataclass
class ConstraintSpec:
    """Budgets; null = none. MACs and params are the deploy form's, counted by fvcore at 3x224x224 with the
    trial's classifier (what result.json records as complexity.deploy): known before training."""

    max_gmacs: float | None = None  # 1e9 MACs (1 multiply-add = 1); over-budget candidates are never trained
    max_mparams: float | None = None  # 1e6 parameters; over-budget candidates are never trained
    max_latency_ms: float | None = None  # median batch latency (speed.*) on the trial's device: measured (or, with
    #   speed.predictor=lut, predicted) before training; over-budget candidates are never trained


@dataclass
class SearchSettings:
    """The width search: space, objectives, budgets, sampler, and how many trials to train."""

    space: SpaceSpec = field(default_factory=SpaceSpec)
    objectives: list[str] = field(default_factory=lambda: ["top1", "images_per_s"])  # see OBJECTIVES
    constraints: ConstraintSpec = field(default_factory=ConstraintSpec)
    sampler: str = "tpe"  # tpe | nsgaii | random | grid
    sampler_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the optuna sampler
    pruner: str = "none"  # none | median | hyperband: stop trials early on per-epoch top1 (objectives: [top1])
    n_trials: int = 12  # candidates trained (completed, pruned or, with fidelity=asha, started at the first rung)
    fidelity: str = "none"  # none: every candidate trains train.epochs | asha: multi-fidelity (MO-ASHA) promotion
    min_epochs: int | None = None  # asha: the first rung's epochs; null = train.epochs // eta**2 (at least 1)
    eta: int = 3  # asha: a rung keeps its top 1/eta (rungs min_epochs * eta**k below train.epochs)
    top1_tolerance: Any = "auto"  # asha: top1 points below which a rung does not rank two candidates by top1
    #   (epsilon-dominance; auto = one binomial standard error of the difference at the rung; 0 = plain Pareto)
    screen: int | None = None  # draw this many candidates, predict their speed (speed.predictor=lut) and MACs
    #   before training, and train only the predicted front (null = no screening: the sampler proposes)
    seed: int = 0  # seeds the samplers (each worker draws from its own stream)
    storage: str | None = None  # null = a journal file in the sweep folder; an RDB URL (postgresql://...) or a path
    study_name: str | None = None  # null = the sweep's name; also the wandb group of every trial
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int = 180  # seconds without a heartbeat after which a running trial is failed and retried
    max_retry: int = 3  # retries of a trial whose worker died or was preempted
    max_failed: int | None = None  # stop after this many trials raised; null = n_trials
    max_skipped: int | None = None  # stop after this many infeasible/duplicate proposals; null = max(100, 10 n_trials)


def search_settings(node: Any) -> SearchSettings:
    """Validated settings from a `search:` node or a plain dict (search.json); SearchError names a bad key."""
    data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else copy.deepcopy(node)
    depths = (data.get("space") or {}).get("depths")
    if isinstance(depths, dict):  # JSON (search.json) keeps keys as strings
        try:
            data["space"]["depths"] = {int(k): v for k, v in depths.items()}
        except (TypeError, ValueError):
            raise SearchError(f"search.space.depths: keys must be stage indices 0-4, got {sorted(depths)}") from None
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SearchSettings), data))
    except ConfigKeyError as exc:  # an unknown key: name it, where it was, and the keys allowed there
        parent = ".".join(["search", *str(exc.full_key).split(".")[:-1]])
        allowed = ", ".join(f.name for f in dataclasses.fields(exc.object_type))
        raise SearchError(f"{parent}: unknown key(s) [{exc.key!r}]; allowed: {allowed}") from None
    except Exception as exc:  # omegaconf's type errors name the key
        raise SearchError(f"search: {str(exc).splitlines()[0]} (key search.{getattr(exc, 'full_key', '?')})") from None
    validate_settings(typed)
    return typed


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
    if s.fidelity not in FIDELITIES:
        raise SearchError(f"search.fidelity={s.fidelity!r} is unknown; allowed: {', '.join(FIDELITIES)}")
    if s.fidelity != "none" and s.pruner != "none":
        raise SearchError(
            f"search.fidelity={s.fidelity} stops candidates at its rungs itself: use it with search.pruner=none "
            f"(got pruner={s.pruner})"
        )
    check_tolerance(s.top1_tolerance)
    if s.screen is not None and s.screen < 2:
        raise SearchError(f"search.screen={s.screen} must be >= 2 candidates to screen (or null for none)")
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
    for stage, choices in space.depths.items():
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
    return len(a) * len(b) * len(space.groups) * math.prod(len(c) for c in space.depths.values())


def grid_space(space: SpaceSpec) -> dict[str, list[Any]]:
    """The GridSampler's search space: the same names and values `suggest` draws."""
    grid: dict[str, list[Any]] = {"a": axis_values(space.a), "b": axis_values(space.b), "groups": list(space.groups)}
    for stage, choices in sorted(space.depths.items()):
        if len(choices) > 1:
            grid[f"depth{stage}"] = list(choices)
    return grid

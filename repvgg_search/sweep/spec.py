"""The `sweep:` settings of a sweep (grid or search), their first checks, the sweep folder a config names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..analysis.sequential import SequentialDesign
from ..config import CONF_DIR, TrialConfig
from ..errors import BadInputError, check_slug
from .folder import SweepFolder

ACTIONS = ("run", "status", "collect", "cancel")
KINDS = ("grid", "search")
SWEEPS_DIR = CONF_DIR / "sweep"
# The most trials one grid sweep may plan: each is validated and written out before anything is submitted, at
# about 1 ms and a few kB each, so 100 000 is minutes and hundreds of MB; beyond that, split the sweep.
MAX_TRIALS = 100_000


class SweepError(BadInputError):
    """A sweep definition or sweep setting is invalid; nothing has been submitted."""


@dataclass
class SweepSpec:
    """What a sweep varies and how the driver runs it (the files in conf/sweep/ set these)."""

    name: str | None = None  # the sweep's name; set by the sweep file (+sweep=NAME)
    kind: str = "grid"  # grid: the cross product of `axes` | search: an Optuna search (see `search`)
    axes: dict[str, list[Any]] = field(default_factory=dict)  # config path -> values, e.g. {seed: [0, 1]}
    seeds: int | None = None  # N: every trial with seeds 0..N-1 (paired across variants); or list them in axes.seed
    baseline: str = "full"  # the variant every other one is compared with (paired by seed) in the summary
    dir: str | None = None  # sweep folder; null = outputs/sweeps/<name> (stable: rerunning resumes it)
    action: str = "run"  # run | status | collect | cancel
    dry_run: bool = False  # write the trial configs and print the plan; submit nothing
    detach: bool = False  # submit and return; `sweep.action=status` shows progress later
    retries: int = 1  # resubmissions of a failed trial (within a run and over reruns)
    poll_s: float = 2.0  # seconds between polls of job states (bounded waits)
    max_wait_h: float = 168.0  # the driver gives up waiting after this long (jobs keep running)
    # Sequential seeds (grid sweeps over `variant`): seeds are added in batches, only to comparisons still open.
    sequential: bool = False  # true: run seeds batch by batch along seed_schedule (instead of sweep.seeds)
    seed_schedule: list[int] = field(default_factory=lambda: [3, 5, 8, 12])  # paired seeds after each batch
    max_seeds: int | None = None  # the budget of seeds per comparison; null = seed_schedule's last entry
    margin: float = 0.5  # equivalence margin, top1 points: `equivalent` = the whole interval inside +-margin
    futility: float = 0.1  # stop a comparison undecided when a verdict by max_seeds is this unlikely; 0 = never
    pursue_equivalence: float = 0.9  # but keep it open while `equivalent` is at least this likely


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def sweep_folder(cfg: DictConfig) -> SweepFolder:
    root = Path(cfg.sweep.dir or Path("outputs") / "sweeps" / cfg.sweep.name)
    if root.exists() and not root.is_dir():
        raise SweepError(f"sweep.dir={root} is a file, not a folder; choose another sweep.dir")
    return SweepFolder(root)


def sweep_axes(cfg: DictConfig) -> dict[str, list[Any]]:
    """The sweep's axes. Given whole on the command line (`'++sweep.axes={seed:[0,1,2]}'`, with or without `+`),
    they replace the sweep file's; Hydra alone would merge the two dicts. One axis (`sweep.axes.seed=[...]`)
    still changes just that axis."""
    given = _whole_axes_override()
    axes = given if given is not None else OmegaConf.to_container(cfg.sweep.axes, resolve=True)
    if not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()):
        raise SweepError(f"sweep.axes={axes!r} must map config paths to lists of values, e.g. {{seed: [0, 1]}}")
    return axes


def _whole_axes_override() -> dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return None
    parser, found = OverridesParser.create(), None
    for text in HydraConfig.get().overrides.task:
        override = parser.parse_overrides([text])[0]
        if override.key_or_group == "sweep.axes" and not override.is_delete():
            found = override.value()
    return found


def check_action(action: str) -> None:
    if action not in ACTIONS:
        raise SweepError(f"sweep.action={action!r} is unknown; allowed: {', '.join(ACTIONS)}")


def validate_spec(cfg: DictConfig) -> None:
    spec = cfg.sweep
    if spec.name is None:
        raise SweepError(f"no sweep selected: add +sweep=NAME; available: {', '.join(available_sweeps())}")
    check_slug(spec.name, "sweep.name", SweepError)  # outputs/sweeps/<name>: never outside, never the parent itself
    if spec.kind not in KINDS:
        raise SweepError(f"sweep.kind={spec.kind!r} is unknown; allowed: {', '.join(KINDS)}")
    check_action(spec.action)
    if spec.seeds is not None and spec.kind == "search":
        raise SweepError(
            f"sweep.seeds={spec.seeds} applies to grid sweeps; a width search trains each sampled candidate once and "
            "is compared by its population (error EDF). To repeat chosen candidates with seeds, run a grid sweep "
            "over them (sweep.axes over model.a, model.b, ...) with sweep.seeds"
        )
    if spec.seeds is not None and spec.seeds < 1:
        raise SweepError(f"sweep.seeds={spec.seeds} must be >= 1 (the number of seeds), or null")
    axes = sweep_axes(cfg)
    if spec.seeds is not None and "seed" in axes:
        raise SweepError(
            f"sweep.seeds={spec.seeds} and sweep.axes.seed={list(axes['seed'])} both give the seeds: keep one "
            f"(sweep.seeds=N means seeds 0..N-1; axes.seed lists them)"
        )
    if spec.sequential:
        _check_sequential(spec, axes)
    seeds = spec.seeds or (design_of(spec).looks()[-1] if spec.sequential else 1)  # a sequential sweep plans its budget
    planned = math.prod(len(v) for v in axes.values()) * seeds
    if spec.kind == "grid" and planned > MAX_TRIALS:
        raise SweepError(
            f"the sweep plans {planned} trials (sweep.axes {', '.join(f'{k}: {len(v)}' for k, v in axes.items())}"
            f"{f', sweep.seeds: {spec.seeds}' if spec.seeds else ''}); at most {MAX_TRIALS} are allowed: split it "
            "into several sweeps (sweep.name) or reduce sweep.seeds / sweep.axes"
        )
    if spec.retries < 0 or spec.poll_s <= 0 or spec.max_wait_h <= 0:
        raise SweepError("sweep.retries must be >= 0, sweep.poll_s and sweep.max_wait_h > 0")


def _check_sequential(spec: Any, axes: dict[str, list[Any]]) -> None:
    """A sequential sweep adds seeds itself: no fixed seeds, a variant axis holding the baseline, a valid design."""
    if spec.kind != "grid":
        raise SweepError("sweep.sequential=true applies to grid sweeps over variants; a width search has no seeds")
    if spec.seeds is not None or "seed" in axes:
        raise SweepError(
            "sweep.sequential=true adds seeds batch by batch (sweep.seed_schedule, sweep.max_seeds): drop "
            "sweep.seeds and any sweep.axes.seed"
        )
    variants = axes.get("variant") or axes.get("variant.name")
    if not variants or spec.baseline not in variants:
        raise SweepError(
            f"sweep.sequential=true compares variants with sweep.baseline={spec.baseline!r}: sweep.axes.variant must "
            f"list it (got {variants})"
        )
    design_of(spec)  # SequentialDesign checks the schedule, budget, margin and thresholds (BadInputError)


def design_of(spec: Any) -> SequentialDesign | None:
    """The sequential design a `sweep:` node asks for, or None for a fixed-seed sweep."""
    if not spec.sequential:
        return None
    return SequentialDesign(
        schedule=tuple(spec.seed_schedule), max_seeds=spec.max_seeds, margin=float(spec.margin),
        futility=float(spec.futility), pursue_equivalence=float(spec.pursue_equivalence),
    )  # fmt: skip


def base_trial_config(cfg: DictConfig) -> dict[str, Any]:
    """The trial part of the launch config (everything but sweep, launcher, search), resolved."""
    fields = set(TrialConfig.__dataclass_fields__)
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in cfg
        if k in fields
    }

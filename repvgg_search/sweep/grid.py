"""A grid sweep's trials: the cross product of `sweep.axes` over the base config, each validated and identified."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..config import CONF_DIR, TrialConfig
from ..errors import BadInputError
from ..trial import settings_from_typed, typed_config
from .folder import PlannedTrial
from .spec import SweepError, base_trial_config, design_of, sweep_axes

# Config groups a trial config is composed of: an axis over one of them takes option names.
GROUPS = ("model", "variant", "data", "train")
# `variant.name` alone would rename a block without changing what it is made of: as an axis it selects the option.
ALIASES = {"variant.name": "variant"}


def expand(cfg: DictConfig, threads: int | None = None) -> list[PlannedTrial]:
    """Every trial of a grid sweep, validated (raises SweepError naming the trial and the field).

    OmegaConf type-checks each distinct axis value once; trials are then built as plain dataclasses, so that
    planning a thousand trials takes a second or two.
    """
    base = typed_config(base_trial_config(cfg))
    axes = {ALIASES.get(k, k): list(v) for k, v in sweep_axes(cfg).items()}
    design = design_of(cfg.sweep)
    seeds = design.looks()[-1] if design is not None else cfg.sweep.seeds  # sequential: every seed it may need
    if seeds:  # the seed is the last axis: seed s of every variant forms a pair
        axes["seed"] = list(range(seeds))
    checked = _checked_axis_values(axes)
    trials, seen = [], {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        trial = copy.deepcopy(base)
        for path in sorted(values, key=lambda p: p not in GROUPS):  # a group option first, then its fields
            _set_path(trial, path, copy.deepcopy(checked[path, repr(values[path])]))
        trial.tracking.group = cfg.sweep.name
        if threads is not None and trial.threads is None:
            trial.threads = threads
        try:
            settings = settings_from_typed(trial)
        except BadInputError as exc:
            raise SweepError(f"trial {values} of sweep {cfg.sweep.name!r} is invalid: {exc}") from None
        if settings.trial_id in seen:
            raise SweepError(f"trials {seen[settings.trial_id]} and {values} are the same trial; remove the duplicate")
        seen[settings.trial_id] = values
        settings.config["tracking"]["name"] = run_name(settings.display_name, values)
        trials.append(PlannedTrial(settings.trial_id, settings.config, values))
    return trials


def run_name(display: str, values: dict[str, Any]) -> str:
    """`<preset>-<variant>-s<seed>` plus the axes it does not already show (`a0-full-s1-a1.25`)."""
    shown = ("model", "seed", "variant")
    extra = [f"{k.rpartition('.')[2]}{v}" for k, v in values.items() if k.split(".")[0] not in shown]
    return "-".join([display, *extra])


def _checked_axis_values(axes: dict[str, list[Any]]) -> dict[tuple[str, str], Any]:
    """Each distinct axis value, type-checked and converted by OmegaConf against the trial schema.

    An axis over a config group (`variant: [full, no_1x1]`) takes option names: each becomes the node that
    `variant=<option>` on the command line gives, the user's other overrides applied on top.
    """
    node = OmegaConf.structured(TrialConfig)
    out = {}
    for path, values in axes.items():
        if not values:
            raise SweepError(f"sweep.axes.{path} has no values")
        if OmegaConf.select(node, path, default="__missing__") == "__missing__":
            raise SweepError(f"sweep.axes: {path!r} is not a trial config field (e.g. variant, seed, model.a)")
        for value in values:
            resolved = group_option(path, value) if path in GROUPS else value
            try:
                OmegaConf.update(node, path, resolved, merge=path in GROUPS)  # a group option: every field
            except Exception as exc:  # OmegaConf's ValidationError and friends
                raise SweepError(f"sweep.axes.{path}: value {value!r} does not fit the field: {exc}") from None
            leaf = OmegaConf.select(node, path)
            out[path, repr(value)] = OmegaConf.to_object(leaf) if OmegaConf.is_config(leaf) else leaf
    return out


def group_option(group: str, option: Any) -> dict[str, Any]:
    """The `group` node as `group=<option>` on the command line makes it, the user's other overrides kept.

    Inside a Hydra app the launch config is composed again with the app's own overrides (Hydra's semantics);
    elsewhere (the Python API) the option is composed onto the trial config's defaults.
    """
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    if option not in options:
        raise SweepError(f"unknown {group} {option!r} in sweep.axes.{group}; allowed: {', '.join(options)}")
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        kept = [o for o in hc.overrides.task if o.lstrip("+~").split("=")[0] != group]
        cfg = compose(config_name=hc.job.config_name, overrides=[*kept, f"{group}={option}"])
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"{group}={option}"])
    return OmegaConf.to_container(cfg[group], resolve=True)


def _set_path(obj: Any, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        obj = getattr(obj, name)
    setattr(obj, leaf, value)

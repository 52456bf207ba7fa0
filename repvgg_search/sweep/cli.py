"""`python -m repvgg_search.sweep +sweep=NAME`: validate a sweep (grid or search), then run it or act on it.

Actions (`sweep.action`): run (default; resumes an existing sweep folder), status, collect, cancel.
`sweep.dry_run=true` writes the trial configs and prints the plan without submitting; `sweep.detach=true`
submits and returns (a local sweep keeps a background driver that throttles its jobs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ..config import TrialConfig, register_configs
from ..entry import hydra_entry
from ..jobs.launchers import launcher_config, make_launcher, register_launchers
from ..search import collect as search_collect
from ..search.driver import SearchSweep
from ..search.settings import SearchSettings
from ..trial import settings_from_config
from . import actions
from .collect import write_results
from .driver import GridSweep
from .folder import PlannedTrial, SweepFolder
from .grid import expand
from .spec import SweepError, SweepSpec, base_trial_config, check_action, sweep_folder, validate_spec


@dataclass
class SweepConfig(TrialConfig):
    """`python -m repvgg_search.sweep`: the base trial config, the sweep, the launcher, the search."""

    sweep: SweepSpec = field(default_factory=SweepSpec)
    launcher: Any = None  # one of the launcher schemas (conf/launcher/: local, slurm, debug)
    search: SearchSettings = field(default_factory=SearchSettings)  # used by sweep.kind=search


def register() -> None:
    """Store the launch schema (and the trial and launcher schemas it builds on) in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    register_configs()
    register_launchers()
    ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)


register()


def act(folder: SweepFolder, action: str) -> dict[str, Any]:
    """sweep.action=status | collect | cancel on the sweep (or search) recorded in `folder`."""
    definition = folder.read_definition()
    if definition is None:
        raise SweepError(f"sweep.action={action}: {folder.root} holds no sweep (sweep.dir=PATH names one)")
    if definition.get("kind") == "search":
        return search_collect.search_action(folder, action)
    return {"status": actions.print_status, "collect": write_results, "cancel": actions.cancel}[action](folder)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate everything, then carry out `sweep.action`; returns a small summary (for tests and scripts)."""
    if cfg.sweep.action != "run" and cfg.sweep.name is None and cfg.sweep.dir:  # the folder says what it holds
        check_action(cfg.sweep.action)
        return act(sweep_folder(cfg), cfg.sweep.action)
    validate_spec(cfg)
    folder = sweep_folder(cfg)
    if cfg.sweep.action != "run":
        return act(folder, cfg.sweep.action)
    launcher = make_launcher(cfg.launcher)
    kind = SearchSweep if cfg.sweep.kind == "search" else GridSweep
    sweep = kind.from_config(cfg, folder, launcher)  # validates every trial and claims the folder, before any job
    if cfg.sweep.dry_run:
        return sweep.dry_run()
    folder.acquire_driver()  # a second driver on a busy folder is refused here, before it prints or submits
    try:
        sweep.prepare()
        if cfg.sweep.detach and launcher.background_driver and not actions.in_background():
            folder.release_driver()  # the background driver takes it
            return actions.detach_local(folder)
        return sweep.drive(detach=cfg.sweep.detach)
    finally:
        folder.release_driver()


def validate(cfg: DictConfig) -> list[PlannedTrial]:
    """Entry-point validation hook (tests compose every config file through it): base trial, launcher, sweep."""
    launcher_config(cfg.launcher)
    if cfg.sweep.name is None or cfg.sweep.kind != "grid":
        settings = settings_from_config(base_trial_config(cfg))
        return [PlannedTrial(settings.trial_id, settings.config)]
    validate_spec(cfg)
    return expand(cfg)


@hydra_entry("sweep", extra_groups=("sweep",))
def main(cfg: DictConfig) -> None:
    """Exit status 2 on bad input (Hydra's refusals included), before anything is submitted or written."""
    run(cfg)

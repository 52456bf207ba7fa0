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
  diverged          the training diverged: COMPLETE with the worst values and a violated       counts
                    `diverged` constraint (a result the samplers learn from, never retried)
  failed            the trial raised: FAIL                                                   does not count
  interrupted       the worker was preempted or timed out: FAIL, and its parameters retried   does not count
A worker killed outright leaves its trial RUNNING; heartbeats fail it after `grace_period` and its parameters are
retried in the same trial folder, resuming from the trial's checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig

from .. import files
from ..errors import BadInputError
from ..jobs.launchers import Launcher
from ..jobs.pool import JobLog, JobPool
from ..progress import Progress
from ..schema import OBJECTIVES
from ..sweep.folder import PlannedTrial, SweepFolder
from ..trial import settings_from_config
from .collect import collect_search, set_trial_ids
from .plan import (
    SEARCH_JSON,
    WORKERS_JSONL,
    SearchPlan,
    budget_violations,
    candidate_config,
    deploy_size,
    plan_search,
    prepare_study,
    suggest,
)
from .settings import BoundsSpec, ConstraintSpec, SearchError, space_size
from .storage import mask_url
from .study import make_sampler, tally, worker_seed
from .worker import SearchWorker

_log = logging.getLogger(__name__)


@dataclass
class SearchSweep:
    """A validated search, its folder claimed: dry run, or a study followed while its workers run."""

    plan: SearchPlan
    launcher: Launcher
    spec: Any  # the `sweep:` settings
    resumed: bool
    study: optuna.Study | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig, folder: SweepFolder, launcher: Launcher) -> SearchSweep:
        search = plan_search(cfg, folder, launcher)
        return cls(search, launcher, cfg.sweep, claim_search_folder(search))

    def dry_run(self) -> dict[str, Any]:
        print_plan(self.plan, self.resumed, None)
        return dry_run(self.plan)

    def prepare(self) -> None:
        self.study = prepare_study(self.plan)
        print_plan(self.plan, self.resumed, self.study)

    def drive(self, detach: bool = False) -> dict[str, Any]:
        """Start the workers, follow the study until they end (bounded), then collect. The caller is the folder's
        driver (`SweepFolder.acquire_driver`)."""
        plan, folder = self.plan, self.plan.sweep_folder
        log = JobLog(folder.root / WORKERS_JSONL, "worker")
        pool = JobPool(self.launcher, folder.jobs_dir, log, poll_s=plan.poll_s, max_wait_h=self.spec.max_wait_h,
                       retries=self.spec.retries, per_job=1)  # fmt: skip
        progress = Progress(f"search {plan.study_name}", plan.settings.n_trials)
        try:
            with pool.cancelling_on_exit():
                pool.run(list(range(plan.workers)), lambda workers: SearchWorker(plan, workers[0]), self._ended,
                         show=lambda: self._show(progress, len(pool.active)), detach=detach)  # fmt: skip
        finally:
            progress.close()
        if detach and self.launcher.queues_itself:
            print(f"submitted {plan.workers} workers; follow with sweep.action=status sweep.dir={folder.root}")
            return {"folder": plan.folder, "detached": True}
        return self._collect()

    def _ended(self, worker: int, job: Any, state: str) -> bool:
        """Restart a worker that died while the study still needs trials (not one a user cancelled)."""
        if state == "COMPLETED":
            return False
        _log.warning("worker %d (job %s) ended %s; log: %s", worker, job.job_id, state, job.paths.stderr)
        counts = tally(self.study.get_trials(deepcopy=False))
        return not state.startswith("CANCELLED") and self.plan.budget.stop_reason(counts) is None

    def _show(self, progress: Progress, workers: int) -> None:
        counts = tally(self.study.get_trials(deepcopy=False))
        keys = ("running", "infeasible", "duplicate", "failed", "lost")
        line = f"trained {counts['trained']}/{self.plan.settings.n_trials}  "
        progress.show(line + "  ".join(f"{k} {counts[k]}" for k in keys) + f"  workers {workers}", counts["trained"])

    def _collect(self) -> dict[str, Any]:
        counts = tally(self.study.get_trials(deepcopy=False))
        if counts["trained"] < self.plan.settings.n_trials:
            reason = self.plan.budget.stop_reason(counts)
            if reason is None:  # nothing in the study stops it: a rerun continues
                reason = "the workers ended early (see jobs/*.err); rerun the same command to continue it"
            print(f"the study holds {counts['trained']} of {self.plan.settings.n_trials} trained trials: {reason}")
        return {**collect_search(self.plan.sweep_folder), "study": dict(counts)}


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
    files.write_json(folder.root / SEARCH_JSON, plan.to_json())
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
    depths = ", ".join(f"stage {k}: {v}" for k, v in sorted(sp.depths.items())) or "the preset's"
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
            directions=plan.directions, sampler=make_sampler(plan.settings, worker_seed(plan.settings.seed, worker, 0))
        )
        params = suggest(study.ask(), plan.settings.space)
        try:
            settings = settings_from_config(candidate_config(plan.base, plan.settings.space, params, plan.study_name))
        except BadInputError as exc:
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
    set_trial_ids(plan.sweep_folder, [t.trial_id for t in planned])
    return {"folder": plan.folder, "trials": len(planned), "submitted": 0}

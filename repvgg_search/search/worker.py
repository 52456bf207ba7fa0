"""One worker: evaluate asked candidates (budgets, slot, duplicates, training, records) until the study is full."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import submitit
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from .. import files
from ..locks import FileLock, LockBusy
from ..models import ArchError
from ..schema import (
    MAC_CONVENTION,
    OBJECTIVES,
    ArchBlock,
    Complexity,
    Search,
    Sizes,
    SpeedFigure,
    Status,
    TrialRecord,
    lookup,
    read_record,
    write_record,
)
from ..trial import TrialInterrupted, TrialSettings, run_trial, settings_from_config
from ..trial.folder import LOCK
from ..trial.speed import deploy_speed
from .asha import Ladder, RungEntry, rung_recipe
from .plan import SearchPlan, budget_violations, candidate_config, deploy_size, open_study, suggest
from .rung_table import (
    RUNG,
    RungTable,
    arrival_continues,
    enqueue_promotion,
    holds_promotion,
    plan_promotion,
    promotion_target,
)
from .screen import ensure_screened, screened_trials
from .settings import grid_space, space_size
from .storage import quiet
from .study import KIND, SKIPPED, claim_slot, kind, propose_untried, record, search_loop, tally, worker_seed

_log = logging.getLogger(__name__)
SKIPPED_KINDS = {s.value for s in SKIPPED}
INTERRUPTS = (SystemExit, KeyboardInterrupt, TrialInterrupted, submitit.core.utils.UncompletedJobError)


class CandidateRunner:
    """Evaluates asked trials for one worker: budgets, slot, duplicate check, training, records."""

    def __init__(self, plan: SearchPlan, worker: int, n_trials: int | None = None) -> None:
        self.plan, self.worker, self.s = plan, worker, plan.settings
        self.folder = plan.sweep_folder
        self.base = plan.base
        self.n_trials = n_trials or plan.settings.n_trials  # fewer when a screen kept fewer candidates
        # A finite space the sampler proposes from (not a grid, not a screen's list): every skipped proposal is
        # followed by an untried candidate, so repeats never starve the search (study.propose_untried).
        finite = space_size(self.s.space) is not None and self.s.sampler != "grid" and self.s.screen is None
        self.grid = grid_space(self.s.space) if finite else None

    def __call__(self, study: optuna.Study, trial: optuna.Trial) -> str:
        told = self._evaluate(study, trial)
        if self.grid is not None and told in SKIPPED_KINDS:
            params = propose_untried(study, self.grid, worker_seed(self.s.seed, self.worker, trial.number))
            if params is not None:
                _log.info("trial %d was %s; enqueued an untried candidate %s", trial.number, told, params)
        return told

    def _evaluate(self, study: optuna.Study, trial: optuna.Trial) -> str:
        params = suggest(trial, self.s.space)
        config = candidate_config(self.base, self.s.space, params, self.plan.study_name)
        try:
            settings = settings_from_config(config)
        except ArchError as exc:  # e.g. groups that do not divide a layer's channels
            trial.set_constraint("valid", 1.0)
            trial.set_user_attr("error", str(exc))
            return record(study, trial, Status.INFEASIBLE, self._worst(None))
        trial.set_user_attr("trial_id", settings.trial_id)
        macs, n_params = deploy_size(settings.arch)
        over = budget_violations(self.s.constraints, macs, n_params)
        for key, value in over.items():
            trial.set_constraint(key, value)
        if any(v > 0 for v in over.values()):
            return self._infeasible(study, trial, settings, params, (macs, n_params), over)
        # The speed before training: measured (or looked up) once per architecture in the sweep's speed folder,
        # where the trial finds it again after training. A candidate over the latency budget never trains.
        speed = deploy_speed(settings, self.folder.speed_dir)
        if self.s.constraints.max_latency_ms is not None:
            over["latency_ms"] = speed.latency_ms / self.s.constraints.max_latency_ms - 1
            trial.set_constraint("latency_ms", over["latency_ms"])
            if over["latency_ms"] > 0:
                return self._infeasible(study, trial, settings, params, (macs, n_params), over, speed)
        promotion = promotion_target(_frozen(study, trial.number))
        if promotion is not None:  # a later promotion: the claim decides, no slot is taken
            if not holds_promotion(study.get_trials(deepcopy=False), trial.number):
                return record(study, trial, Status.DUPLICATE, state=TrialState.FAIL)
        elif not claim_slot(study, trial, self.n_trials):
            return record(study, trial, Status.SURPLUS, state=TrialState.FAIL)
        files.write_config(self.folder.trial_dir(settings.trial_id), settings.config)
        with trial_lock(self.folder.trial_dir(settings.trial_id)) as mine:
            if not mine:  # another worker is training this very architecture now
                return record(study, trial, Status.DUPLICATE, state=TrialState.FAIL)
            if promotion is None:
                earlier = _trained_with(study, settings.trial_id, trial.number)
                if earlier is not None:
                    trial.set_user_attr("duplicate_of", earlier.number)
                    if "latency_ms" in earlier.constraints:  # the budgets' constraints are set above already
                        trial.set_constraint("latency_ms", earlier.constraints["latency_ms"])
                    # A stopped_early candidate has no values: told as it was (PRUNED), so that the sampler sees one
                    # more trial there (a FAIL it ignores, and TPE would propose the same point again and again).
                    values = list(earlier.values) if earlier.values else None
                    state = TrialState.COMPLETE if values else TrialState.PRUNED
                    return record(study, trial, Status.DUPLICATE, values, state=state)
            ladder = self.plan.ladder
            if ladder is None:
                return self._train(study, trial, settings, params)
            return self._climb(study, trial, settings, params, ladder, promotion[1] if promotion else 0)

    def _worst(self, size: tuple[int, int] | None) -> list[float]:
        """Objective values of a candidate never trained: the worst for unknowns, the counts where known."""
        known = {"macs": size[0], "params": size[1]} if size else {}
        return [float(known.get(o, 0.0 if OBJECTIVES[o][0] == "maximize" else math.inf)) for o in self.s.objectives]

    def _infeasible(self, study, trial, settings, params, size, over, speed=None) -> str:
        values = self._worst(size)
        reason = "; ".join(f"{k} over budget by {v:+.1%}" for k, v in over.items() if v > 0)
        trial.set_user_attr("error", reason)
        files.write_config(self.folder.trial_dir(settings.trial_id), settings.config)
        path = self.folder.trial_dir(settings.trial_id) / files.RESULT
        found = read_record(path)
        if found is None or found.status is not Status.COMPLETED:
            search = self._search(trial, Status.INFEASIBLE, values, over)
            write_record(path, infeasible_record(settings, size, reason, search, speed))
        return record(study, trial, Status.INFEASIBLE, values)

    def _train(self, study, trial, settings, params, rung: dict[str, Any] | None = None) -> str | TrialRecord:
        """Train one run of the candidate (`rung`: the rung's `_search` fields; None: a full-fidelity search) and
        tell the study how it ended, except a completed rung run, whose record is returned to `_climb`."""
        trial_dir = self.folder.trial_dir(settings.trial_id)
        trial.set_user_attr(KIND, Status.RUNNING.value)
        rung = rung or {}
        try:
            result = self._run(trial, settings, trial_dir)
        except optuna.TrialPruned:
            self._annotate(trial_dir, self._search(trial, Status.PRUNED, None, {}), status=Status.PRUNED)
            return record(study, trial, Status.PRUNED, state=TrialState.PRUNED)
        except INTERRUPTS:
            self._interrupted(study, trial)
            raise
        except Exception as exc:
            _log.error("trial %s (%s) failed: %s", settings.trial_id, params, exc)
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            self._annotate(trial_dir, self._search(trial, Status.FAILED, None, {}, **rung))
            return record(study, trial, Status.FAILED, state=TrialState.FAIL)
        if rung and rung["rung"] < self.plan.ladder.epochs and result.status is Status.COMPLETED:
            return result
        return self._finish(study, trial, result, trial_dir, rung)

    def _climb(self, study, trial, settings, params, ladder: Ladder, start: int) -> str:
        """A multi-fidelity candidate: a complete short run per rung above `start` (its budgeted schedule), each
        recorded in the study's rung table, until it leaves its rung's top 1/eta (stopped_early) or reaches
        train.epochs (the full-fidelity run, in the candidate's own trial folder)."""
        if start:  # promoted later: the run it was paused after is now a promoted one
            paused_dir = self.folder.trial_dir(rung_settings(settings, ladder, start).trial_id)
            self._relabel(paused_dir, Status.PROMOTED)
        level = ladder.next_level(start)
        while level < ladder.epochs:
            run = rung_settings(settings, ladder, level)
            fields = {"rung": level, "candidate": settings.trial_id}
            result = self._train(study, trial, run, params, fields)
            if not isinstance(result, TrialRecord):  # failed, diverged, interrupted: told already
                return result
            values = [float(lookup(result, OBJECTIVES[o][1])) for o in self.s.objectives]
            trial.set_user_attr(RUNG, level)
            entry = RungEntry(settings.trial_id, trial.number, level, tuple(values), dict(trial.params),
                              result.metrics.val_images)  # fmt: skip
            trials = study.get_trials(deepcopy=False)
            spent = tally(trials)["holding"] >= self.n_trials
            go_on = arrival_continues(RungTable(study), entry, trials, ladder, spent)
            ended = Status.PROMOTED if go_on else Status.STOPPED_EARLY
            run_dir = self.folder.trial_dir(run.trial_id)
            self._annotate(run_dir, self._search(trial, ended, values, {}, **fields),
                           status=None if go_on else Status.STOPPED_EARLY)  # fmt: skip
            _log.info("candidate %s at rung %d: top1 %.2f%%, %s", settings.trial_id, level, result.metrics.top1,
                      ended.value)  # fmt: skip
            if not go_on:
                return record(study, trial, Status.STOPPED_EARLY, state=TrialState.PRUNED)
            level = ladder.next_level(level)
        return self._train(study, trial, settings, params, {"rung": ladder.epochs, "candidate": settings.trial_id})

    def _relabel(self, trial_dir: Path, kind: Status) -> None:
        """A paused rung run promoted later: its record says so (status completed, search.kind promoted)."""
        result = read_record(trial_dir / files.RESULT)
        if result is not None and result.search is not None:
            result.search.kind, result.status = kind, Status.COMPLETED
            write_record(trial_dir / files.RESULT, result)

    def _run(self, trial: optuna.Trial, settings, trial_dir: Path) -> TrialRecord:
        on_epoch = epoch_reporter(trial) if self.s.pruner != "none" else None
        settings = settings.with_speed_dir(str(self.folder.speed_dir))  # one figure per architecture
        return run_trial(settings, trial_dir, progress=False, on_epoch=on_epoch)

    def _finish(self, study, trial, result: TrialRecord, trial_dir: Path, rung: dict[str, Any] | None = None) -> str:
        rung = rung or {}
        if result.status is Status.DIVERGED:  # a result, not a crash: the worst values, an infeasible candidate
            values = self._worst(_result_size(result) if result.complexity else None)
            trial.set_constraint("diverged", 1.0)
            trial.set_user_attr("error", str(result.error)[:500])
            self._annotate(trial_dir, self._search(trial, Status.DIVERGED, values, {"diverged": 1.0}, **rung))
            return record(study, trial, Status.DIVERGED, values)
        if result.status is not Status.COMPLETED:  # recorded its own end, e.g. a failed conversion gate
            trial.set_user_attr("error", str(result.error)[:500])
            self._annotate(trial_dir, self._search(trial, Status.FAILED, None, {}, **rung))
            return record(study, trial, Status.FAILED, state=TrialState.FAIL)
        values = [lookup(result, OBJECTIVES[o][1]) for o in self.s.objectives]
        if any(v is None for v in values):  # e.g. a record from an older runner
            missing = [o for o, v in zip(self.s.objectives, values) if v is None]
            trial.set_user_attr("error", f"the trial's result.json has no value for {missing}")
            return record(study, trial, "failed", state=TrialState.FAIL)
        values = [float(v) for v in values]
        over = budget_violations(self.s.constraints, *_result_size(result))
        latency = result.speed.latency_ms if result.speed is not None else None
        if self.s.constraints.max_latency_ms is not None and latency is not None:
            over["latency_ms"] = latency / self.s.constraints.max_latency_ms - 1
            trial.set_constraint("latency_ms", over["latency_ms"])
        self._annotate(trial_dir, self._search(trial, Status.COMPLETED, values, over, **rung))
        return record(study, trial, Status.COMPLETED, values)

    def _interrupted(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Preemption or timeout: fail the trial and queue its parameters at once (the checkpoint stays)."""
        with contextlib.suppress(Exception):
            if record(study, trial, Status.INTERRUPTED, state=TrialState.FAIL) == Status.INTERRUPTED.value:
                frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
                with quiet():
                    RetryHeartbeatStaleTrialCallback(max_retry=self.s.max_retry)(study, frozen)

    def _search(self, trial: optuna.Trial, ended: Status, values, over: dict[str, float], rung: int | None = None,
                candidate: str | None = None) -> Search:  # fmt: skip
        """The `search` block of the trial's result.json (what analysis reads)."""
        return Search(
            study=self.plan.study_name,
            number=trial.number,
            state=ended.optuna_state,
            kind=ended,
            feasible=all(v <= 0 for v in over.values()) if ended.is_result else None,
            values=values,
            objectives=list(self.s.objectives),
            directions=self.plan.directions,
            params=dict(trial.params),
            constraints=over,
            retry_of=trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial"),
            worker=self.worker,
            rung=rung,
            candidate=candidate,
        )

    @staticmethod
    def _annotate(trial_dir: Path, search: Search, status: Status | None = None) -> None:
        """Add the search block to the trial's record (and its final status, when the search decided it)."""
        path = trial_dir / files.RESULT
        result = read_record(path) or TrialRecord(trial_id=trial_dir.name, status=status or Status.FAILED)
        result.search = search
        if status is not None:
            result.status = status
        write_record(path, result)


class Promoter:
    """ASHA's "promote before starting a new candidate" for a free worker: enqueue the promotion that is due."""

    def __init__(self, ladder: Ladder, n_trials: int) -> None:
        self.ladder, self.n_trials = ladder, n_trials

    def __call__(self, study: optuna.Study, counts) -> bool:
        trials = study.get_trials(deepcopy=False)
        due = plan_promotion(RungTable(study).read(), trials, self.ladder, counts["holding"] >= self.n_trials)
        if due is None:
            return False
        _log.info("promoting candidate %s from rung %d", due.trial_id, due.rung)
        enqueue_promotion(study, due)
        return True


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def epoch_reporter(trial: optuna.Trial) -> Callable[[int, dict[str, Any]], None]:
    def on_epoch(epoch: int, row: dict[str, Any]) -> None:
        trial.report(float(row["val_top1"]), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val top1 {row['val_top1']:.2f}%)")

    return on_epoch


def _trained_with(study: optuna.Study, trial_id: str, number: int) -> FrozenTrial | None:
    """Another trial that trained this candidate: completed, or (multi-fidelity) stopped early at a rung."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        ended = kind(t)
        if t.number != number and t.user_attrs.get("trial_id") == trial_id and ended in TRAINED_KINDS:
            return t
    return None


TRAINED_KINDS = (Status.COMPLETED, Status.STOPPED_EARLY)


def _result_size(result: TrialRecord) -> tuple[int, int]:
    deploy = result.complexity.deploy
    return int(deploy.macs), int(deploy.params)


def rung_settings(settings: TrialSettings, ladder: Ladder, level: int) -> TrialSettings:
    """The candidate's run at a rung: its config with train.epochs = the rung (budgeted: the whole schedule over
    those epochs, `rung_recipe`): a trial of its own (its own id and folder; a wandb run named `...-r<rung>`)."""
    if level >= ladder.epochs:
        return settings
    config = copy.deepcopy(settings.config)
    config["train"].update(rung_recipe(ladder.epochs, float(config["train"]["warmup_epochs"]), level))
    config["tracking"]["name"] = f"{config['tracking'].get('name') or settings.display_name}-r{level}"
    run = settings_from_config(config)
    return run.with_speed_dir(settings.cfg.speed_dir)


def infeasible_record(
    settings: Any, size: tuple[int, int], reason: str, search: Search, speed: SpeedFigure | None = None
) -> TrialRecord:
    """result.json of a candidate that was never trained because it breaks a budget."""
    record = TrialRecord.header(trial_id=settings.trial_id, status=Status.INFEASIBLE, group=settings.cfg.tracking.group,
                                arch=ArchBlock.of(settings.preset, settings.arch), seed=settings.cfg.seed,
                                config=settings.config)  # fmt: skip
    record.complexity = Complexity(input_size=[3, 224, 224], convention=MAC_CONVENTION, deploy=Sizes(*size),
                                   deploy_is_train_form=not settings.arch.reparameterizable)  # fmt: skip
    record.error, record.search, record.speed = reason, search, speed
    return record


@contextlib.contextmanager
def trial_lock(trial_dir: Path) -> Iterator[bool]:
    """Hold the trial folder's lock (the one whatever trains the trial holds) while evaluating the candidate; yields
    False, holding nothing, when another process trains it now. The trial run inside takes the same lock again
    (re-entrant within this process)."""
    lock = FileLock(trial_dir / LOCK)
    try:
        lock.acquire(wait=False)
    except LockBusy:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def worker_loop(plan: SearchPlan, worker: int = 0) -> dict[str, Any]:
    """One worker: loop on the study until it holds n_trials trained trials; returns what this worker did."""
    study = open_study(plan, worker)
    ensure_screened(plan, study)  # search.screen: the first worker ranks the drawn candidates and enqueues the best
    n_trials = screened_trials(plan, study)
    ladder = plan.ladder
    promote = Promoter(ladder, n_trials) if ladder is not None else None
    budget = dataclasses.replace(plan.budget, n_trials=n_trials)
    runner = CandidateRunner(plan, worker, n_trials)
    kinds, reason = search_loop(study, budget, runner, poll_s=plan.poll_s, promote=promote)
    return {"worker": worker, "told": dict(kinds), "stopped": reason}


class SearchWorker(submitit.helpers.Checkpointable):
    """A worker job for submitit; on preemption or timeout it is requeued and rejoins the study."""

    def __init__(self, plan: SearchPlan, worker: int) -> None:
        self.plan, self.worker = plan, worker

    def __call__(self) -> dict[str, Any]:
        if not logging.getLogger().handlers:  # a batch job: log lines on stderr (the job's log file)
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return worker_loop(self.plan, self.worker)

"""The study: samplers, pruners, opening it, counting its trials, slots, heartbeats, the ask/tell loop."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from ..schema import Status
from .rung_table import PROMOTES
from .settings import SearchError, SearchSettings, grid_space
from .storage import quiet

_log = logging.getLogger(__name__)
KIND = "kind"  # trial user attribute: the Status a proposal ended with (completed, pruned, infeasible, duplicate, ...)
SKIPPED = (Status.INFEASIBLE, Status.DUPLICATE)  # proposals that trained nothing (too many of them stop the search)
RELEASED = (Status.INFEASIBLE, Status.DUPLICATE, Status.SURPLUS, Status.FAILED, Status.INTERRUPTED)  # no slot used


def kind(t: FrozenTrial) -> Status | None:
    """How a study trial ended, as the trial's Status (older studies' names, "trained", read as theirs)."""
    value = t.user_attrs.get(KIND)
    return None if value is None else Status.parse(value)


def make_sampler(s: SearchSettings, seed: int | None) -> optuna.samplers.BaseSampler:
    """The configured sampler; SearchError when `sampler_options` do not fit it."""
    opts = dict(s.sampler_options)
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


def make_pruner(s: SearchSettings, epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner over `epochs` epochs (per-epoch val top1 is its signal)."""
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(epochs))
    return optuna.pruners.NopPruner()


def worker_seed(seed: int, worker: int, finished: int) -> int:
    """Each worker (and each restart of it) draws from its own stream: equal seeds would propose equal candidates."""
    return int(np.random.SeedSequence([seed, worker, finished]).generate_state(1)[0])


@dataclass(frozen=True)
class Budget:
    """When workers stop: `n_trials` trained trials, or too many failures or skipped proposals."""

    n_trials: int
    max_failed: int
    max_skipped: int
    space: int | None = None  # distinct candidates of a finite space (None: a continuous multiplier)

    def stop_reason(self, counts: Counter) -> str | None:
        if counts["trained"] >= self.n_trials:
            return f"the study holds its {self.n_trials} trained trials"
        if self.space is not None and counts["proposed"] >= self.space and not counts["running"] + counts["waiting"]:
            return (
                f"every one of the space's {self.space} candidates has been proposed ({counts['trained']} trained, "
                f"{counts['infeasible']} infeasible, {counts['failed']} failed): a rerun cannot add more; widen "
                "search.space, relax search.constraints or lower search.n_trials"
            )
        if counts["failed"] >= self.max_failed:
            return f"{counts['failed']} trials failed (search.max_failed={self.max_failed}): see their result.json"
        if counts["skipped"] >= self.max_skipped:
            return (
                f"{counts['skipped']} proposals were infeasible or already trained (search.max_skipped="
                f"{self.max_skipped}): the sampler keeps proposing known candidates; raise search.max_skipped "
                "and rerun to continue"
            )
        return None


def candidate_key(params: dict[str, Any]) -> tuple:
    """A candidate's parameters as a hashable key (floats rounded as the trial config rounds them)."""
    return tuple(sorted((k, round(float(v), 10) if isinstance(v, float) else v) for k, v in params.items()))


def proposed_params(t: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial proposes: drawn ones, or an enqueued (waiting) trial's fixed ones."""
    return t.params or dict(t.system_attrs.get("fixed_params") or {})


def proposed_keys(trials: list[FrozenTrial]) -> set[tuple]:
    """The distinct candidates proposed and settled or under way: running, waiting, trained, skipped or failed
    (not a lost trial, whose retry waits with its parameters, nor a surplus or interrupted one: never trained)."""
    keys = set()
    for t in trials:
        ended = kind(t) if t.state.is_finished() else None
        lost = t.state == TrialState.FAIL and ended is None
        if not lost and ended not in (Status.SURPLUS, Status.INTERRUPTED) and proposed_params(t):
            keys.add(candidate_key(proposed_params(t)))
    return keys


def propose_untried(study: optuna.Study, grid: dict[str, list[Any]], seed: int) -> dict[str, Any] | None:
    """In a finite space, enqueue one candidate no trial has proposed yet (drawn with `seed`), unless one waits.

    A sampler that proposes known candidates again (TPE does, once a small space is mostly explored: 91 repeats
    of one point were seen) would otherwise skip its way to search.max_skipped with slots left; this keeps every
    skipped proposal followed by a new candidate, so a search reaches n_trials while the space has candidates.
    Returns the enqueued parameters (None when one already waits or the space is exhausted).
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING and not is_promotion(t) for t in trials):
        return None
    seen = proposed_keys(trials)
    names = sorted(grid)
    fresh = [c for c in itertools.product(*(grid[n] for n in names)) if candidate_key(dict(zip(names, c))) not in seen]
    if not fresh:
        return None
    params = dict(zip(names, fresh[np.random.default_rng(seed).integers(len(fresh))]))
    study.enqueue_trial(params, skip_if_exists=False)
    return params


def is_promotion(t: FrozenTrial) -> bool:
    """A multi-fidelity promotion (search.fidelity=asha): a candidate already started, trained at its next rung;
    it takes no slot (n_trials counts candidates) and is counted apart."""
    return bool(t.user_attrs.get(PROMOTES))


def holds_slot(t: FrozenTrial) -> bool:
    """Whether a trial takes one of the n_trials slots: trained, or running/queued towards training."""
    if is_promotion(t):
        return False
    ended = kind(t)
    if t.state == TrialState.WAITING:
        return True
    if t.state == TrialState.RUNNING:  # its kind is set just before the tell: the slot stays taken
        return ended not in RELEASED
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) and ended is not None and ended.trained


def tally(trials: list[FrozenTrial]) -> Counter:
    """trained, holding (slots taken), waiting (queued retries), running, failed, skipped, surplus, lost."""
    counts: Counter = Counter()
    for t in trials:
        ended = kind(t) if t.state.is_finished() else None
        if is_promotion(t):  # promotions: running, waiting, and how they ended, apart from the candidates' counts
            counts["running"] += t.state == TrialState.RUNNING
            counts["waiting"] += t.state == TrialState.WAITING
            counts["promotions"] += ended is not None and ended.trained
            counts["failed"] += ended is Status.FAILED
            told = ended is not None and (ended.trained or ended in RELEASED)
            counts["lost"] += t.state == TrialState.FAIL and not told
            continue
        counts["holding"] += holds_slot(t)
        counts["waiting"] += t.state == TrialState.WAITING
        counts["running"] += t.state == TrialState.RUNNING
        counts["trained"] += ended is not None and ended.trained
        counts["failed"] += ended is Status.FAILED
        counts["skipped"] += ended in SKIPPED
        counts["infeasible"] += ended is Status.INFEASIBLE
        counts["duplicate"] += ended is Status.DUPLICATE
        counts["surplus"] += ended is Status.SURPLUS
        told = ended is not None and (ended.trained or ended in RELEASED)
        counts["lost"] += t.state == TrialState.FAIL and not told  # a dead worker's: retried
    counts["proposed"] = len(proposed_keys(trials))
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
    ended: Status | str,
    values: list[float] | None = None,
    state: TrialState = TrialState.COMPLETE,
) -> str:
    """Tell the study how a trial ended (its kind first, so that counting never sees it half told); returns the
    kind's name, or "lost" when another worker had failed the trial as stale."""
    ended = Status.parse(ended)
    try:
        trial.set_user_attr(KIND, ended.value)
        study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker declared this trial stale (missed heartbeats) and queued a retry, which will find the
        # finished trial folder and report it without training again.
        _log.warning("trial %d was failed as stale by another worker; its retry reuses the result", trial.number)
        return "lost"
    return ended.value


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
    with quiet():
        optuna.storages.fail_stale_trials(study)


Evaluate = Callable[[optuna.Study, optuna.Trial], str]


Promote = Callable[[optuna.Study, Counter], bool]  # enqueue a promotion if one is due; True when it did


def search_loop(
    study: optuna.Study, budget: Budget, evaluate: Evaluate, *, poll_s: float = 2.0, promote: Promote | None = None
) -> tuple[Counter, str]:
    """Ask -> evaluate (which tells) until the study holds `budget.n_trials` trained trials.

    A worker only waits when every remaining slot is held by a running trial: at the very end, or while a dead
    worker's trial awaits its heartbeat deadline (after which it is retried here). With `promote` (a multi-fidelity
    search) a free worker first makes the promotion that is due, if any (ASHA's "promote before starting a new
    candidate"), and once every candidate has started it stays while any trial runs or waits: one may still
    arrive at a rung and make a promotion due.
    """
    mine: Counter = Counter()  # the kinds of the trials this worker told
    while True:
        fail_stale(study)
        counts = tally(study.get_trials(deepcopy=False))
        promoted = promote is not None and promote(study, counts)
        reason = budget.stop_reason(counts)
        full = counts["trained"] >= budget.n_trials
        if reason is not None and not (promote is not None and full and (promoted or counts["running"]
                                                                           or counts["waiting"])):  # fmt: skip
            _log.info("worker stops: %s", reason)
            return mine, reason
        if counts["holding"] >= budget.n_trials and not counts["waiting"] and not promoted:
            time.sleep(poll_s)
            continue
        with quiet():
            trial = study.ask()
        with heartbeat(study, trial):
            mine[evaluate(study, trial)] += 1

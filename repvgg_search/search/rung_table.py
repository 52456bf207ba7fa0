"""The rung table of a multi-fidelity search in the study's Optuna storage, and the claims of later promotions.

Every worker process and SLURM job of a search opens the same study (a journal file or an RDB), so the table lives
there: one study system attribute per (rung, candidate), `asha:<rung>:<trial id>`, written once by the trial that
reached the rung. Distinct keys never overwrite each other, so concurrent workers lose no entry in either storage
(the journal appends operations; an RDB inserts rows). Which candidates are paused comes from the trials
themselves: a candidate is paused at its last rung when a trial of it ended there as `stopped_early` (Optuna state
PRUNED) and no trial of it is running or queued.

A later promotion is an enqueued Optuna trial (the candidate's parameters, user attribute `asha_promotes =
"<trial id>@<rung>"`), which Optuna hands to exactly one worker (`ask()` pops a waiting trial atomically in both
storages). Two workers may enqueue the same promotion at the same moment: trial numbers order the claims, and only
the lowest-numbered one that has not failed trains (`holds_promotion`); the others end as duplicates (kind
`duplicate`, state FAIL). A failed claim (its worker died) does not block: its retry, which inherits the attribute,
takes over. A promotion that has run (stopped again, completed, or failed for good) is never made again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from .asha import Ladder, RungEntry, closed_rungs, continues, next_promotion, promotable

PREFIX = "asha:"  # study system attributes asha:<rung>:<trial id> -> RungEntry.to_json()
PROMOTES = "asha_promotes"  # user attribute of a promotion trial: "<trial id>@<rung it is promoted from>"
RUNG = "asha_rung"  # user attribute: the last rung the trial recorded (set before it is told)
TRIAL_ID = "trial_id"  # user attribute the worker already sets: the candidate's trial id
STOPPED_EARLY = "stopped_early"  # the `kind` user attribute (and result.json status) of a trial paused at a rung
KIND = "kind"
DUPLICATE = "duplicate"  # the kind of a promotion trial that lost its claim (told FAIL without training)
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)


class RungTable:
    """The study's rung table: `record` an arrival, `read` every rung's entries."""

    def __init__(self, study: optuna.Study) -> None:
        # Optuna has no public accessor for study system attributes since Study.system_attrs went; the storage
        # methods are its public BaseStorage interface.
        self._storage, self._study_id = study._storage, study._study_id

    @staticmethod
    def key(rung: int, trial_id: str) -> str:
        return f"{PREFIX}{rung}:{trial_id}"

    def record(self, entry: RungEntry) -> RungEntry:
        """Record an arrival once: a retried or resumed trial that reaches the same rung again keeps the first
        entry (its number orders ties). Returns the entry the table holds."""
        key = self.key(entry.rung, entry.trial_id)
        found = self._storage.get_study_system_attrs(self._study_id).get(key)
        if found is not None:
            return RungEntry.from_json(found)
        self._storage.set_study_system_attr(self._study_id, key, entry.to_json())
        return entry

    def read(self) -> dict[int, list[RungEntry]]:
        """rung -> its entries (in trial-number order), from one read of the storage."""
        table: dict[int, list[RungEntry]] = {}
        for key, value in self._storage.get_study_system_attrs(self._study_id).items():
            if key.startswith(PREFIX):
                entry = RungEntry.from_json(value)
                table.setdefault(entry.rung, []).append(entry)
        return {r: sorted(es, key=lambda e: (e.number, e.trial_id)) for r, es in sorted(table.items())}


def promotion_target(t: FrozenTrial) -> tuple[str, int] | None:
    """(trial id, rung) a promotion trial resumes, or None for a trial that is not a promotion."""
    value = t.user_attrs.get(PROMOTES)
    if not value:
        return None
    trial_id, _, rung = str(value).rpartition("@")
    return trial_id, int(rung)


def _candidate_of(t: FrozenTrial) -> str | None:
    target = promotion_target(t)
    return t.user_attrs.get(TRIAL_ID) or (target[0] if target else None)


def last_rungs(table: dict[int, Sequence[RungEntry]]) -> dict[str, int]:
    """candidate -> the highest rung it has an entry at."""
    out: dict[str, int] = {}
    for rung, entries in table.items():
        for e in entries:
            out[e.trial_id] = max(out.get(e.trial_id, rung), rung)
    return out


def paused(table: dict[int, Sequence[RungEntry]], trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """candidate -> the rung it is paused at: a trial of it ended there as stopped_early, none of its trials runs
    or waits, none completed, and no promotion of it from that rung has run already (ended otherwise than as a
    duplicate claim: a promotion that failed is not repeated, as a failed trial is not)."""
    trials = list(trials)
    active = {_candidate_of(t) for t in trials if t.state in ACTIVE}
    done = {_candidate_of(t) for t in trials if t.state == TrialState.COMPLETE}
    spent = {
        promotion_target(t)
        for t in trials
        if promotion_target(t) is not None and t.state.is_finished() and t.user_attrs.get(KIND) != DUPLICATE
    }
    stopped = {
        (t.user_attrs.get(TRIAL_ID), t.user_attrs.get(RUNG))
        for t in trials
        if t.state == TrialState.PRUNED and t.user_attrs.get(KIND) == STOPPED_EARLY
    }
    return {
        c: r
        for c, r in last_rungs(table).items()
        if c not in active and c not in done and (c, r) in stopped and (c, r) not in spent
    }


def holds_promotion(trials: Iterable[FrozenTrial], number: int) -> bool:
    """Whether trial `number` may train its promotion: no lower-numbered trial claims the same one, unless that
    one failed (a dead worker's claim, whose retry claims it again). A trial that promotes nothing holds."""
    trials = list(trials)
    mine = next(t for t in trials if t.number == number)
    target = promotion_target(mine)
    if target is None:
        return True
    return not any(t.number < number and promotion_target(t) == target and t.state != TrialState.FAIL for t in trials)


def enqueue_promotion(study: optuna.Study, entry: RungEntry) -> None:
    """Queue the candidate's parameters as a promotion from `entry.rung` (a worker's next `ask()` pops it)."""
    study.enqueue_trial(
        dict(entry.params),
        user_attrs={PROMOTES: f"{entry.trial_id}@{entry.rung}", TRIAL_ID: entry.trial_id},
        skip_if_exists=False,
    )


def active_next_rungs(
    table: dict[int, Sequence[RungEntry]], trials: Iterable[FrozenTrial], ladder: Ladder
) -> list[int]:
    """The next rung of every running or queued trial (a new candidate's is the first rung)."""
    last = last_rungs(table)
    out = []
    for t in trials:
        if t.state in ACTIVE:
            candidate = _candidate_of(t)
            out.append(ladder.next_level(last.get(candidate, 0) if candidate else 0))
    return out


def closed_now(
    table: dict[int, Sequence[RungEntry]], trials: Sequence[FrozenTrial], ladder: Ladder, budget_spent: bool
) -> frozenset[int]:
    """The rungs no candidate can still arrive at: counting the running and queued trials, and the candidates the
    plain quota promotes now (they will arrive at their next rung)."""
    waiting = paused(table, trials)
    arriving = active_next_rungs(table, trials, ladder)
    for rung, entries in table.items():
        here = [c for c, r in waiting.items() if r == rung]
        arriving += [
            ladder.next_level(rung)
            for _ in promotable(entries, here, ladder.eta, ladder.directions, tolerance=ladder.tolerance)
        ]
    return closed_rungs(ladder.levels, arriving, budget_spent)


def plan_promotion(
    table: dict[int, Sequence[RungEntry]], trials: Sequence[FrozenTrial], ladder: Ladder, budget_spent: bool
) -> RungEntry | None:
    """The promotion a free worker should enqueue now (top rung first), or None: start a new candidate (or, once
    the candidate budget is spent and this is None with nothing active, the search is over).

    budget_spent: no new candidate will start (search.n_trials candidates have). Rungs then close (promote at least
    their best) once no candidate can still arrive there.
    """
    closed = closed_now(table, trials, ladder, budget_spent)
    return next_promotion(table, paused(table, trials), ladder.eta, ladder.directions, closed, ladder.tolerance)


def arrival_continues(
    table: RungTable, entry: RungEntry, trials: Sequence[FrozenTrial], ladder: Ladder, budget_spent: bool
) -> bool:
    """Record a candidate's arrival at a rung and decide: True = continue training, False = stop early (pause).

    `trials` are the study's trials now; the arriving candidate's own are not counted as still to arrive.
    """
    held = table.record(entry)
    rungs = table.read()
    others = [t for t in trials if _candidate_of(t) != entry.trial_id]
    closed = closed_now(rungs, others, ladder, budget_spent)
    entries = rungs.get(entry.rung, [held])
    return continues(entries, entry.trial_id, ladder.eta, ladder.directions, entry.rung in closed, ladder.tolerance)

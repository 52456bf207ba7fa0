"""The one vocabulary of trial states: records, sweep and search status lines, tables, filters and the report."""

from __future__ import annotations

import enum

from ..errors import BadInputError


class Status(str, enum.Enum):
    """Every state a trial (or a search's proposal) is named by: in records, sweep and search status lines, tables,
    filters and the report. `WRITTEN` ones are what a result.json may hold; the others are only ever shown."""

    PLANNED = "planned"  # shown: in a sweep's plan, no record yet
    RUNNING = "running"  # in progress (a record whose process died is shown as `stopped`)
    STOPPED = "stopped"  # shown: the record says running but no process holds the trial
    UNREADABLE = "unreadable"  # shown: result.json is torn or edited
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # SIGTERM/SIGUSR2/preemption: rerun to resume from the checkpoint
    CANCELLED = "cancelled"
    DIVERGED = "diverged"  # a result: the loss became non-finite
    INFEASIBLE = "infeasible"  # a search candidate over a budget or not an architecture: never trained
    PRUNED = "pruned"  # a search trial stopped early by the pruner
    DUPLICATE = "duplicate"  # a search proposal of an architecture already trained: no trial of its own
    SURPLUS = "surplus"  # a search proposal asked after every slot was taken: no trial of its own
    STOPPED_EARLY = "stopped_early"  # a multi-fidelity (search.fidelity=asha) rung run not in its rung's top 1/eta:
    #   a finished short run, paused; the search may promote its candidate later
    PROMOTED = "promoted"  # search.kind of a rung run whose candidate went on to the next rung

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Status) -> Status:
        """A status from its name, an alias (wandb run states, older names), any case; BadInputError otherwise."""
        if isinstance(value, Status):
            return value
        text = str(value).strip().lower()
        text = _ALIASES.get(text, text)
        try:
            return cls(text)
        except ValueError:
            shown = [s.value for s in cls if s not in WRITTEN]
            allowed = ", ".join([*(s.value for s in WRITTEN), *shown, *_ALIASES])
            raise BadInputError(f"unknown state {value!r}; allowed: {allowed}") from None

    @property
    def terminal(self) -> bool:
        """Its run is over: nothing of ours works on the trial (interrupted trials resume, so are not)."""
        return self in _TERMINAL

    @property
    def is_result(self) -> bool:
        """A final result a rerun would only repeat (never retried)."""
        return self in (Status.COMPLETED, Status.INFEASIBLE, Status.DIVERGED, Status.STOPPED_EARLY, Status.PROMOTED)

    @property
    def trained(self) -> bool:
        """A training ran to its end (a search counts it towards `search.n_trials`)."""
        return self in (Status.COMPLETED, Status.PRUNED, Status.DIVERGED, Status.STOPPED_EARLY, Status.PROMOTED)

    @property
    def optuna_state(self) -> str:
        """The Optuna trial state a search tells for a proposal that ended so."""
        if self in (Status.PRUNED, Status.STOPPED_EARLY):
            return "PRUNED"
        return (
            "COMPLETE" if self in (Status.COMPLETED, Status.INFEASIBLE, Status.DIVERGED, Status.DUPLICATE) else "FAIL"
        )


WRITTEN = (Status.COMPLETED, Status.FAILED, Status.INTERRUPTED, Status.CANCELLED, Status.RUNNING, Status.INFEASIBLE,
           Status.PRUNED, Status.DIVERGED, Status.STOPPED_EARLY)  # fmt: skip
_TERMINAL = frozenset(
    (
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
        Status.INFEASIBLE,
        Status.DIVERGED,
        Status.PRUNED,
        Status.STOPPED_EARLY,
    )
)
# wandb run states (filters), and search outcomes as schema version 1 and older studies named them.
_ALIASES = {"finished": "completed", "crashed": "failed", "killed": "interrupted", "trained": "completed",
            "training": "running"}  # fmt: skip

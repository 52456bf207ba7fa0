"""Sequential seeds (`sweep.sequential=true`): a grid sweep over variants runs its seeds in batches along
`sweep.seed_schedule`, and after each batch only the comparisons against `sweep.baseline` that are still open get
more seeds (`analysis.sequential` decides: a group-sequential paired design with alpha spending and Holm).

Everything here is a function of the sweep's records: a driver restarted mid-way (or `sweep.action=status`) finds the
same state and the same next batch. Every seed the budget allows is planned (materialized) up front; a seed that
failed for good (failed after its retries, diverged, cancelled) is skipped, and the next seed takes its place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..analysis.sequential import SequentialDesign, sequential_state
from ..schema import Status
from .folder import PlannedTrial

GroupKey = tuple[tuple[str, str], ...]  # the other axes' values: each combination is its own family of comparisons


@dataclass
class Comparison:
    """One variant against the baseline within a group: its trials by seed and its sequential state."""

    group: GroupKey
    variant: str
    state: dict[str, Any]

    @property
    def open(self) -> bool:
        return self.state["verdict"] == "open"


def grouped(trials: list[PlannedTrial]) -> dict[GroupKey, dict[str, dict[int, str]]]:
    """group -> variant -> seed -> trial id, from the planned trials' axis values."""
    out: dict[GroupKey, dict[str, dict[int, str]]] = {}
    for t in trials:
        variant = t.axes.get("variant", t.axes.get("variant.name"))
        key = tuple(sorted((k, repr(v)) for k, v in t.axes.items() if k not in ("variant", "variant.name", "seed")))
        out.setdefault(key, {}).setdefault(str(variant), {})[int(t.axes["seed"])] = t.trial_id
    return out


class SequentialPlan:
    """The batches of a sequential sweep, read from its records through `status(tid)` and `top1(tid)`."""

    def __init__(self, trials: list[PlannedTrial], design: SequentialDesign, baseline: str) -> None:
        self.groups, self.design, self.baseline = grouped(trials), design, baseline

    def state(self, status: Callable[[str], Status], top1: Callable[[str], float | None]) -> list[Comparison]:
        """Every comparison's sequential state from the completed pairs (seeds where both trials completed)."""
        out = []
        for key, variants in self.groups.items():
            base = variants[self.baseline]
            diffs = {}
            for v, seeds in variants.items():
                if v == self.baseline:
                    continue
                pairs = [s for s in sorted(seeds) if s in base and all(status(t) is Status.COMPLETED
                                                                       for t in (seeds[s], base[s]))]  # fmt: skip
                diffs[v] = [top1(seeds[s]) - top1(base[s]) for s in pairs]
            d = self.design
            state = sequential_state(diffs, d.schedule, d.max_seeds, d.margin, d.alpha, spending=d.spending,
                                     gamma=d.gamma, futility=d.futility,
                                     pursue_equivalence=d.pursue_equivalence)  # fmt: skip
            out += [Comparison(key, v, state[v]) for v in diffs]
        return out

    def wanted(self, comparisons: list[Comparison], status: Callable[[str], Status]) -> list[str]:
        """The trials the next look needs: for every open comparison, the variant's and the baseline's lowest
        usable seeds up to its `next_n` pairs (a seed either trial of which failed for good is skipped)."""
        first = self.design.looks()[0]
        out: dict[str, None] = {}
        for c in comparisons:
            if not c.open:
                continue
            variants = self.groups[c.group]
            mine, base = variants[c.variant], variants[self.baseline]
            usable = [s for s in sorted(mine) if s in base and not (_lost(status(mine[s])) or _lost(status(base[s])))]
            for s in usable[: c.state["next_n"] or first]:
                out.update({mine[s]: None, base[s]: None})
        return list(out)

    def exhausted(self, comparisons: list[Comparison], status: Callable[[str], Status]) -> list[Comparison]:
        """Open comparisons whose budget of seeds cannot give the pairs their next look needs."""
        out = []
        for c in comparisons:
            variants = self.groups[c.group]
            mine, base = variants[c.variant], variants[self.baseline]
            usable = sum(not (_lost(status(mine[s])) or _lost(status(base[s]))) for s in mine if s in base)
            if c.open and usable < (c.state["next_n"] or 0):
                out.append(c)
        return out


def _lost(status: Status) -> bool:
    """A trial that ended for good without a top1 to pair (failed after its retries, diverged, cancelled, ...)."""
    return status.terminal and status is not Status.COMPLETED


def describe(comparisons: list[Comparison], design: SequentialDesign) -> list[str]:
    """One line per comparison for `sweep.action=status` and the driver's log: verdict or open, pairs, next look."""
    looks = design.looks()
    lines = []
    for c in comparisons:
        st, where = c.state, ", ".join(f"{k}={v}" for k, v in c.group)
        look = f"look {looks.index(st['n']) + 1} of {len(looks)}" if st["n"] in looks else "no look yet"
        verdict = f"open: needs {st['next_n']} pairs" if c.open else st["verdict"]
        diff = (
            ""
            if st["mean_diff"] is None
            else f", Δ {st['mean_diff']:+.2f} ({st['ci_low']:+.2f} .. {st['ci_high']:+.2f})"
        )
        lines.append(f"  {c.variant:<18} {verdict:<22} {st['n']} pairs ({st['n_available']} done), {look}{diff}"
                     + (f"  [{where}]" if where else ""))  # fmt: skip
    return lines

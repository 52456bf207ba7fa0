"""Multi-fidelity promotion (search.fidelity=asha): rung levels, the MO-ASHA rule, the rung recipe; pure functions.

Asynchronous successive halving (ASHA: Li, Jamieson, Rostamizadeh, Gonina, Ben-tzur, Hardt, Recht, Talwalkar, "A
System for Massively Parallel Hyperparameter Tuning", MLSys 2020, Algorithm 2) with the multi-objective ranking of
MO-ASHA (Schmucker, Donini, Zafar, Salinas, Archambeau, "Multi-objective Asynchronous Successive Halving", 2021,
arXiv 2106.12639: the "top 1/eta" of a rung taken by non-dominated sorting of the objectives). A rung is a number of
epochs; the candidates recorded at a rung are ranked by (1) Pareto front of their objective vector, (2) crowding
distance inside the front, larger first (Deb, Pratap, Agarwal, Meyarivan, "A Fast and Elitist Multiobjective
Genetic Algorithm: NSGA-II", IEEE TEC 6(2), 2002, Sec. III-A and III-B), then (3) the earlier recorded (lower
Optuna trial number), so every worker computes the same order. The vector holds the study's objectives in their
order, top1 being the top1 at the rung; the others (speed, MACs, params) are known before training.

The sort uses epsilon-dominance on top1 (Laumanns, Thiele, Deb, Zitzler, "Combining Convergence and Diversity in
Evolutionary Multiobjective Optimization", Evolutionary Computation 10(3), 2002, Sec. 3 (additive epsilon)): a
rung's top1 is measured on a finite validation set, so two candidates whose top1 differ by less than the
measurement's noise are not ranked by it. With search.top1_tolerance=auto, epsilon is one binomial standard error
of the difference of two top1 figures of the rung, 100 * sqrt(2 p (1 - p) / n) points (p: the rung's mean top1,
n: its validation images; 1.6 points at 95 % on digits' 359 images, 0.27 at 75 % on ImageNet's 50 000); a number
sets it in top1 points, 0 is plain Pareto dominance. Candidate x epsilon-dominates y when x is at least as good in
every objective, top1 counted within epsilon, and better in one, top1 by more than epsilon. The objectives known
before training are exact, so the relation stays acyclic (a cycle would need equal exact objectives and a top1
rising by more than epsilon at each step) and the fast non-dominated sort applies unchanged. A study whose only
objective is top1 has nothing else to rank by: there the tolerance is not applied.

A candidate arriving at a rung continues when it is among the first `quota` of the rung's order (the rung includes
it); otherwise it pauses (Optuna state PRUNED, kind `stopped_early`) and is promotable later: whenever it is among
the first `quota` of its rung and still paused, a free worker promotes it (ASHA's "promote later", top rung first).
quota(n) = floor(n / eta), ASHA's; a rung that no candidate can reach any more ("closed": the candidate budget is
spent and no active trial is below it) promotes at least its best, so a small search still finishes one.

The learning-rate schedule under promotion is budgeted ("Budgeted Training", Li, Yumer, Ramanan, ICLR 2020: the
learning rate decays to zero at the end of the budget). A candidate's run at rung r is a complete short run of the
recipe with train.epochs = r (`rung_recipe`), a trial of its own (its own id and folder); a promotion trains the
next level from scratch, and the last level is exactly the full-fidelity trial. Measured with
benchmarks/rung_correlation.py (digits, 8 widths, train.epochs 9, rungs 1 and 3), Kendall's tau of the top1 at
the rung with the final top1: 0.37 (rung 1) and 0.74 (rung 3) with budgeted runs, against 0.00 and 0.30 when the
same epochs are read from one 9-epoch cosine continued across rungs (tau's standard error at n = 8 is about 0.29:
suggestive, and in the direction Li et al. report). The price is that promoted candidates train their lower levels
again: 3.0 versus 2.33 rung-1 budgets per started candidate with eta 3 and two rungs (`epochs_per_candidate`).

Nothing here touches a storage or torch: `rung_table.py` keeps the table in the study's Optuna storage. Directions
are the study's (`SearchPlan.directions`): "maximize" or "minimize" per objective.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInputError

FIDELITIES = ("none", "asha")  # search.fidelity: none = every candidate trains train.epochs
# Objectives known before training (the deploy form's speed and size): the only ones a rung can compare besides
# top1. INT8 figures are measured after training, so a multi-fidelity search cannot rank by them.
PRE_TRAINING_OBJECTIVES = ("images_per_s", "latency_ms", "macs", "params")
DIRECTIONS = ("maximize", "minimize")
SCHEDULES = ("budgeted", "continued")  # a run per rung from scratch (the default) | one schedule resumed at promotion


class FidelityError(BadInputError):
    """A multi-fidelity setting (search.fidelity, search.min_epochs, search.eta, search.top1_tolerance) cannot be
    used."""


@dataclass(frozen=True)
class RungEntry:
    """One candidate's record at one rung.

    trial_id: the candidate: the trial id of its full-fidelity run (the same at every rung, across promotions and
        retries; with the budgeted schedule each rung's run has a trial id and folder of its own).
    number: the Optuna trial that recorded it (the last tie-break: earlier first).
    rung: the rung level (epochs of the run it was recorded after).
    values: the study's objectives in their order, top1 being the validation top1 of that run.
    params: the Optuna parameters of the candidate (what a later promotion enqueues again).
    images: the validation images its top1 was measured on (metrics.val_images; None in tables written before
        this field, where search.top1_tolerance=auto counts no noise).
    """

    trial_id: str
    number: int
    rung: int
    values: tuple[float, ...]
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    images: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "number": self.number, "rung": self.rung, "values": list(self.values),
                "params": dict(self.params), "images": self.images}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RungEntry:
        images = data.get("images")
        return cls(str(data["trial_id"]), int(data["number"]), int(data["rung"]),
                   tuple(float(v) for v in data["values"]), dict(data.get("params") or {}),
                   None if images is None else int(images))  # fmt: skip


@dataclass(frozen=True)
class Tolerance:
    """How far apart two top1 figures of a rung must be before the rung ranks by them (module docstring).

    index: top1's position in the objective vector. setting: "auto" (one standard error of the difference) or a
    number of top1 points.
    """

    index: int
    setting: float | str = "auto"

    def epsilon(self, entries: Sequence[RungEntry]) -> float:
        """Epsilon in top1 points for these entries (one rung)."""
        if self.setting != "auto":
            return float(self.setting)
        counts = [e.images for e in entries if e.images]
        tops = [e.values[self.index] for e in entries if math.isfinite(e.values[self.index])]
        if not counts or not tops:
            return 0.0
        p = min(max(sum(tops) / len(tops) / 100.0, 0.0), 1.0)
        return 100.0 * math.sqrt(2.0 * p * (1.0 - p) / min(counts))

    def slack(self, entries: Sequence[RungEntry]) -> tuple[float, ...] | None:
        """Per-objective slack for `nondominated_fronts` (epsilon on top1, 0 elsewhere); None when nothing else
        ranks (top1 is the only objective) or epsilon is 0."""
        if not entries or len(entries[0].values) < 2:
            return None
        eps = self.epsilon(entries)
        if eps <= 0:
            return None
        return tuple(eps if i == self.index else 0.0 for i in range(len(entries[0].values)))


@dataclass(frozen=True)
class Ladder:
    """A study's promotion settings: its rung levels, train.epochs (the full fidelity), eta, and the directions of
    the objectives its rung entries hold (in the study's order)."""

    levels: tuple[int, ...]
    epochs: int
    eta: int
    directions: tuple[str, ...]
    tolerance: Tolerance | None = None

    @classmethod
    def of(
        cls,
        min_epochs: int | None,
        eta: int,
        epochs: int,
        objectives: Sequence[str],
        directions: Sequence[str],
        top1_tolerance: Any = "auto",
    ) -> Ladder:
        """Validated (FidelityError names the key); min_epochs null = `default_min_epochs`."""
        if min_epochs is None:
            min_epochs = default_min_epochs(eta, epochs) if isinstance(eta, int) and eta >= 2 else 1
        levels = check_fidelity("asha", min_epochs, eta, epochs, objectives)
        setting = check_tolerance(top1_tolerance)
        return cls(tuple(levels), epochs, eta, tuple(directions), Tolerance(list(objectives).index("top1"), setting))

    def next_level(self, epochs_done: int) -> int:
        """The first rung after `epochs_done` finished epochs, or train.epochs when none is left."""
        return next_level(self.levels, epochs_done, self.epochs)


def default_min_epochs(eta: int, epochs: int) -> int:
    """search.min_epochs null: two halvings below train.epochs, floor(epochs / eta**2), at least 1 (18 epochs,
    eta 3: rungs 2 and 6; 120 epochs: 13, 39 and 117)."""
    return max(1, epochs // eta**2)


def rung_levels(min_epochs: int, eta: int, epochs: int) -> list[int]:
    """The rungs: min_epochs * eta**k for k = 0, 1, ... while below `epochs` (train.epochs).

    Reaching train.epochs completes a trial (no decision there). When train.epochs is not min_epochs * eta**K,
    the last step is shorter than a factor eta (min 2, eta 3, 20 epochs: rungs 2, 6, 18, then 20), as with Syne
    Tune's max_t; the rungs themselves stay powers, so a study's rungs do not move when train.epochs does.
    """
    levels, r = [], min_epochs
    while r < epochs:
        levels.append(r)
        r *= eta
    return levels


def rung_recipe(epochs: int, warmup_epochs: float, rung: int) -> dict[str, Any]:
    """The train.* overrides of a candidate's run at `rung` (budgeted: a complete schedule over `rung` epochs).

    The warm-up is kept when it is shorter than the run (what benchmarks/rung_correlation.py measured); otherwise
    it is scaled with the run, warmup_epochs * rung / epochs, so that it stays below train.epochs as it must.
    """
    warmup = warmup_epochs if warmup_epochs < rung else warmup_epochs * rung / epochs
    return {"epochs": int(rung), "warmup_epochs": float(warmup)}


def epochs_per_candidate(levels: Sequence[int], epochs: int, eta: int, schedule: str = "budgeted") -> float:
    """Expected epochs per started candidate when a 1/eta share moves up at every rung: budgeted runs train each
    level from scratch (sum of eta**-k * level_k), a continued schedule only the epochs between levels."""
    if schedule not in SCHEDULES:
        raise FidelityError(f"search.rung_schedule={schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}")
    tops = [*levels, epochs]
    if schedule == "budgeted":
        return sum(level / eta**k for k, level in enumerate(tops))
    return sum((level - (tops[k - 1] if k else 0)) / eta**k for k, level in enumerate(tops))


def check_fidelity(
    fidelity: str, min_epochs: int | None, eta: Any, epochs: int, objectives: Sequence[str]
) -> list[int]:
    """The rung levels of valid settings; FidelityError naming the key otherwise (before anything is launched)."""
    if fidelity not in FIDELITIES:
        raise FidelityError(f"search.fidelity={fidelity!r} is unknown; allowed: {', '.join(FIDELITIES)}")
    if fidelity == "none":
        return []
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise FidelityError(f"search.eta={eta!r} must be an integer >= 2 (keep the top 1/eta at each rung; 3 is usual)")
    if isinstance(min_epochs, bool) or not isinstance(min_epochs, int) or not 1 <= min_epochs < epochs:
        raise FidelityError(
            f"search.min_epochs={min_epochs!r} must be an integer in [1, train.epochs={epochs}): the first rung, "
            f"where the first promotion is decided"
        )
    if "top1" not in objectives:
        raise FidelityError(f"search.fidelity=asha ranks by top1 at each rung: search.objectives={list(objectives)} "
                            "must include top1")  # fmt: skip
    late = [o for o in objectives if o != "top1" and o not in PRE_TRAINING_OBJECTIVES]
    if late:
        raise FidelityError(
            f"search.fidelity=asha ranks candidates at each rung by top1 and objectives known before training "
            f"({', '.join(PRE_TRAINING_OBJECTIVES)}); {late} are measured after training: use search.fidelity=none"
        )
    return rung_levels(min_epochs, eta, epochs)


def check_tolerance(value: Any) -> float | str:
    """search.top1_tolerance: "auto" or a finite number >= 0 (top1 points); FidelityError otherwise."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise FidelityError(
            f"search.top1_tolerance={value!r} must be 'auto' (one standard error of the difference of two rung "
            f"top1 figures) or a number of top1 points >= 0 (0 = plain Pareto dominance)"
        )
    return float(value)


def _costs(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[tuple[float, ...]]:
    """Every objective as a cost (lower is better); a non-finite value is the worst possible."""
    if any(d not in DIRECTIONS for d in directions):
        raise ValueError(f"directions {list(directions)} must each be one of {DIRECTIONS}")
    out = []
    for p in points:
        if len(p) != len(directions):
            raise ValueError(f"a point has {len(p)} values for {len(directions)} directions")
        out.append(
            tuple((-v if d == "maximize" else v) if math.isfinite(v) else math.inf for v, d in zip(p, directions))
        )
    return out


def _dominates(a: Sequence[float], b: Sequence[float], slack: Sequence[float]) -> bool:
    """a (epsilon-)dominates b, both costs: no worse than b + slack anywhere, better than b - slack somewhere."""
    return all(x <= y + s for x, y, s in zip(a, b, slack)) and any(x < y - s for x, y, s in zip(a, b, slack))


def nondominated_fronts(
    points: Sequence[Sequence[float]], directions: Sequence[str], slack: Sequence[float] | None = None
) -> list[list[int]]:
    """Indices of `points` by Pareto front, best front first (Deb et al. 2002, fast non-dominated sort); inside
    a front, indices keep their input order. Equal points are in the same front.

    slack: per objective, how much better a value must be to count (epsilon-dominance, module docstring); None =
    plain dominance. Only an objective of its own may carry slack while the others have none (acyclic then).
    """
    costs = _costs(points, directions)
    n = len(costs)
    slack = tuple(slack) if slack is not None else (0.0,) * len(directions)
    dominated_by = [[j for j in range(n) if _dominates(costs[i], costs[j], slack)] for i in range(n)]
    count = [sum(_dominates(costs[j], costs[i], slack) for j in range(n)) for i in range(n)]
    fronts, current = [], [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return fronts


def crowding_distances(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """NSGA-II's crowding distance of each point within the set given (one front): per objective, the gap between
    its two neighbours over the objective's range, summed; the extremes of every objective get infinity.

    Neighbours are taken in a stable order (value, then input position), so equal points get defined distances.
    An objective whose values are all equal (or not finite) adds nothing to interior points.
    """
    costs = _costs(points, directions)
    n = len(costs)
    dist = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(directions)):
        order = sorted(range(n), key=lambda i: (costs[i][m], i))
        low, high = costs[order[0]][m], costs[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        span = high - low
        if not (math.isfinite(span) and span > 0):
            continue
        for k in range(1, n - 1):
            gap = costs[order[k + 1]][m] - costs[order[k - 1]][m]
            dist[order[k]] += gap / span if math.isfinite(gap) else 0.0
    return dist


def rank(
    entries: Sequence[RungEntry], directions: Sequence[str], tolerance: Tolerance | None = None
) -> list[RungEntry]:
    """The rung's order, best first: front (epsilon-dominance on top1 with `tolerance`), then crowding distance
    (larger first), then trial number."""
    slack = tolerance.slack(entries) if tolerance is not None else None
    fronts = nondominated_fronts([e.values for e in entries], directions, slack)
    ordered = []
    for front in fronts:
        members = [entries[i] for i in front]
        dist = crowding_distances([e.values for e in members], directions)
        ordered += [e for _, e in sorted(zip(dist, members), key=lambda t: (-t[0], t[1].number, t[1].trial_id))]
    return ordered


def quota(n: int, eta: int, closed: bool = False) -> int:
    """How many of a rung's n candidates rank as its top 1/eta: floor(n / eta) (ASHA), at least 1 once closed."""
    k = n // eta
    return max(k, 1) if closed and n > 0 else k


def continues(
    entries: Sequence[RungEntry],
    trial_id: str,
    eta: int,
    directions: Sequence[str],
    closed: bool = False,
    tolerance: Tolerance | None = None,
) -> bool:
    """The decision for a candidate arriving at a rung: whether it is in the top 1/eta of the rung's entries
    (which must include its own)."""
    order = rank(entries, directions, tolerance)
    position = next((i for i, e in enumerate(order) if e.trial_id == trial_id), None)
    if position is None:
        raise ValueError(f"candidate {trial_id} has no entry at this rung: record it before deciding")
    return position < quota(len(order), eta, closed)


def promotable(
    entries: Sequence[RungEntry],
    paused: Iterable[str],
    eta: int,
    directions: Sequence[str],
    closed: bool = False,
    tolerance: Tolerance | None = None,
) -> list[RungEntry]:
    """The rung's candidates to resume now: in its top 1/eta and paused there (best first)."""
    waiting = set(paused)
    order = rank(entries, directions, tolerance)
    return [e for e in order[: quota(len(order), eta, closed)] if e.trial_id in waiting]


def next_promotion(
    table: Mapping[int, Sequence[RungEntry]],
    paused: Mapping[str, int],
    eta: int,
    directions: Sequence[str],
    closed: Iterable[int] = (),
    tolerance: Tolerance | None = None,
) -> RungEntry | None:
    """The one promotion a free worker should make, top rung first (ASHA's get_job), or None.

    table: rung -> its entries. paused: candidate -> the rung it is paused at (its last rung).
    closed: the rungs no candidate can still reach (see `closed_rungs`).
    """
    shut = set(closed)
    for rung in sorted(table, reverse=True):
        here = [t for t, r in paused.items() if r == rung]
        found = promotable(table[rung], here, eta, directions, rung in shut, tolerance) if here else []
        if found:
            return found[0]
    return None


def closed_rungs(levels: Sequence[int], active_next: Iterable[int], budget_spent: bool) -> frozenset[int]:
    """Rungs no candidate can reach any more: none while new candidates may still start; else those below every
    active (running or queued) trial's next rung."""
    if not budget_spent:
        return frozenset()
    lowest = min(active_next, default=math.inf)
    return frozenset(r for r in levels if r < lowest)


def next_level(levels: Sequence[int], epochs_done: int, epochs: int) -> int:
    """The first rung after `epochs_done` finished epochs, or train.epochs when none is left."""
    return next((r for r in levels if r > epochs_done), epochs)

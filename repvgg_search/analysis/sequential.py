"""Sequential seeds for ablations: after each batch of seeds, every comparison against the baseline is updated and
only the open ones get more. A group-sequential design per comparison (paired t at the schedule's looks, floored by
the exact sign-flip test, alpha spent along the schedule), Holm over the comparisons on sequential p-values,
repeated confidence intervals for equivalence, and a futility stop when the budget left cannot settle it.

Why a group-sequential design and not confidence sequences (Howard, Ramdas, McAuliffe & Sekhon, Ann. Statist. 2021):
with 3 to 40 seeds, an unknown spread and looks only at planned batches, anytime-valid intervals pay for validity at
every seed and come out much wider than an alpha-spending design that pays only at its few looks; and the library
for them, confseq 0.0.11, does not build here (its C++ extension needs the Boost headers). The t-statistics use the
significance-level approach (Jennison & Turnbull, Group Sequential Methods, 2000): each look's nominal p is compared
with the thresholds of the normal-theory design; benchmarks/sequential_seeds.py checks the resulting error rates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.special import ndtr

from ..errors import BadInputError
from .group_sequential import SPENDING, look_level, nominal_levels, threshold
from .stats import EXACT_MAX_N, holm_rows, paired_t_rows, sign_flip_pvalues, smallest_exact_n

DEFAULT_SCHEDULE = (3, 5, 8, 12)
OPEN = "open"
VERDICTS = ("better", "worse", "equivalent", "undecided")
_CODES = (OPEN, *VERDICTS)  # verdict codes in the arrays: index into this tuple
_O, _B, _W, _E, _U = range(5)


@dataclass(frozen=True)
class SequentialDesign:
    """What a sequential ablation decides with: the seed schedule and budget, the equivalence margin, the error
    rate over all comparisons, the spending function and the futility threshold."""

    schedule: tuple[int, ...] = DEFAULT_SCHEDULE  # sweep.seed_schedule: paired seeds after each batch
    max_seeds: int | None = None  # sweep.max_seeds: the budget per comparison; None: the schedule's last
    margin: float = 0.5  # sweep.margin: top1 points; equivalent = the whole interval inside +-margin
    alpha: float = 0.05  # family-wise error rate over all comparisons (Holm), and 1 - the intervals' coverage
    spending: str = "hsd"  # the spending function family (group_sequential.spending)
    gamma: float = -2.0  # the Hwang-Shih-DeCani parameter (spending="hsd"): between Pocock (1) and OBF (-4)
    futility: float = 0.1  # stop undecided when the predictive probability of a verdict by max_seeds is below
    pursue_equivalence: float = 0.9  # but keep it open while the predictive probability of `equivalent` is >= this

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", tuple(self.schedule))  # a list from a config reads the same
        s = self.schedule
        if not s or any(isinstance(n, bool) or not isinstance(n, int) for n in s) or s[0] < 2:
            raise BadInputError(f"sweep.seed_schedule={list(s)!r} must be integers >= 2 (paired seeds per batch)")
        if any(b <= a for a, b in itertools.pairwise(s)):
            raise BadInputError(f"sweep.seed_schedule={list(s)!r} must increase strictly")
        m = self.max_seeds
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < s[0]):
            raise BadInputError(f"sweep.max_seeds={m!r} must be an integer >= the schedule's first entry ({s[0]})")
        if not (isinstance(self.margin, int | float) and self.margin > 0):
            raise BadInputError(f"sweep.margin={self.margin!r} must be a number > 0 (top1 points)")
        if not 0 < self.alpha < 0.5:
            raise BadInputError(f"SequentialDesign.alpha={self.alpha!r} must lie in (0, 0.5)")
        if self.spending not in SPENDING:
            raise BadInputError(f"sweep.spending={self.spending!r} is not known; allowed: {', '.join(SPENDING)}")
        if not 0 <= self.futility < 1:
            raise BadInputError(f"sweep.futility={self.futility!r} must lie in [0, 1) (0: never stop early)")
        if not 0 < self.pursue_equivalence <= 1:
            raise BadInputError(f"sweep.pursue_equivalence={self.pursue_equivalence!r} must lie in (0, 1]")

    def looks(self) -> tuple[int, ...]:
        """The pair counts at which comparisons are updated: the schedule's entries below max_seeds, then (past its
        last entry) batches of its last batch's size (12 - 8 = 4: 16, 20, ...), ending at max_seeds."""
        s = self.schedule
        top = s[-1] if self.max_seeds is None else self.max_seeds
        out = [n for n in s if n < top]
        step = s[-1] - s[-2] if len(s) > 1 else s[0]
        while top > s[-1] and out[-1] + step < top:
            out.append(out[-1] + step)
        return (*out, top)

    def fractions(self) -> tuple[float, ...]:
        looks = self.looks()
        return tuple(n / looks[-1] for n in looks)


def _perm_bound(x: np.ndarray, level: float, side: int) -> np.ndarray:
    """The end (side +1: upper, -1: lower) of {delta: sign-flip p(x - delta) > level}, by bisection: the p-value
    falls monotonically away from the mean, reaching 2^(1-n) beyond the data (then the end is the data's extreme)."""
    n = x.shape[-1]
    if 2.0 ** (1 - n) > level:
        return np.full(len(x), side * math.inf)
    inner, outer = x.mean(axis=-1), (x.max(axis=-1) if side > 0 else x.min(axis=-1))
    for _ in range(40):
        mid = (inner + outer) / 2
        rejected = sign_flip_pvalues(x - mid[:, None]) <= level
        inner, outer = np.where(rejected, inner, mid), np.where(rejected, mid, outer)
    return outer


def _equivalence_ok(x: np.ndarray, margin: float, level: float) -> np.ndarray:
    """Whether the sign-flip test rejects both +-margin (so its interval lies inside the margin)."""
    if 2.0 ** (1 - x.shape[-1]) > level:
        return np.zeros(len(x), dtype=bool)
    return (sign_flip_pvalues(x - margin) <= level) & (sign_flip_pvalues(x + margin) <= level)


def _predictive(mean, std, n: int, total: int, reject_thr, equiv_thr: float, margin: float):
    """Predictive probabilities (flat prior on the effect, the spread taken as known) that the comparison rejects,
    and that it is equivalent, at the final look: Spiegelhalter, Freedman & Blackburn, Controlled Clin. Trials 1986,
    7:8-17. The final mean is N(mean, std^2 (N - n) / (n N)); it rejects beyond the final t threshold at the
    comparison's Holm level, and is equivalent when it sits inside the margin by more than the final interval's
    half-width. With no spread seen both are 1: no basis to stop."""
    spread = std * math.sqrt((total - n) / (n * total))
    scale = std / math.sqrt(total)
    h = sps.t.isf(reject_thr / 2, total - 1) * scale
    e = margin - sps.t.isf(equiv_thr / 2, total - 1) * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        reject = ndtr((mean - h) / spread) + ndtr((-h - mean) / spread)
        equiv = np.where(e > 0, ndtr((e - mean) / spread) - ndtr((-e - mean) / spread), 0.0)
    return np.where(spread > 0, reject, 1.0), np.where(spread > 0, equiv, 1.0)


def _look(x: np.ndarray, design: SequentialDesign, k: int, report: bool) -> dict[str, np.ndarray]:
    """One look's statistics for rows of n paired differences: mean, nominal p, sequential level, interval."""
    n, frac = x.shape[-1], design.fractions()
    thr = float(nominal_levels(frac, design.alpha, design.spending, design.gamma)[k])
    mean, std, p_t = paired_t_rows(x)
    p = np.maximum(p_t, 2.0 ** (1 - n))  # never below what the exact sign-flip test can give with n pairs
    if n <= EXACT_MAX_N:
        # the sign-flip p matters only where the t-test alone could clear the largest threshold (reports: always)
        need = np.ones(len(x), dtype=bool) if report else p_t <= thr
        p[need] = np.maximum(p_t[need], sign_flip_pvalues(x[need]))
    level = look_level(frac, p, k, design.spending, design.gamma)
    half = sps.t.isf(thr / 2, n - 1) * std / math.sqrt(n) if 2.0 ** (1 - n) <= thr else np.full(len(x), math.inf)
    lo, hi = mean - half, mean + half
    if report and n <= EXACT_MAX_N:  # the interval both tests accept: t's and the sign-flip test's
        lo, hi = np.minimum(lo, _perm_bound(x, thr, -1)), np.maximum(hi, _perm_bound(x, thr, +1))
    inside = (lo > -design.margin) & (hi < design.margin)
    if not report and n <= EXACT_MAX_N and inside.any():
        inside[inside] = _equivalence_ok(x[inside], design.margin, thr)
    return {"mean": mean, "std": std, "p": p, "level": level, "lo": lo, "hi": hi, "inside": inside}


def _close(state: dict[str, np.ndarray], rows, got: dict[str, np.ndarray], design: SequentialDesign, k: int):
    """After Holm: open comparisons of this look become equivalent, or undecided (last look, or futility)."""
    code = state["code"]
    still = code[rows] == _O
    code_rows = code[rows]
    code_rows[still & got["inside"]] = _E
    looks = design.looks()
    if k == len(looks) - 1:
        code_rows[code_rows == _O] = _U
    elif design.futility > 0:
        frac, a = design.fractions(), design.alpha
        m = code.shape[-1]
        rejected = np.isin(code, (_B, _W)).sum(axis=-1)  # per ablation
        local = a / np.maximum(1, m - rejected)[rows[0]]  # the level Holm tests the next rejection at
        final = threshold(frac, local, len(looks) - 1, design.spending, design.gamma)
        final_eq = float(nominal_levels(frac, a, design.spending, design.gamma)[-1])
        reject, equiv = _predictive(got["mean"], got["std"], looks[k], looks[-1], final, final_eq, design.margin)
        hopeless = (reject < design.futility) & (equiv < design.pursue_equivalence)
        code_rows[(code_rows == _O) & hopeless] = _U
    code[rows] = code_rows


def evaluate(
    diffs: np.ndarray, available: np.ndarray, design: SequentialDesign, report: bool = False
) -> dict[str, np.ndarray]:
    """Replay the design's looks over ablations at once: `diffs` (ablations, comparisons, pairs) in seed order
    (NaN past what exists), `available` (ablations, comparisons) the pairs each has. A look is taken for an ablation
    only when every open comparison has its pairs; comparisons closed earlier keep their state (pairs past their
    close are not used). Returns arrays: code (index into OPEN + VERDICTS), n, mean, lo, hi, p (nominal), p_seq,
    p_holm, looks_done (per ablation). `report`: exact sign-flip terms everywhere (else only where they matter)."""
    a_n, c_n = diffs.shape[:2]
    shape = (a_n, c_n)
    state = {"code": np.zeros(shape, int), "n": np.zeros(shape, int), "mean": np.full(shape, np.nan),
             "lo": np.full(shape, -math.inf), "hi": np.full(shape, math.inf), "p": np.full(shape, np.nan),
             "p_seq": np.ones(shape), "p_holm": np.ones(shape), "looks_done": np.zeros(a_n, int)}  # fmt: skip
    stalled = np.zeros(a_n, dtype=bool)
    for k, n in enumerate(design.looks()):
        live = state["code"] == _O
        stalled |= (live & (available < n)).any(axis=-1)
        rows = np.nonzero(live & ~stalled[:, None])
        if len(rows[0]) == 0:
            continue
        got = _look(diffs[rows][:, :n], design, k, report)
        for key in ("mean", "lo", "hi", "p"):
            state[key][rows] = got[key]
        state["n"][rows] = n
        state["p_seq"][rows] = np.minimum(state["p_seq"][rows], got["level"])
        state["p_holm"] = holm_rows(state["p_seq"])
        hit = (state["p_holm"] < design.alpha) & ~np.isin(state["code"], (_B, _W))
        state["code"][hit] = np.where(state["mean"][hit] > 0, _B, _W)  # Holm may also settle a closed one
        _close(state, rows, got, design, k)
        state["looks_done"][np.unique(rows[0])] = k + 1
    return state


def _as_array(diffs_by_comparison: Mapping[str, Sequence[float]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = list(diffs_by_comparison)
    rows = [np.asarray(list(diffs_by_comparison[k]), dtype=float) for k in names]
    for name, row in zip(names, rows):
        if row.ndim != 1 or np.isnan(row).any():
            raise BadInputError(f"paired differences of {name!r} must be a flat list of numbers in seed order (no NaN)")
    width = max([len(r) for r in rows] + [1])
    x = np.full((1, len(rows), width), np.nan)
    for i, row in enumerate(rows):
        x[0, i, : len(row)] = row
    return names, x, np.array([[len(r) for r in rows]])


def sequential_state(
    diffs_by_comparison: Mapping[str, Sequence[float]],
    schedule: Sequence[int] = DEFAULT_SCHEDULE,
    max_seeds: int | None = None,
    margin: float = 0.5,
    alpha: float = 0.05,
    **design_options: Any,
) -> dict[str, dict[str, Any]]:
    """The state of every comparison against the baseline, from the paired differences recorded so far (each
    comparison's, in seed order): a pure function of them, so a driver restarted mid-way recomputes the same state.

    Per comparison: `n` pairs used by the last look, `n_available`, `verdict` (`open`, `better`, `worse`,
    `equivalent`, `undecided`), `mean_diff`, `ci_low`/`ci_high` (the repeated confidence interval at level
    1 - alpha of that look: infinite while too few pairs; None before the first look), `p_nominal` (that look's p), `p` (the sequential p-value),
    `p_holm`, and `next_n`: the pairs it needs before the next update (None once closed). A look is taken only when
    every open comparison has its pairs. `design_options`: the other SequentialDesign fields (spending, gamma,
    futility, pursue_equivalence).
    """
    design = SequentialDesign(tuple(schedule), max_seeds, margin, alpha, **design_options)
    names, x, available = _as_array(diffs_by_comparison)
    if not names:
        return {}
    state = evaluate(x, available, design, report=True)
    looks, done = design.looks(), int(state["looks_done"][0])
    out = {}
    for i, name in enumerate(names):
        code = int(state["code"][0, i])
        seen = int(state["n"][0, i]) > 0
        out[name] = {
            "n": int(state["n"][0, i]),
            "n_available": int(available[0, i]),
            "verdict": _CODES[code],
            "mean_diff": float(state["mean"][0, i]) if seen else None,
            "ci_low": float(state["lo"][0, i]) if seen else None,
            "ci_high": float(state["hi"][0, i]) if seen else None,
            "p_nominal": float(state["p"][0, i]) if seen else None,
            "p": float(state["p_seq"][0, i]),
            "p_holm": float(state["p_holm"][0, i]),
            "next_n": looks[done] if code == _O else None,
        }
    return out


SEQUENTIAL_COLUMNS = ["baseline", "n_pairs", "n_available", "seeds", "mean_diff", "ci_low", "ci_high", "p_nominal",
                      "p_seq", "p_holm", "verdict", "next_n", "margin"]  # fmt: skip


def sequential_comparisons(
    df: pd.DataFrame,
    by: str = "variant",
    baseline: Any = "full",
    value: str = "top1",
    pair_on: str = "seed",
    design: SequentialDesign | None = None,
) -> pd.DataFrame:
    """`paired_comparisons` for a sequential sweep: every group against the baseline, paired on `pair_on` (seeds in
    ascending order; a repeated run counts once, as its mean), with the sequential state of each comparison."""
    design = design or SequentialDesign()
    groups = [] if df.empty else list(pd.unique(df[by].dropna()))
    if groups and baseline not in groups:
        raise BadInputError(f"sweep.baseline={baseline!r} has no rows in column {by!r}; groups present: {groups}")
    usable = df[df[value].notna() & df[pair_on].notna()]
    means = usable.groupby([by, pair_on], sort=True)[value].mean()
    base = means[baseline] if groups else pd.Series(dtype=float)
    others = [g for g in groups if g != baseline]
    diffs, seeds = {}, {}
    for g in others:
        mine = means[g]
        common = mine.index.intersection(base.index).sort_values()
        diffs[g], seeds[g] = (mine[common] - base[common]).to_numpy(), list(common)
    state = sequential_state(diffs, design.schedule, design.max_seeds, design.margin, design.alpha,
                             spending=design.spending, gamma=design.gamma, futility=design.futility,
                             pursue_equivalence=design.pursue_equivalence)  # fmt: skip
    rows = []
    for g in others:
        st = state[g]
        used = ",".join(str(int(s)) if float(s).is_integer() else str(s) for s in seeds[g][: st["n"]])
        rows.append({by: g, "baseline": baseline, "n_pairs": st["n"], "n_available": st["n_available"],
                     "seeds": used, **{k: st[k] for k in ("mean_diff", "ci_low", "ci_high", "p_nominal")},
                     "p_seq": st["p"], "p_holm": st["p_holm"], "verdict": st["verdict"], "next_n": st["next_n"],
                     "margin": design.margin})  # fmt: skip
    return pd.DataFrame(rows, columns=[by, *SEQUENTIAL_COLUMNS]).astype({"next_n": "Int64"})


def sequential_caption(baseline: str = "full", design: SequentialDesign | None = None, comparisons: int = 10) -> str:
    """What a sequential sweep's comparison table shows and how its verdicts are reached."""
    d = design or SequentialDesign()
    spend = f"Hwang-Shih-DeCani (gamma {d.gamma:g})" if d.spending == "hsd" else f"Lan-DeMets {d.spending}-type"
    return (
        f"Sequential seeds: comparisons against {baseline} are updated after each batch, at {list(d.looks())} "
        f"paired seeds, and only open ones get more. Test: the paired t-test of each look, never below the exact "
        f"sign-flip test's p (so identical differences never give p = 0 and fewer than "
        f"{smallest_exact_n(d.alpha / comparisons)} pairs cannot give a verdict at the strictest Holm level), with the type I error spent along the looks by a {spend} spending function (Lan & DeMets "
        f"1983); p Holm: the sequential p-value (the smallest level whose design would have stopped), Holm-corrected "
        f"over all {comparisons} comparisons, so the family-wise error stays <= {d.alpha} whenever comparisons stop. "
        f"Interval: the {1 - d.alpha:.0%} repeated confidence interval of the mean difference (Jennison & Turnbull "
        f"1989), valid at whichever look the comparison stopped. Verdicts: better / worse (p Holm < {d.alpha}); "
        f"equivalent (the whole interval inside +-{d.margin:g} top1 points; per comparison, error <= "
        f"{d.alpha / 2:g}, not corrected over comparisons); undecided (the budget of {d.looks()[-1]} seeds is spent, "
        f"or the predictive probability that the rest of it shows a difference fell below {d.futility:g} while that "
        f"of an equivalent verdict was below {d.pursue_equivalence:g}: Spiegelhalter et al. 1986); open (more seeds "
        f"queued: next n)."
    )

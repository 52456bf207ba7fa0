"""Seed statistics for ablation tables: means with confidence intervals, paired comparisons against a baseline
with Holm-corrected p-values, verdicts that say only what the seeds support, and the seeds a finer call needs."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.80
MIN_EFFECT = 0.5  # top-1 points
NO_VERDICT = "one seed: no verdict possible"
VERDICTS = ("better", "worse", "indistinguishable", NO_VERDICT)
AUTO_BOOTSTRAP_MIN_N = 10  # below this a percentile bootstrap under-covers; the t interval is the safer call
EXACT_MAX_N = 12  # up to here a paired verdict uses the exact sign-flip test (2^(n-1) sign vectors, a few ms)
SIGN_FLIP = "sign-flip exact"
T_TEST = "paired t"

GROUP_COLUMNS = ["n", "mean", "std", "ci_low", "ci_high", "ci_method", "values"]
COMPARISON_COLUMNS = [
    "baseline",
    "n_pairs",
    "seeds",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "p",
    "test",
    "p_holm",
    "verdict",
    "paper_diff",
    "direction",
    "effect",
    "seeds_needed",
]


def _missing(value: Any) -> bool:
    """None, NaN or pandas NA."""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value)) or value is pd.NA


def _clean(values: Iterable[Any]) -> np.ndarray:
    """A float array without the missing entries (None, NaN, pandas NA)."""
    if isinstance(values, pd.Series | pd.Index):
        arr = values.to_numpy(dtype=float, na_value=np.nan)
    else:
        arr = np.asarray([np.nan if _missing(v) else v for v in values], dtype=float)
    return arr[~np.isnan(arr)]


def _t_interval(mean: float, std: float, n: int, confidence: float) -> tuple[float, float]:
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def _bootstrap_interval(x: np.ndarray, confidence: float, seed: int, resamples: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def mean_ci(
    values: Iterable[Any],
    confidence: float = CONFIDENCE,
    method: str = "t",
    seed: int = 0,
    resamples: int = 10_000,
) -> dict[str, Any]:
    """Mean, sample std (ddof=1) and a confidence interval of the mean ("t", "bootstrap" or "auto")."""
    if method not in ("t", "bootstrap", "auto"):
        raise ValueError(f"unknown interval method {method!r}; use 't', 'bootstrap' or 'auto'")
    x = _clean(values)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "ci_low": None, "ci_high": None, "method": None}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n == 1:
        return out
    used = ("bootstrap" if n >= AUTO_BOOTSTRAP_MIN_N else "t") if method == "auto" else method
    out["std"] = float(x.std(ddof=1))
    if used == "t":
        out["ci_low"], out["ci_high"] = _t_interval(out["mean"], out["std"], n, confidence)
    else:
        out["ci_low"], out["ci_high"] = _bootstrap_interval(x, confidence, seed, resamples)
    out["method"] = used
    return out


@functools.lru_cache(maxsize=32)
def _signs(n: int) -> np.ndarray:
    """The 2^(n-1) sign vectors with a + first (their negations give the same |sum|), as an (n, 2^(n-1)) array."""
    codes = np.arange(2 ** (n - 1))
    bits = (codes[None, :] >> np.arange(n - 1)[:, None]) & 1
    return np.vstack([np.ones((1, len(codes))), 1.0 - 2.0 * bits])


def sign_flip_pvalues(diffs: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Exact two-sided paired sign-flip permutation p-values, one per row of an (m, n) array of differences.

    Fisher (The Design of Experiments, 1935, sec. 21) and Pitman (JRSS Suppl. 1937): under H0 each difference is
    symmetric about 0, so all 2^n sign assignments are equally likely; p is the share of them whose |sum| is at least
    the observed one. The observed assignment and its negation always count, so p >= 2^(1-n) (0.25 at n = 3):
    identical differences give exactly that, never 0. Sums within 1e-9 of the observed (relative) count as ties.
    """
    x = np.atleast_2d(np.asarray(diffs, dtype=float))
    m, n = x.shape
    if n == 0:
        return np.ones(m)
    signs = _signs(n)
    observed = np.abs(x.sum(axis=1))
    tol = 1e-9 * np.abs(x).sum(axis=1)
    counts = np.empty(m)
    for start in range(0, m, chunk):
        part = slice(start, start + chunk)
        counts[part] = (np.abs(x[part] @ signs) >= (observed[part] - tol[part])[:, None]).sum(axis=1)
    return counts / signs.shape[1]


def paired_t_rows(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of an (m, n) array: mean, std (ddof 1) and the two-sided paired t-test p-value. A spread within
    rounding of 0 (identical values leave 1e-16) counts as 0: std 0, p 0 where the mean is not 0, else 1."""
    x = np.atleast_2d(np.asarray(diffs, dtype=float))
    n = x.shape[-1]
    mean, std = x.mean(axis=-1), x.std(axis=-1, ddof=1)
    spread = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(spread, mean / (std / math.sqrt(n)), 0.0)
    p = np.where(spread, 2 * sps.t.sf(np.abs(t), n - 1), (mean == 0).astype(float))
    return mean, np.where(spread, std, 0.0), p


def paired_pvalues(diffs: np.ndarray) -> np.ndarray:
    """The fixed-seed verdict's p-value per row of an (m, n >= 2) array: exact sign-flip up to EXACT_MAX_N pairs,
    beyond that the paired t-test's floored at 2^(1-n) (see `paired_test`)."""
    x = np.atleast_2d(np.asarray(diffs, dtype=float))
    if x.shape[-1] <= EXACT_MAX_N:
        return sign_flip_pvalues(x)
    return np.maximum(paired_t_rows(x)[2], 2.0 ** (1 - x.shape[-1]))


def paired_test(diffs: Iterable[Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Two-sided paired test (H0: differences centred on 0) on per-seed differences, with the t interval of the mean.

    For 2..EXACT_MAX_N pairs p is the exact sign-flip permutation test's (`sign_flip_pvalues`): it assumes only
    symmetry under H0, and with n pairs it cannot go below 2^(1-n), so 3 seeds can never give a verdict at 0.05.
    Beyond that p is the paired t-test's, floored at 2^(1-n), the sign-flip p of identical differences (std 0,
    common when a small validation set quantizes top1), where the t-test's limit is 0.
    `t` is the t statistic either way, and the interval the t interval: the estimate, not the test.
    """
    x = _clean(diffs)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean_diff": None, "std_diff": None, "ci_low": None, "ci_high": None}
    out.update(t=None, p=None, test=None)
    if n == 0:
        return out
    mean = out["mean_diff"] = float(x.mean())
    if n == 1:
        return out
    std = out["std_diff"] = float(x.std(ddof=1))
    out["ci_low"], out["ci_high"] = _t_interval(mean, std, n, confidence)
    out["t"] = float(mean / (std / math.sqrt(n))) if std > 0 else (math.copysign(math.inf, mean) if mean else math.nan)
    out["p"] = float(paired_pvalues(x[None, :])[0])
    out["test"] = SIGN_FLIP if n <= EXACT_MAX_N else T_TEST
    return out


def smallest_exact_n(alpha: float = ALPHA) -> int:
    """The fewest pairs whose sign-flip test can reach p < alpha at all: 2^(1-n) < alpha (6 at 0.05)."""
    return max(2, math.floor(1 - math.log2(alpha)) + 1)


def fixed_seed_rule(alpha: float = ALPHA) -> str:
    """How `paired_pvalues` tests, in the words every caption of a fixed-seed verdict uses."""
    return (
        f"up to {EXACT_MAX_N} pairs the exact sign-flip permutation test (all 2^n sign assignments of the paired "
        f"differences; it cannot go below 2^(1-n), so 3 seeds (p >= 0.25) can never give a verdict and "
        f"{smallest_exact_n(alpha)} are the fewest that can reach p < {alpha}), beyond that the paired t-test floored "
        f"at 2^(1-n), so identical differences never give p = 0"
    )


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values in input order; None (or NaN) entries stay None and do not count in m."""
    present = [(float(p), i) for i, p in enumerate(pvalues) if not _missing(p)]
    out: list[float | None] = [None] * len(pvalues)
    m = len(present)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        # step-down: the k-th smallest is scaled by (m - k); the running max keeps the adjusted order monotone
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def holm_rows(pvalues: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis of an array with every entry present (m = that axis's length):
    `holm` for many families at once."""
    p = np.asarray(pvalues, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def power_paired(n: int, effect: float, std_diff: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs against a true mean difference `effect`.

    NaN when n < 2 or std_diff is missing; with std_diff 0 any non-zero effect is certain to show (1.0).
    """
    if n < 2 or _missing(std_diff):
        return math.nan
    if std_diff == 0:
        return 1.0 if effect != 0 else alpha
    df = n - 1
    nc = effect / (std_diff / math.sqrt(n))
    crit = sps.t.ppf(1 - alpha / 2, df)
    # both rejection tails count, as in G*Power; the far one, P(T < -crit), is written as a survival function with
    # -nc because scipy's nct.cdf returns NaN there for large nc
    return float(sps.nct.sf(crit, df, nc) + sps.nct.sf(crit, df, -nc))


def seeds_needed(
    std_diff: float | None,
    effect: float = MIN_EFFECT,
    alpha: float = ALPHA,
    power: float = POWER,
    max_n: int = 100_000,
) -> int | None:
    """Smallest n >= 2 whose paired t-test reaches `power` against `effect`; None if unknown or beyond max_n."""
    if _missing(std_diff):
        return None
    if std_diff == 0 or abs(effect) > 1e3 * std_diff:  # rounding's spread of identical differences: scipy's
        return 2  # noncentral t crawls at noncentralities of 1e15, and the answer is the smallest sample anyway
    if effect == 0 or power_paired(max_n, effect, std_diff, alpha) < power:
        return None

    def enough(k: int) -> bool:
        return power_paired(k, effect, std_diff, alpha) >= power

    # the normal approximation lands within a few pairs of the answer; search outward from it
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return _first_true(enough, min(max_n, max(2, math.ceil((z * std_diff / effect) ** 2))), max_n)


def _first_true(enough: Callable[[int], bool], guess: int, max_n: int) -> int:
    """The smallest k in [2, max_n] with enough(k), for a monotone `enough` that holds at max_n: bracket, bisect."""
    low, high, step = guess, guess, 1
    while low > 2 and enough(low):
        high, low, step = low, max(2, low - step), step * 2
    if enough(low):
        return low
    while not enough(high):
        low, high, step = high, min(max_n, high + step), step * 2
    while high - low > 1:  # invariant: not enough(low), enough(high)
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def verdict(mean_diff: float | None, p_adjusted: float | None, n: int, alpha: float = ALPHA) -> str:
    """better / worse when the adjusted p clears alpha, indistinguishable otherwise, NO_VERDICT below two seeds."""
    if n < 2 or _missing(p_adjusted) or _missing(mean_diff):
        return NO_VERDICT
    if p_adjusted < alpha and mean_diff > 0:
        return "better"
    if p_adjusted < alpha and mean_diff < 0:
        return "worse"
    return "indistinguishable"


def direction(verdict_text: str, paper_diff: float | None) -> str:
    """Whether a better/worse verdict has the sign of the paper's difference: agrees, disagrees or undetermined."""
    if verdict_text not in ("better", "worse") or _missing(paper_diff) or paper_diff == 0:
        return "undetermined"
    return "agrees" if (verdict_text == "better") == (paper_diff > 0) else "disagrees"


def _label(value: Any) -> str:
    """A seed for a list: integral floats (seeds read back next to NaNs) without the trailing .0."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def group_stats(df: pd.DataFrame, by: str, value: str = "top1", method: str = "t") -> pd.DataFrame:
    """Per group of `by` (first-appearance order): n, mean, std, CI and the values; NaN values are left out."""
    rows = []
    for key, part in df.groupby(by, sort=False):
        vals = _clean(part[value])
        ci = mean_ci(vals, method=method)
        rows.append(
            {
                by: key,
                **{k: ci[k] for k in ("n", "mean", "std", "ci_low", "ci_high")},
                "ci_method": ci["method"],
                "values": ",".join(f"{v:.2f}" for v in vals),
            }
        )
    out = pd.DataFrame(rows, columns=[by, *GROUP_COLUMNS])
    return out.astype({"n": "int64", "mean": float, "std": float, "ci_low": float, "ci_high": float})


def _pair_table(df: pd.DataFrame, by: str, value: str, pair_on: str) -> pd.Series:
    """Mean `value` per (group, pair key) over rows that have both; a repeated run counts once, as its mean."""
    usable = df[df[value].notna() & df[pair_on].notna()]
    return usable.groupby([by, pair_on], sort=True)[value].mean()


def _compare(means: pd.Series, group: Any, baseline: Any) -> dict[str, Any]:
    """The paired test of one group against the baseline over the pair keys both have."""
    groups = means.index.get_level_values(0)
    mine = means[groups == group].droplevel(0)
    base = means[groups == baseline].droplevel(0)
    common = mine.index.intersection(base.index).sort_values()
    test = paired_test((mine[common] - base[common]).to_numpy())
    return {"seeds": ",".join(_label(s) for s in common), **test}


def _judge(test: dict[str, Any], p_holm: float | None, paper_diff: Any, effect: float, alpha: float) -> dict[str, Any]:
    """The table cells of one comparison: its test, the verdict on the corrected p, the paper's sign, seeds needed."""
    call = verdict(test["mean_diff"], p_holm, test["n"], alpha)
    paper_diff = None if _missing(paper_diff) else float(paper_diff)
    # a sample size answers only a comparison the seeds could not settle; a settled one needs no more seeds. The
    # t-test's count (G*Power) is raised to the fewest pairs the exact sign-flip test can decide with at all.
    needed = seeds_needed(test["std_diff"], effect, alpha, POWER) if call == "indistinguishable" else None
    needed = max(needed, smallest_exact_n(alpha)) if needed is not None else None
    return {
        "n_pairs": test["n"],
        "seeds": test["seeds"],
        **{k: test[k] for k in ("mean_diff", "std_diff", "ci_low", "ci_high", "p", "test")},
        "p_holm": p_holm,
        "verdict": call,
        "paper_diff": paper_diff,
        "direction": direction(call, paper_diff),
        "effect": float(effect),
        "seeds_needed": needed,
    }


def paired_comparisons(
    df: pd.DataFrame,
    by: str = "variant",
    baseline: Any = "full",
    value: str = "top1",
    pair_on: str = "seed",
    effect: float = MIN_EFFECT,
    paper: Mapping[Any, float | None] | None = None,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Every group against the baseline, paired on `pair_on`: difference, CI, Holm-corrected p, verdict, seeds needed."""
    columns = [by, *COMPARISON_COLUMNS]
    groups = [] if df.empty else list(pd.unique(df[by].dropna()))
    if groups and baseline not in groups:
        raise ValueError(f"baseline {baseline!r} has no rows in column {by!r}; groups present: {groups}")
    others = [g for g in groups if g != baseline]
    if not others:
        return pd.DataFrame(columns=columns)
    means = _pair_table(df, by, value, pair_on)
    tests = {g: _compare(means, g, baseline) for g in others}
    adjusted = holm([tests[g]["p"] for g in others])
    paper = paper or {}
    rows = [
        {by: g, "baseline": baseline, **_judge(tests[g], p, paper.get(g), effect, alpha)}
        for g, p in zip(others, adjusted)
    ]
    floats = dict.fromkeys(["mean_diff", "std_diff", "ci_low", "ci_high", "p", "p_holm", "paper_diff"], float)
    return pd.DataFrame(rows, columns=columns).astype({**floats, "n_pairs": "int64", "seeds_needed": "Int64"})

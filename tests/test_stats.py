"""Seed statistics checked against independent references: scipy's tests, hand-worked sign-flip p-values and
Fisher's Zea mays count, hand-worked Holm, G*Power sample sizes."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import product

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from repvgg_search.analysis.ablation import reference_caption
from repvgg_search.analysis.stats import (
    EXACT_MAX_N,
    NO_VERDICT,
    POWER,
    SIGN_FLIP,
    T_TEST,
    VERDICTS,
    direction,
    group_stats,
    holm,
    holm_rows,
    mean_ci,
    paired_comparisons,
    paired_pvalues,
    paired_test,
    power_paired,
    seeds_needed,
    sign_flip_pvalues,
    smallest_exact_n,
    verdict,
)

FIXED = [[1.0, 2.5], [3.0, 4.0, 8.0], [70.1, 71.3, 69.8, 70.6, 70.9]]
COMPARISON_COLUMNS = [
    "variant",
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


@pytest.mark.parametrize("x", FIXED)
def test_mean_ci_t_interval_matches_scipy(x: list[float]) -> None:
    out = mean_ci(x)
    low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert out["n"] == len(x) and out["method"] == "t"
    assert out["mean"] == pytest.approx(np.mean(x)) and out["std"] == pytest.approx(np.std(x, ddof=1))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    assert all(type(out[k]) is float for k in ("mean", "std", "ci_low", "ci_high"))


def test_mean_ci_confidence_level_is_used() -> None:
    x = FIXED[2]
    out = mean_ci(x, confidence=0.9)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(sps.t.interval(0.9, 4, loc=np.mean(x), scale=sps.sem(x)))


def test_mean_ci_drops_missing_and_handles_tiny_samples() -> None:
    assert mean_ci([1.0, None, float("nan"), 3.0])["n"] == 2
    assert mean_ci([1.0, None, float("nan"), 3.0])["mean"] == 2.0
    one = mean_ci([71.5, None])
    assert one == {"n": 1, "mean": 71.5, "std": None, "ci_low": None, "ci_high": None, "method": None}
    none = mean_ci([None, float("nan")])
    assert none == {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None, "method": None}
    assert mean_ci([])["n"] == 0


def test_mean_ci_bootstrap_is_reproducible_and_close_to_t_for_a_large_sample() -> None:
    x = np.random.default_rng(3).normal(70.0, 1.5, size=200)
    boot = mean_ci(x, method="bootstrap", seed=1)
    assert boot["method"] == "bootstrap"
    assert boot == mean_ci(x, method="bootstrap", seed=1)
    other = mean_ci(x, method="bootstrap", seed=2)
    assert (other["ci_low"], other["ci_high"]) != (boot["ci_low"], boot["ci_high"])
    t = mean_ci(x, method="t")
    assert boot["ci_low"] == pytest.approx(t["ci_low"], abs=0.03)
    assert boot["ci_high"] == pytest.approx(t["ci_high"], abs=0.03)
    assert boot["ci_high"] - boot["ci_low"] > 0.3  # a real interval (half-width about 0.21), not a point


def test_mean_ci_auto_switches_at_ten() -> None:
    x = list(np.random.default_rng(0).normal(size=10))
    assert mean_ci(x[:9], method="auto")["method"] == "t"
    assert mean_ci(x, method="auto")["method"] == "bootstrap"
    with pytest.raises(ValueError, match="method"):
        mean_ci(x, method="normal")


def _exact_sign_flip(d: np.ndarray) -> float:
    """Brute force in exact arithmetic: the share of the 2^n sign assignments whose |sum| reaches the observed one.
    (scipy's permutation_test agrees on generic data but misses ties that rounding leaves in differences such as
    70.3 - 70.0: 0.512 instead of 0.551 on the 9-pair case below.)"""
    exact = [Fraction(str(round(float(x), 9))) for x in d]
    observed = abs(sum(exact))
    hits = sum(abs(sum(s * x for s, x in zip(signs, exact))) >= observed for signs in product((1, -1), repeat=len(d)))
    return hits / 2 ** len(d)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([72.0, 73.2, 71.4, 72.6], [70.0, 71.0, 69.5, 70.5]),
        ([70.3, 70.6, 70.4], [70.0, 71.0, 70.5]),
        ([1.0, 2.0], [0.2, 1.9]),
        (
            [70.3, 70.6, 70.4, 71.2, 69.9, 70.8, 70.1, 70.0, 70.7],
            [70.0, 71.0, 70.5, 70.6, 70.1, 70.2, 70.3, 69.6, 70.9],
        ),
    ],
)
def test_paired_test_is_the_exact_sign_flip_test_with_the_t_interval(a: list[float], b: list[float]) -> None:
    d = np.subtract(a, b)
    out = paired_test(d)
    ref = sps.ttest_rel(a, b)
    assert out["n"] == len(a) and out["test"] == SIGN_FLIP
    assert out["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert out["p"] == pytest.approx(_exact_sign_flip(d), rel=1e-12)
    if len(d) < 9:  # generic data, no ties: scipy's exact permutation test gives the same
        scipy_p = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue
        assert out["p"] == pytest.approx(scipy_p, rel=1e-12)
    assert out["mean_diff"] == pytest.approx(d.mean()) and out["std_diff"] == pytest.approx(d.std(ddof=1))
    low, high = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_paired_test_beyond_twelve_pairs_is_the_t_test() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(70.5, 1.0, 20), rng.normal(70.0, 1.0, 20)
    out = paired_test(np.subtract(a, b))
    assert out["test"] == T_TEST and out["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-10)
    assert EXACT_MAX_N == 12 and paired_test(np.ones(12) + np.arange(12) * 0.01)["test"] == SIGN_FLIP


def test_sign_flip_hand_worked_and_fisher() -> None:
    # [1, 2, 3, 4]: only the observed signs and their negation reach |sum| = 10: 2/16
    # [1, -2, 3, 4]: |sum| = 6; negating a subset of {1, 2, 3, 4} summing to k gives |10 - 2k| >= 6 for k in
    # {0, 1, 2, 8, 9, 10}: 6 of 16
    assert sign_flip_pvalues([[1, 2, 3, 4], [1, -2, 3, 4], [0, 0, 0, 0]]).tolist() == [0.125, 0.375, 1.0]
    # Darwin's Zea mays (Fisher, The Design of Experiments, 1935, sec. 21): crossed minus self-fertilized heights in
    # eighths of an inch; Fisher counts 863 of the 2^15 sign assignments at least as large one-sided: 1726 / 32768
    darwin = [49, -67, 8, 16, 6, 23, 28, 41, 14, 29, 56, 24, 75, 60, -48]
    assert sign_flip_pvalues([darwin])[0] * 2**15 == 1726
    assert smallest_exact_n(0.05) == 6 and smallest_exact_n(0.005) == 9 and smallest_exact_n(1 / 32) == 7
    rows = np.random.default_rng(1).normal(0.3, 1.0, size=(4, 14))
    assert paired_pvalues(rows) == pytest.approx([sps.ttest_1samp(r, 0).pvalue for r in rows], rel=1e-10)


def test_paired_test_small_and_degenerate() -> None:
    one = paired_test([0.4])
    assert one["n"] == 1 and one["mean_diff"] == 0.4
    assert one["p"] is None and one["t"] is None and one["std_diff"] is None and one["ci_low"] is None
    assert paired_test([])["mean_diff"] is None
    # identical differences (std 0): the sign-flip p of n same-sign values, 2^(1-n), never 0
    same = paired_test([1.0, 1.0, 1.0])
    assert same["t"] == math.inf and same["p"] == 0.25 and same["ci_low"] == same["ci_high"] == 1.0
    down = paired_test([-2.0, -2.0])
    assert down["t"] == -math.inf and down["p"] == 0.5
    zero = paired_test([0.0, 0.0])
    assert math.isnan(zero["t"]) and zero["p"] == 1.0
    quantized = paired_test([0.2786] * 13)  # 13 identical differences: the t-test alone would say p = 0
    assert quantized["test"] == T_TEST and quantized["p"] == 2.0**-12
    # with 3 seeds no data at all can give a verdict: the smallest p is 0.25
    assert min(paired_test(d)["p"] for d in ([5.0, 5.1, 5.2], [-9.0, -9.0, -9.0], [0.28, 0.56, 0.28])) == 0.25


def test_holm_hand_worked() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 by monotonicity
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_skips_none_and_caps_at_one() -> None:
    out = holm([0.01, None, 0.04, 0.03])  # m = 3
    assert out[1] is None
    assert [out[0], out[2], out[3]] == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.4, 0.9, 0.02]) == pytest.approx([0.8, 0.9, 0.06])
    assert holm([None, None]) == [None, None] and holm([]) == []
    assert holm([0.2]) == [0.2]


def test_holm_is_monotone_and_never_below_raw() -> None:
    p = np.random.default_rng(5).uniform(0, 0.2, size=12).tolist()
    adj = holm(p)
    order = np.argsort(p)
    sorted_adj = [adj[i] for i in order]
    assert sorted_adj == sorted(sorted_adj)
    assert all(raw <= a <= 1.0 for raw, a in zip(p, adj))


def test_holm_rows_is_holm_per_row() -> None:
    p = np.random.default_rng(6).uniform(0, 0.3, size=(5, 7))
    assert holm_rows(p) == pytest.approx(np.array([holm(list(r)) for r in p]))


@pytest.mark.parametrize(("d", "expected"), [(0.5, 34), (0.8, 15), (1.0, 10), (0.2, 199)])
def test_seeds_needed_matches_gpower(d: float, expected: int) -> None:
    # G*Power 3.1, t tests, means: difference from constant (one sample / matched pairs), two tails, alpha 0.05,
    # power 0.80
    std = 0.5 / d
    n = seeds_needed(std, effect=0.5)
    assert n == expected
    assert power_paired(n, 0.5, std) >= POWER > power_paired(n - 1, 0.5, std)


def test_seeds_needed_edge_cases() -> None:
    assert seeds_needed(None) is None and seeds_needed(float("nan")) is None
    assert seeds_needed(0.0) == 2
    assert seeds_needed(0.01) == 2  # a huge effect: the smallest sample that has a spread at all
    assert seeds_needed(1.0, effect=0.001, max_n=1000) is None
    assert seeds_needed(1.0, effect=0.0) is None
    assert seeds_needed(1.0, effect=-0.5) == seeds_needed(1.0, effect=0.5) == 34


def test_power_paired_matches_monte_carlo() -> None:
    n, d, sims = 10, 0.8, 20_000
    x = np.random.default_rng(11).normal(d, 1.0, size=(sims, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    simulated = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
    assert power_paired(n, d, 1.0) == pytest.approx(simulated, abs=0.02)
    assert power_paired(10, 0.0, 1.0) == pytest.approx(0.05)
    assert math.isnan(power_paired(1, 0.5, 1.0))


@pytest.mark.parametrize(
    ("mean_diff", "p", "n", "expected"),
    [
        (1.0, 0.01, 3, "better"),
        (-1.0, 0.01, 3, "worse"),
        (1.0, 0.2, 3, "indistinguishable"),
        (1.0, 0.05, 3, "indistinguishable"),  # alpha is a strict bound
        (-1.0, 0.05, 3, "indistinguishable"),
        (0.0, 1.0, 5, "indistinguishable"),
        (1.0, 0.0, 1, NO_VERDICT),
        (1.0, None, 1, NO_VERDICT),
        (1.0, None, 4, NO_VERDICT),
    ],
)
def test_verdict_truth_table(mean_diff: float, p: float | None, n: int, expected: str) -> None:
    assert verdict(mean_diff, p, n) == expected
    assert expected in VERDICTS


@pytest.mark.parametrize(
    ("call", "paper_diff", "expected"),
    [
        ("better", 0.8, "agrees"),
        ("worse", -0.8, "agrees"),
        ("better", -0.8, "disagrees"),
        ("worse", 0.8, "disagrees"),
        ("better", 0.0, "undetermined"),
        ("better", None, "undetermined"),
        ("worse", float("nan"), "undetermined"),
        ("indistinguishable", 0.8, "undetermined"),
        (NO_VERDICT, -0.8, "undetermined"),
    ],
)
def test_direction_truth_table(call: str, paper_diff: float | None, expected: str) -> None:
    assert direction(call, paper_diff) == expected


FULL = [70.0, 71.0, 69.5, 70.5]
A = [72.0, 73.2, 71.4, 72.6]  # about +2 on every seed: with 4 seeds the exact test's p is 2/16 at best
B = {0: 70.3, 1: 70.6, 3: 70.4}  # seed 2 failed (NaN): paired on 0, 1, 3 only
FULL7 = [70.0, 71.0, 69.5, 70.5, 70.2, 70.8, 69.9]
A7 = [f + 2.0 + 0.1 * (i % 3) for i, f in enumerate(FULL7)]  # +2 on 7 seeds: p = 2/128


def _sweep() -> pd.DataFrame:
    rows = [("full", s, v) for s, v in enumerate(FULL)]
    rows += [("a", s, v) for s, v in enumerate(A)]
    rows += [("b", s, B.get(s, float("nan"))) for s in range(4)]
    return pd.DataFrame(rows, columns=["variant", "seed", "top1"])


def _sweep7() -> pd.DataFrame:
    rows = [("full", s, v) for s, v in enumerate(FULL7)] + [("a", s, v) for s, v in enumerate(A7)]
    rows += [("b", s, v + (0.3 if s % 2 else -0.3)) for s, v in enumerate(FULL7)]
    return pd.DataFrame(rows, columns=["variant", "seed", "top1"])


def test_paired_comparisons_on_a_small_sweep() -> None:
    out = paired_comparisons(_sweep(), paper={"a": 1.0, "b": -0.3})
    assert list(out.columns) == COMPARISON_COLUMNS
    assert out["variant"].tolist() == ["a", "b"] and set(out["baseline"]) == {"full"}
    a, b = out.iloc[0], out.iloc[1]
    assert (a["n_pairs"], a["seeds"], b["n_pairs"], b["seeds"]) == (4, "0,1,2,3", 3, "0,1,3")
    assert a["mean_diff"] == pytest.approx(2.05) and b["mean_diff"] == pytest.approx(-0.2 / 3)
    # a: all four differences positive: 2/16. b: 0.3, -0.4, -0.1: |sum| = 0.2 is reached by 6 of the 8 sign
    # assignments (sums +-0.8, +-0.6, +-0.2; only +-0.0 fall short): 0.75
    assert [a["p"], b["p"]] == pytest.approx([0.125, 0.75]) and set(out["test"]) == {SIGN_FLIP}
    assert out["p_holm"].tolist() == pytest.approx([0.25, 0.75])
    assert out["verdict"].tolist() == ["indistinguishable", "indistinguishable"]  # 4 seeds cannot reach 0.05
    assert out["direction"].tolist() == ["undetermined", "undetermined"]
    assert out["paper_diff"].tolist() == [1.0, -0.3] and out["effect"].tolist() == [0.5, 0.5]
    # seeds needed: the t-test's count, but never fewer than the 6 the exact test needs to reach 0.05 at all
    assert a["seeds_needed"] == max(6, seeds_needed(a["std_diff"], 0.5)) == 6
    assert b["seeds_needed"] == max(6, seeds_needed(b["std_diff"], 0.5)) and b["seeds_needed"] > 3


def test_paired_comparisons_with_enough_seeds_decide() -> None:
    out = paired_comparisons(_sweep7(), paper={"a": 1.0, "b": -0.3})
    a, b = out.iloc[0], out.iloc[1]
    assert a["p"] == pytest.approx(2 / 128) and a["p_holm"] == pytest.approx(min(1.0, 2 * 2 / 128))
    assert b["p"] == pytest.approx(_exact_sign_flip(np.array([-0.3, 0.3, -0.3, 0.3, -0.3, 0.3, -0.3])))
    assert out["verdict"].tolist() == ["better", "indistinguishable"]
    assert out["direction"].tolist() == ["agrees", "undetermined"]
    assert pd.isna(a["seeds_needed"])
    worse = paired_comparisons(_sweep7(), paper={"a": -1.0})
    assert worse["direction"].tolist() == ["disagrees", "undetermined"]
    assert pd.isna(worse["paper_diff"].iloc[1])
    against_a = paired_comparisons(_sweep7(), baseline="a")
    assert against_a["variant"].tolist() == ["full", "b"] and against_a["verdict"].tolist() == ["worse", "worse"]


def test_paired_comparisons_averages_repeated_runs_and_uses_options() -> None:
    df = _sweep()
    df = pd.concat([df, pd.DataFrame([{"variant": "a", "seed": 0, "top1": 74.0}])], ignore_index=True)
    out = paired_comparisons(df, effect=1.0)
    first = [(72.0 + 74.0) / 2, *A[1:]]
    assert out.iloc[0]["mean_diff"] == pytest.approx(np.mean(np.subtract(first, FULL)))
    assert out.iloc[0]["n_pairs"] == 4 and out["effect"].tolist() == [1.0, 1.0]
    assert out.iloc[1]["seeds_needed"] == max(6, seeds_needed(out.iloc[1]["std_diff"], 1.0))
    against_a = paired_comparisons(_sweep(), baseline="a")
    assert against_a["variant"].tolist() == ["full", "b"]
    assert against_a.iloc[0]["p"] == pytest.approx(0.125)


def test_the_caption_states_the_exact_test_rule() -> None:
    text = reference_caption("full")
    assert "exact sign-flip permutation test" in text and "2^(1-n)" in text and "3 seeds (p >= 0.25)" in text
    assert "6 are the fewest" in text and "never give p = 0" in text and "Holm" in text


def test_paired_comparisons_one_seed_gives_no_verdict() -> None:
    df = pd.DataFrame({"variant": ["full", "a", "b"], "seed": [0, 0, 0], "top1": [70.0, 72.0, 69.0]})
    out = paired_comparisons(df, paper={"a": 1.0, "b": -1.0})
    assert out["verdict"].tolist() == [NO_VERDICT, NO_VERDICT]
    assert out["direction"].tolist() == ["undetermined", "undetermined"]
    assert out["seeds_needed"].isna().all() and out["p"].isna().all() and out["p_holm"].isna().all()
    assert out["mean_diff"].tolist() == pytest.approx([2.0, -1.0]) and out["n_pairs"].tolist() == [1, 1]


def test_paired_comparisons_missing_baseline_and_empty_frames() -> None:
    df = _sweep()
    with pytest.raises(ValueError, match=r"'full'.*'a'"):
        paired_comparisons(df[df["variant"] != "full"])
    with pytest.raises(ValueError, match="'resnet'"):
        paired_comparisons(df, baseline="resnet")
    empty = paired_comparisons(df.iloc[:0])
    assert empty.empty and list(empty.columns) == COMPARISON_COLUMNS
    only_baseline = paired_comparisons(df[df["variant"] == "full"])
    assert only_baseline.empty and list(only_baseline.columns) == COMPARISON_COLUMNS


def test_group_stats_columns_and_values() -> None:
    df = _sweep().iloc[::-1].reset_index(drop=True)  # b first: groups keep their order of first appearance
    out = group_stats(df, "variant")
    assert list(out.columns) == ["variant", "n", "mean", "std", "ci_low", "ci_high", "ci_method", "values"]
    assert out["variant"].tolist() == ["b", "a", "full"]
    assert out["n"].tolist() == [3, 4, 4] and out["ci_method"].tolist() == ["t", "t", "t"]
    assert out["values"].tolist() == ["70.40,70.60,70.30", "72.60,71.40,73.20,72.00", "70.50,69.50,71.00,70.00"]
    full = out.iloc[2]
    low, high = sps.t.interval(0.95, 3, loc=np.mean(FULL), scale=sps.sem(FULL))
    assert (full["mean"], full["std"]) == pytest.approx((np.mean(FULL), np.std(FULL, ddof=1)))
    assert (full["ci_low"], full["ci_high"]) == pytest.approx((low, high))
    single = group_stats(pd.DataFrame({"v": ["x", "y", "y"], "top1": [1.0, 2.0, float("nan")]}), "v")
    assert single["n"].tolist() == [1, 1] and single["ci_low"].isna().all() and single["ci_method"].isna().all()
    assert group_stats(df.iloc[:0], "variant").empty

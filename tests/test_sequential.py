"""Sequential seeds: group-sequential boundaries against published values (rpact's tests, Pocock's and O'Brien &
Fleming's constants), the sequential p-value's error rate by simulation, and the engine's state, resume and API."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.optimize import brentq

from repvgg_search.analysis.group_sequential import (
    boundaries,
    exit_probabilities,
    look_level,
    nominal_levels,
    sequential_p,
    spending,
    threshold,
)
from repvgg_search.analysis.sequential import (
    OPEN,
    SEQUENTIAL_COLUMNS,
    VERDICTS,
    SequentialDesign,
    _predictive,
    evaluate,
    sequential_caption,
    sequential_comparisons,
    sequential_state,
)
from repvgg_search.analysis.stats import holm
from repvgg_search.errors import BadInputError

# rpact 3.x (Wassmer & Pahlke), tests/testthat/test-f_design_group_sequential.R: one-sided critical values of
# getDesignGroupSequential / getDesignInverseNormal, given there to 1e-7
RPACT = [
    ("pocock", [0.4, 0.7], 0.025, 0.0, [2.223875, 2.3050796]),  # asP, informationRates c(0.4, 0.7)
    ("hsd", [0.2, 0.4, 1.0], 0.03, 0.0, [2.5121443, 2.4228747, 2.0280392]),  # asHSD, gammaA = 0
]


@pytest.mark.parametrize(("name", "fractions", "alpha", "gamma", "expected"), RPACT)
def test_spending_boundaries_match_rpact(name, fractions, alpha, gamma, expected) -> None:
    spent = spending(name, alpha, gamma)(np.array(fractions))
    assert boundaries(fractions, spent, sides=1) == pytest.approx(expected, abs=1e-6)


def test_user_spending_and_exit_probabilities_match_rpact() -> None:
    # asUser, userAlphaSpending c(0.01, 0.02, 0.03, 0.05), four equally spaced looks
    t = [0.25, 0.5, 0.75, 1.0]
    bounds = boundaries(t, [0.01, 0.02, 0.03, 0.05], sides=1)
    assert bounds == pytest.approx([2.3263479, 2.2192994, 2.1201347, 1.8189562], abs=1e-6)
    # the classical O'Brien-Fleming design of getDesignInverseNormal() (three looks, one-sided 0.025): its critical
    # values 2.0040356 sqrt(3 / k) spend 0.00025917372, 0.0071600594, 0.025 cumulatively
    obf = 2.0040356 * np.sqrt(3 / np.arange(1, 4))
    spent = np.cumsum(exit_probabilities([1 / 3, 2 / 3, 1.0], obf, sides=1))
    assert spent == pytest.approx([0.00025917372, 0.0071600594, 0.025], abs=1e-8)


# Jennison & Turnbull, Group Sequential Methods (2000), Tables 2.1 and 2.3: two-sided alpha 0.05, K equal groups;
# Pocock (Biometrika 1977) constant C_P and O'Brien & Fleming (Biometrics 1979) C_B (c_k = C_B sqrt(K / k))
CLASSICAL = [(2, 2.178, 1.977), (3, 2.289, 2.004), (4, 2.361, 2.024), (5, 2.413, 2.040)]


@pytest.mark.parametrize(("looks", "pocock", "obf"), CLASSICAL)
def test_two_sided_constants_match_the_published_tables(looks: int, pocock: float, obf: float) -> None:
    t = np.arange(1, looks + 1) / looks
    shape = np.sqrt(looks / np.arange(1, looks + 1))

    def size(c: float, form: np.ndarray) -> float:
        return float(exit_probabilities(t, c * form).sum()) - 0.05

    assert brentq(size, 1.5, 4.0, args=(np.ones(looks),)) == pytest.approx(pocock, abs=6e-4)
    assert brentq(size, 1.5, 4.0, args=(shape,)) == pytest.approx(obf, abs=6e-4)


def test_spending_functions_spend_alpha_and_refuse_unknown_names() -> None:
    t = np.array([0.1, 0.5, 1.0])
    for name, gamma in [("obrien_fleming", 0.0), ("pocock", 0.0), ("hsd", -2.0), ("hsd", 1.0), ("hsd", 0.0)]:
        spent = spending(name, 0.05, gamma)(t)
        assert spent[-1] == pytest.approx(0.05) and (np.diff(spent) > 0).all()
    assert spending("obrien_fleming", 0.05)(np.array([0.1]))[0] < 1e-8  # spends almost nothing early
    with pytest.raises(BadInputError, match="spending='wald'.*obrien_fleming, pocock, hsd"):
        spending("wald", 0.05)
    with pytest.raises(BadInputError, match="fractions"):
        boundaries([0.5, 0.4], [0.01, 0.02])


def test_look_level_inverts_the_design() -> None:
    t = (3 / 12, 5 / 12, 8 / 12, 1.0)
    for look, p in [(3, 0.04), (2, 0.001), (1, 0.01), (3, 1e-4)]:
        direct = brentq(lambda a, k=look, q=p: nominal_levels(t, a, "hsd", -2.0)[k] - q, 1e-9, 0.5, xtol=1e-14)
        assert look_level(t, np.array(p), look, "hsd", -2.0) == pytest.approx(direct, rel=1e-4)
        assert threshold(t, np.array(direct), look, "hsd", -2.0) == pytest.approx(p, rel=1e-4)
    assert look_level(t, np.array(0.0), 0, "hsd", -2.0) > 0  # never 0, even for p = 0
    assert look_level(t, np.array(0.99), 3, "hsd", -2.0) == pytest.approx(1.0, abs=0.02)
    seq = sequential_p(t, np.array([[0.5, 0.01, 0.2, np.nan]]), "hsd", -2.0)[0]
    assert seq[2] == seq[1] < seq[0] and math.isnan(seq[3])  # a running minimum: a later look cannot undo


@pytest.mark.parametrize("quantized", [False, True])
def test_one_comparison_under_the_null_keeps_its_error_rate(quantized: bool) -> None:
    """20,000 null comparisons (a family of one), seeds along the default schedule: rejected at most 5% of the time
    (3 standard errors of slack), and not far below it (the test is not vacuous)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((20_000, 1, 12))
    if quantized:  # top1 on 359 images: differences on a 0.28-point lattice, ties and identical rows included
        x = np.round(x / 0.2786) * 0.2786
    state = evaluate(x, np.full((20_000, 1), 12), SequentialDesign(futility=0.0))
    rejected = np.isin(state["code"], (1, 2)).mean()
    assert 0.025 < rejected <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 20_000)
    assert (state["p_seq"] > 0).all()


def test_design_refuses_bad_settings_naming_the_key() -> None:
    cases = [
        ({"schedule": (5, 3)}, "sweep.seed_schedule"),
        ({"schedule": (1, 3)}, "sweep.seed_schedule"),
        ({"schedule": ()}, "sweep.seed_schedule"),
        ({"max_seeds": 2}, "sweep.max_seeds"),
        ({"max_seeds": 12.0}, "sweep.max_seeds"),
        ({"margin": 0}, "sweep.margin"),
        ({"alpha": 0.7}, "alpha"),
        ({"spending": "wald"}, "sweep.spending"),
        ({"futility": 1.0}, "sweep.futility"),
        ({"pursue_equivalence": 0.0}, "sweep.pursue_equivalence"),
    ]
    for kwargs, key in cases:
        with pytest.raises(BadInputError, match=key):
            SequentialDesign(**kwargs)


def test_looks_follow_the_schedule_then_its_last_batch_size() -> None:
    assert SequentialDesign().looks() == (3, 5, 8, 12)
    assert SequentialDesign(schedule=[3, 5, 8, 12]).schedule == (3, 5, 8, 12)  # a config's list
    assert SequentialDesign(max_seeds=8).looks() == (3, 5, 8)
    assert SequentialDesign(max_seeds=10).looks() == (3, 5, 8, 10)
    assert SequentialDesign(max_seeds=18).looks() == (3, 5, 8, 12, 16, 18)
    assert SequentialDesign(max_seeds=40).looks() == (3, 5, 8, 12, 16, 20, 24, 28, 32, 36, 40)
    assert SequentialDesign(schedule=(4,), max_seeds=10).looks() == (4, 8, 10)


def test_predictive_probability_matches_monte_carlo() -> None:
    """Spiegelhalter et al.'s predictive probability: effect ~ N(mean, s^2/n), then the N - n future seeds."""
    mean, std, n, total, thr = np.array([0.6]), np.array([1.0]), 8, 24, np.array([0.01])
    reject, equiv = _predictive(mean, std, n, total, thr, 0.02, 0.5)
    rng = np.random.default_rng(5)
    effect = rng.normal(0.6, 1.0 / math.sqrt(n), 400_000)
    final = (n * 0.6 + rng.normal(effect * (total - n), math.sqrt(total - n))) / total
    h = sps.t.isf(0.005, total - 1) / math.sqrt(total)
    e = 0.5 - sps.t.isf(0.01, total - 1) / math.sqrt(total)
    assert reject[0] == pytest.approx(np.mean(np.abs(final) >= h), abs=0.003)
    assert equiv[0] == pytest.approx(np.mean(np.abs(final) < e), abs=0.003)


def test_three_seeds_never_decide_and_identical_differences_never_give_p_zero() -> None:
    state = sequential_state({"same": [0.28, 0.28, 0.28], "huge": [9.0, 9.1, 9.2], "down": [-2.0, -2.0, -2.0]})
    for s in state.values():
        assert s["verdict"] == OPEN and s["next_n"] == 5 and s["n"] == 3
        assert s["p_nominal"] >= 0.25 and s["p"] > 0 and s["ci_low"] == -math.inf and s["ci_high"] == math.inf


def test_clear_cases_reach_each_verdict() -> None:
    rng = np.random.default_rng(0)
    diffs = {
        "better": list(rng.normal(2.0, 0.5, 12)),
        "worse": list(rng.normal(-2.0, 0.5, 12)),
        "equivalent": list(rng.normal(0.0, 0.1, 12)),
        "noisy": list(rng.normal(0.0, 3.0, 12)),
    }
    state = sequential_state(diffs, futility=0.0)
    assert {k: v["verdict"] for k, v in state.items()} == {
        "better": "better", "worse": "worse", "equivalent": "equivalent", "noisy": "undecided"}  # fmt: skip
    assert state["noisy"]["n"] == 12 and state["equivalent"]["n"] < 12
    eq = state["equivalent"]
    assert -0.5 < eq["ci_low"] < eq["mean_diff"] < eq["ci_high"] < 0.5
    assert all(v["next_n"] is None and v["verdict"] in VERDICTS for v in state.values())
    ps = [state[k]["p"] for k in diffs]
    assert [state[k]["p_holm"] for k in diffs] == pytest.approx(holm(ps))


def _drive(streams: dict[str, np.ndarray], **design) -> tuple[dict, dict, list]:
    """A driver: after each batch, give every open comparison the pairs it asks for, from its stream."""
    recorded: dict[str, list[float]] = {k: list(v[:3]) for k, v in streams.items()}
    history = []
    while True:
        state = sequential_state(recorded, **design)
        history.append(({k: list(v) for k, v in recorded.items()}, state))
        wants = {k: s["next_n"] for k, s in state.items() if s["next_n"] is not None}
        if not wants:
            return recorded, state, history
        for k, n in wants.items():
            recorded[k] = list(streams[k][:n])


def test_a_restarted_driver_recomputes_the_same_state() -> None:
    rng = np.random.default_rng(3)
    effects = [0.0, 0.0, 0.5, 1.0, -1.5, 3.0]
    streams = {f"v{i}": np.round(rng.normal(e, 1.0, 40) / 0.2786) * 0.2786 for i, e in enumerate(effects)}
    recorded, final, history = _drive(streams, max_seeds=40)
    assert sequential_state(recorded, max_seeds=40) == final
    for snapshot, state in history:  # a restart at any batch reads the recording and sees what the driver saw
        assert sequential_state(snapshot, max_seeds=40) == state
    assert all(s["verdict"] in VERDICTS for s in final.values())
    assert final["v5"]["verdict"] == "better" and final["v4"]["verdict"] == "worse"
    for (_, before), (_, after) in itertools.pairwise(history):  # closed stays closed; only Holm may still settle it
        for k, s in before.items():
            if s["verdict"] != OPEN:
                assert after[k]["verdict"] == s["verdict"] or after[k]["verdict"] in ("better", "worse")


def test_a_partial_batch_waits_for_the_rest() -> None:
    rng = np.random.default_rng(4)
    full = {k: list(rng.normal(0.3, 1.0, 5)) for k in ("a", "b")}
    before = sequential_state({k: v[:3] for k, v in full.items()})
    partial = sequential_state({"a": full["a"], "b": full["b"][:4]})  # b's fifth seed is still training
    assert {k: (s["n"], s["next_n"], s["p"]) for k, s in partial.items()} == {
        k: (s["n"], s["next_n"], s["p"]) for k, s in before.items()}  # fmt: skip
    assert partial["a"]["n_available"] == 5 and partial["b"]["n_available"] == 4
    assert sequential_state(full)["a"]["n"] == 5
    nothing = sequential_state({"a": [], "b": [0.1]})  # before the first batch ends: waiting, no estimate yet
    assert all(s["verdict"] == OPEN and s["next_n"] == 3 and s["mean_diff"] is None for s in nothing.values())
    assert sequential_state({}) == {}
    with pytest.raises(BadInputError, match="'a'.*seed order"):
        sequential_state({"a": [0.1, float("nan"), 0.2]})


def test_pairs_past_a_close_are_not_used() -> None:
    d = {"x": [4.0, 4.2, 3.9, 4.1, 4.05, 4.0, 3.95, 4.1, 4.0, 4.02, 3.98, 4.01], "y": [0.0] * 3}
    stop = {"futility": 0.5, "pursue_equivalence": 1.0}  # stop as soon as a difference looks out of reach
    closed = sequential_state({"x": d["x"], "y": [0.1, -0.2, 0.05]}, **stop)
    assert closed["y"]["verdict"] == "undecided" and closed["y"]["n"] == 3
    longer = sequential_state({"x": d["x"], "y": [0.1, -0.2, 0.05, 5.0, 5.0, 5.0]}, **stop)
    assert longer["y"] == {**closed["y"], "n_available": 6}


def test_report_mode_and_simulation_mode_agree_on_verdicts() -> None:
    rng = np.random.default_rng(8)
    effects = rng.choice([0.0, 0.5, 1.0, -1.0, 0.1], size=(300, 5, 1))
    x = np.round((effects + rng.uniform(0.1, 1.5, (300, 5, 1)) * rng.standard_normal((300, 5, 12))) / 0.28) * 0.28
    fast = evaluate(x, np.full((300, 5), 12), SequentialDesign())
    exact = evaluate(x, np.full((300, 5), 12), SequentialDesign(), report=True)
    assert (fast["code"] == exact["code"]).all() and (fast["n"] == exact["n"]).all()
    assert (exact["lo"] <= fast["lo"]).all() and (exact["hi"] >= fast["hi"]).all()  # the union of both tests


def test_sequential_comparisons_pairs_by_seed() -> None:
    rows = [("full", s, 70.0 + 0.1 * s) for s in range(5)]
    rows += [("a", s, 72.0 + 0.1 * s + (0.05 if s % 2 else -0.05)) for s in range(5)]
    rows += [("b", s, 70.0 + 0.1 * s) for s in (0, 1, 2, 4)]  # seed 3 of b failed
    df = pd.DataFrame(rows, columns=["variant", "seed", "top1"])
    out = sequential_comparisons(df)
    assert list(out.columns) == ["variant", *SEQUENTIAL_COLUMNS]
    a, b = out.set_index("variant").loc["a"], out.set_index("variant").loc["b"]
    # b has 4 pairs, so the look at 5 waits for it: a, with 5, is still evaluated on its first 3
    assert (a["n_pairs"], a["n_available"], a["seeds"], a["next_n"]) == (3, 5, "0,1,2", 5)
    assert (b["n_pairs"], b["n_available"], b["seeds"], b["next_n"]) == (3, 4, "0,1,2", 5)
    assert a["mean_diff"] == pytest.approx(2.0 - 0.05 / 3) and a["verdict"] == b["verdict"] == OPEN
    done = sequential_comparisons(pd.concat([df, pd.DataFrame([("b", 3, 70.3)], columns=df.columns)]))
    assert (
        done.set_index("variant").loc["a", "n_pairs"] == 5
        and done.set_index("variant").loc["b", "seeds"] == "0,1,2,3,4"
    )
    with pytest.raises(BadInputError, match="sweep.baseline='resnet'"):
        sequential_comparisons(df, baseline="resnet")


def test_caption_states_the_rules() -> None:
    text = sequential_caption("full", SequentialDesign(max_seeds=40))
    for needle in ("[3, 5, 8, 12, 16, 20, 24, 28, 32, 36, 40]", "sign-flip", "Holm", "repeated confidence interval",
                   "equivalent", "undecided", "open", "Hwang-Shih-DeCani"):  # fmt: skip
        assert needle in text


def test_ablation_tables_show_sequential_verdicts() -> None:
    from repvgg_search.analysis.ablation import ablation_markdown, ablation_tables
    from repvgg_search.analysis.schema import example_record
    from repvgg_search.analysis.tables import metric_table

    rng = np.random.default_rng(9)
    records = []
    for seed in range(12):
        base = 96.0 + rng.normal(0, 0.3)
        for variant, shift in (("full", 0.0), ("no_branches", -3.0), ("no_1x1", 0.0)):
            top1 = base if variant == "full" else base + shift + rng.normal(0, 0.05)
            records.append(example_record(f"{variant}{seed}", variant=variant, seed=seed, top1=top1))
    df = metric_table(records)
    t6 = ablation_tables(df, design=SequentialDesign()).get("table6").set_index("variant")
    assert t6.loc["no_branches", "verdict"] == "worse" and t6.loc["no_1x1", "verdict"] == "equivalent"
    assert t6.loc["full", "verdict"] == "baseline" and "seeds for ±0.5" not in t6.columns
    assert t6.loc["no_1x1", "pairs"] < 12 and pd.isna(t6.loc["no_branches", "next n"])  # equivalent early
    fixed = ablation_tables(df).get("table6").set_index("variant")  # 12 seeds, fixed design: still decides
    assert fixed.loc["no_branches", "verdict"] == "worse" and fixed.loc["no_1x1", "verdict"] == "indistinguishable"
    text = ablation_markdown(df, design=SequentialDesign())
    assert "Sequential seeds" in text and "Holm-corrected over all 2 comparisons" in text and "next n" in text


@pytest.mark.slow
def test_the_simulation_benchmark_prints_its_verdict_line() -> None:
    """benchmarks/sequential_seeds.py, run small: its last line is the one the issue asks for, with sane values."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sequential_seeds.py"
    proc = subprocess.run([sys.executable, str(script), "--ablations", "300", "--max-seeds", "24"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    got = re.fullmatch(r"sequential: type I error ([\d.]+), power ([\d.]+), seeds used ([\d.]+) vs fixed (\d+)", last)
    assert got, last
    error, power, used, fixed = (float(g) for g in got.groups())
    assert error <= 0.05 and 0.5 < power <= 1 and 3 <= used <= 24 and 2 <= fixed <= 80

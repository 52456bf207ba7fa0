"""Simulated ablations: the sequential seed design's type I error, power and seeds used against the fixed design.

Run: python benchmarks/sequential_seeds.py [--ablations 10000] [--max-seeds 40] [--seed 20261201]
Targets (issue 20): E <= 0.05, P >= 0.8, S <= 0.6 x F. Its last line is
`sequential: type I error E, power P, seeds used S vs fixed F`.

What is simulated (all assumptions, chosen before the design was tuned, and printed by the run):
- 10 comparisons per ablation against one shared baseline: 5 with no effect, 5 with a true effect of 1 top1 point
  (random sign). E counts the null comparisons declared better or worse; P the 1-point effects declared in their
  direction; S the mean paired seeds per comparison; F the fewest seeds per comparison with which the project's
  fixed design (exact sign-flip test up to 12 pairs, floored paired t beyond, Holm over the 10 at 0.05: the
  rules of `stats.paired_comparisons`) reaches the same power on the same simulated seeds.
- The spread of the per-seed paired differences, from the README's digits figures: a 0.5-point difference needing
  8, 34 (median) and 76 paired seeds at 80% power means per-comparison standard deviations of 0.44, 1.00 and 1.52
  top1 points (G*Power's paired t); each comparison draws its std uniformly from [0.44, 1.52], which has that
  minimum, median and maximum. (The README's 3-seed mean differences, -1.21..+1.21 over 10 variants, fit a common
  std of about 1.2-1.4 with no effect at all: the same scale.)
- Every seed's baseline trial is shared by the 10 comparisons (std 0.31, half the smallest paired variance), and
  every top1 is a multiple of 100/359 points (digits' 359 validation images), so paired differences tie and can be
  identical, as on digits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from repvgg_search.analysis.sequential import SequentialDesign, evaluate
from repvgg_search.analysis.stats import holm_rows, paired_pvalues

COMPARISONS = 10
NULLS = 5
EFFECT = 1.0  # top1 points
SIGMA = (0.44, 1.52)  # per-comparison std of the paired differences, top1 points
BASELINE_SD = 0.31
STEP = 100 / 359  # top1 resolution on digits' validation split
ALPHA = 0.05
BETTER, WORSE, EQUIVALENT = 1, 2, 3  # sequential.evaluate's codes: index into (open, *VERDICTS)


def simulate(rng: np.random.Generator, ablations: int, pairs: int, nulls: int = NULLS):
    """Paired differences (ablations, comparisons, pairs) of quantized top1 values, and the true effects."""
    c = COMPARISONS
    effects = np.where(np.arange(c) < nulls, 0.0, EFFECT) * rng.choice([-1.0, 1.0], size=(ablations, c))
    sigma = rng.uniform(*SIGMA, size=(ablations, c, 1))
    own = np.sqrt(sigma**2 - BASELINE_SD**2)  # the variant's own seed noise; the baseline's is shared
    level = rng.uniform(0, STEP, size=(ablations, 1, 1))  # where the accuracy sits between two representable values
    base = np.round((level + BASELINE_SD * rng.standard_normal((ablations, 1, pairs))) / STEP)
    variant = np.round((level + effects[..., None] + own * rng.standard_normal((ablations, c, pairs))) / STEP)
    return (variant - base) * STEP, effects


def _share(hits: np.ndarray, where: np.ndarray) -> float:
    return float(hits[where].mean()) if where.any() else float("nan")


def sequential_figures(diffs: np.ndarray, effects: np.ndarray, design: SequentialDesign) -> dict[str, float]:
    n = design.looks()[-1]
    state = evaluate(diffs[..., :n], np.full(diffs.shape[:2], n), design)
    code, used = state["code"], state["n"]
    null, one = effects == 0, np.abs(effects) == EFFECT
    called = np.isin(code, (BETTER, WORSE))
    right = ((code == BETTER) & (effects > 0)) | ((code == WORSE) & (effects < 0))
    return {
        "E": _share(called, null),
        "P": _share(right, one),
        "S": float(used.mean()),
        "S_null": _share(used, null),
        "S_effect": _share(used, one),
        "FWER": float((called & null).any(axis=1).mean()),
        "equivalent_null": _share(code == EQUIVALENT, null),
        "equivalent_effect": _share(code == EQUIVALENT, one),
        "wrong_sign": _share(called & ~right, one),
    }


def fixed_power(diffs: np.ndarray, effects: np.ndarray, n: int) -> tuple[float, float]:
    """Power on the 1-point effects and the null comparisons' error rate of the fixed design with n seeds."""
    x = diffs[..., :n]
    p = paired_pvalues(x.reshape(-1, n)).reshape(effects.shape)
    called = holm_rows(p) < ALPHA
    right = called & (np.sign(x.mean(axis=-1)) == np.sign(effects))
    return right[np.abs(effects) == EFFECT].mean(), called[effects == 0].mean()


def fixed_seeds(diffs: np.ndarray, effects: np.ndarray, power: float) -> int | None:
    """The fewest seeds per comparison with which the fixed design reaches `power` (None: not within the data)."""
    for n in range(2, diffs.shape[-1] + 1):
        if fixed_power(diffs, effects, n)[0] >= power:
            return n
    return None


def _line(name: str, design: SequentialDesign, got: dict[str, float], fixed: int | None) -> str:
    ratio = f"{got['S'] / fixed:.2f}" if fixed else "n/a"
    return (
        f"{name}: looks {list(design.looks())}: E {got['E']:.4f} (FWER {got['FWER']:.4f}), P {got['P']:.3f}, "
        f"S {got['S']:.2f} (null {got['S_null']:.2f}, 1-point {got['S_effect']:.2f}), fixed F {fixed}, "
        f"S/F {ratio}; equivalent: {got['equivalent_null']:.3f} of nulls, {got['equivalent_effect']:.4f} of "
        f"1-point effects; wrong sign {got['wrong_sign']:.4f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ablations", type=int, default=10_000)
    p.add_argument("--max-seeds", type=int, default=40, help="the budget per comparison (sweep.max_seeds)")
    p.add_argument("--seed", type=int, default=20261201)
    args = p.parse_args()
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    diffs, effects = simulate(rng, args.ablations, pairs=80)
    print(
        f"{args.ablations} simulated ablations x {COMPARISONS} comparisons ({NULLS} null, {COMPARISONS - NULLS} at "
        f"+-{EFFECT} top1 point); paired-difference std U{SIGMA}, shared baseline std {BASELINE_SD}, top1 in steps "
        f"of {STEP:.4f}; alpha {ALPHA} family-wise (Holm) over the {COMPARISONS}"
    )
    default = SequentialDesign()
    got = sequential_figures(diffs, effects, default)
    print(_line("default budget (sweep.max_seeds = 12)", default, got, fixed_seeds(diffs, effects, got["P"])))
    null_diffs, null_effects = simulate(np.random.default_rng(args.seed + 1), args.ablations, 80, COMPARISONS)
    design = SequentialDesign(max_seeds=args.max_seeds)
    every_null = sequential_figures(null_diffs, null_effects, design)
    print(f"all {COMPARISONS} comparisons null, budget {args.max_seeds}: FWER {every_null['FWER']:.4f}, "
          f"E {every_null['E']:.4f}, S {every_null['S']:.2f}")  # fmt: skip
    got = sequential_figures(diffs, effects, design)
    fixed = fixed_seeds(diffs, effects, got["P"])
    print(_line(f"budget sweep.max_seeds = {args.max_seeds}", design, got, fixed))
    print(f"({time.perf_counter() - start:.0f} s on this machine)")
    print(f"sequential: type I error {got['E']:.4f}, power {got['P']:.3f}, seeds used {got['S']:.1f} vs fixed {fixed}")


if __name__ == "__main__":
    main()

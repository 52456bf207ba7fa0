"""Group-sequential boundaries by alpha spending: spending functions, the boundaries they give at a schedule's looks
(recursive numerical integration), exit probabilities, and the nominal levels a sequential p-value inverts."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq
from scipy.special import ndtr

from ..errors import BadInputError

SPENDING = ("obrien_fleming", "pocock", "hsd")
_SQRT2PI = math.sqrt(2 * math.pi)
GRID_POINTS = 401  # Simpson nodes per look: boundaries agree with rpact's to 1e-7 (tests/test_sequential.py)
_TAIL = 8.0  # the one-sided lower edge of the grid, in standard deviations of the score
_LEVELS = np.geomspace(1e-9, 1.0, 121)  # where the nominal-level curves are tabulated for sequential p-values


def spending(name: str, alpha: float, gamma: float = -4.0) -> Callable[[np.ndarray], np.ndarray]:
    """The cumulative type I error spent by information fraction t (0..1), for a total `alpha`.

    `obrien_fleming`: Lan & DeMets (Biometrika 1983, 70:659-663), 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)). Each spends
    `alpha` by t = 1 whatever the test's sidedness: pass the one-sided level for a one-sided test.
    `pocock`: Lan & DeMets' Pocock-type alpha ln(1 + (e - 1) t). `hsd`: Hwang, Shih & DeCani (Stat. Med. 1990,
    9:1439-1445), alpha (1 - e^{-gamma t}) / (1 - e^{-gamma}), alpha t at gamma 0.
    """
    if name not in SPENDING:
        raise BadInputError(f"sweep.spending={name!r} is not known; allowed: {', '.join(SPENDING)}")
    if name == "obrien_fleming":
        z = sps.norm.isf(alpha / 2)
        return lambda t: 2 * sps.norm.sf(z / np.sqrt(np.maximum(t, 1e-300)))
    if name == "pocock":
        return lambda t: alpha * np.log1p((math.e - 1) * np.asarray(t, dtype=float))
    if gamma == 0:
        return lambda t: alpha * np.asarray(t, dtype=float)
    return lambda t: alpha * -np.expm1(-gamma * np.asarray(t, dtype=float)) / -math.expm1(-gamma)


def _simpson(low: float, high: float, points: int = GRID_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and Simpson weights on [low, high] (points odd)."""
    x = np.linspace(low, high, points)
    w = np.ones(points)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (x[1] - x[0]) / 3.0


def _exit(c: float, info: float, x: np.ndarray, g: np.ndarray, step: float, drift: float, sides: int) -> float:
    """P(the score crosses +-c sqrt(info) at this look, having continued so far): g holds weighted sub-densities."""
    sd = math.sqrt(step)
    edge = c * math.sqrt(info)
    up = float(g @ ndtr((x + drift * step - edge) / sd))
    return up + (float(g @ ndtr((-edge - x - drift * step) / sd)) if sides == 2 else 0.0)


def _carry(c: float, info: float, x: np.ndarray, g: np.ndarray, step: float, drift: float, sides: int):
    """The weighted sub-density of the score at this look on its continuation region (Armitage, McPherson & Rowe,
    JRSS A 1969; Jennison & Turnbull, Group Sequential Methods, 2000, ch. 19)."""
    top = min(c, 40.0) * math.sqrt(info)
    low = -top if sides == 2 else -_TAIL * math.sqrt(info) + drift * info
    y, w = _simpson(low, top)
    sd = math.sqrt(step)
    dens = np.exp(-0.5 * ((y[:, None] - x[None, :] - drift * step) / sd) ** 2) @ g / (sd * _SQRT2PI)
    return y, w * dens


def _first(c: float, info: float, drift: float, sides: int) -> tuple[np.ndarray, np.ndarray]:
    top = min(c, 40.0) * math.sqrt(info)
    low = -top if sides == 2 else -_TAIL * math.sqrt(info) + drift * info
    y, w = _simpson(low, top)
    return y, w * sps.norm.pdf((y - drift * info) / math.sqrt(info)) / math.sqrt(info)


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    t = np.asarray(fractions, dtype=float)
    if t.ndim != 1 or len(t) == 0 or (t <= 0).any() or (t > 1 + 1e-12).any() or (np.diff(t) <= 0).any():
        raise BadInputError(f"sequential fractions={list(fractions)!r} must increase strictly within (0, 1]")
    return t


def _solve(increment: float, info: float, x: np.ndarray, g: np.ndarray, step: float, sides: int) -> float:
    """The critical value whose exit probability at this look is `increment` (0 when even c = 0 spends less)."""
    if _exit(0.0, info, x, g, step, 0.0, sides) <= increment:
        return 0.0
    return brentq(lambda c: _exit(c, info, x, g, step, 0.0, sides) - increment, 0.0, 40.0)


def boundaries(fractions: Sequence[float], spent: Sequence[float], sides: int = 2) -> np.ndarray:
    """Critical |z| values c_k at information fractions t_k that spend the cumulative type I error `spent[k]`
    (increments of a spending function; Lan & DeMets 1983), for a two-sided symmetric (sides=2) or an upper
    one-sided (sides=1) test of a Brownian-motion score. An increment <= 1e-15 gives c = inf (no stop there)."""
    t = _check_fractions(fractions)
    increments = np.diff(np.concatenate([[0.0], np.asarray(spent, dtype=float)]))
    out = np.empty(len(t))
    x = g = None
    for k, (info, inc) in enumerate(zip(t, increments)):
        if k == 0:
            out[0] = sps.norm.isf(inc / sides) if inc > 1e-15 else math.inf
            x, g = _first(out[0], info, 0.0, sides)
            continue
        step = info - t[k - 1]
        if inc <= 1e-15:
            out[k] = math.inf
        else:
            out[k] = _solve(inc, info, x, g, step, sides)
        if k < len(t) - 1:
            x, g = _carry(out[k], info, x, g, step, 0.0, sides)
    return out


def exit_probabilities(
    fractions: Sequence[float], bounds: Sequence[float], drift: float = 0.0, sides: int = 2
) -> np.ndarray:
    """P(stop at look k) for critical |z| values `bounds`, under a drift theta of the score (E Z_k = theta sqrt(t_k)):
    the type I error spent per look at drift 0, the power per look otherwise."""
    t = _check_fractions(fractions)
    out = np.empty(len(t))
    x = g = None
    for k, (info, c) in enumerate(zip(t, bounds)):
        if k == 0:
            mean = drift * math.sqrt(info)
            out[0] = sps.norm.sf(c - mean) + (sps.norm.cdf(-c - mean) if sides == 2 else 0.0)
            x, g = _first(c, info, drift, sides)
            continue
        step = info - t[k - 1]
        out[k] = _exit(c, info, x, g, step, drift, sides)
        if k < len(t) - 1:
            x, g = _carry(c, info, x, g, step, drift, sides)
    return out


def nominal_levels(
    fractions: Sequence[float], alpha: float, name: str = "obrien_fleming", gamma: float = -4.0
) -> np.ndarray:
    """Two-sided nominal p-value thresholds 2 Phi(-c_k) of the level-`alpha` design at each look."""
    t = _check_fractions(fractions)
    return 2 * sps.norm.sf(boundaries(t, spending(name, alpha, gamma)(t)))


@functools.lru_cache(maxsize=64)
def _level_curves(fractions: tuple[float, ...], name: str, gamma: float) -> list[tuple[PchipInterpolator, float]]:
    """Per look, log(level) as a monotone function of log(nominal threshold), tabulated over _LEVELS, with the
    largest threshold up to which it is monotone (O'Brien-Fleming-type spending at levels near 1 spends nearly
    everything at the first look, so later thresholds fall again there: a p-value past that is reported as 1)."""
    table = np.array([nominal_levels(fractions, a, name, gamma) for a in _LEVELS])  # (levels, looks)
    curves = []
    for k in range(len(fractions)):
        col = table[:, k]
        rising = np.concatenate([[True], np.diff(col) > 0]) & (col > 0)
        first = int(np.argmax(rising))  # levels so small that the look cannot stop at all come first
        stop = first + int(np.argmin(rising[first:])) if not rising[first:].all() else len(col)
        xs, ys = np.log(col[first:stop]), np.log(_LEVELS[first:stop])
        curves.append((PchipInterpolator(xs, ys, extrapolate=True), float(col[stop - 1])))
    return curves


def threshold(
    fractions: Sequence[float], level: np.ndarray, look: int, name: str = "obrien_fleming", gamma: float = -4.0
) -> np.ndarray:
    """The nominal threshold of `look` in the design of each `level` (the inverse of the tabulated curve)."""
    curve = _level_curves(tuple(float(f) for f in fractions), name, float(gamma))[look][0]
    xs = curve.x
    grid = np.exp(curve(xs))  # the tabulated levels at the knots
    return np.exp(np.interp(np.log(np.clip(level, grid[0], grid[-1])), np.log(grid), xs))


def look_level(
    fractions: Sequence[float], nominal_p: np.ndarray, look: int, name: str = "obrien_fleming", gamma: float = -4.0
) -> np.ndarray:
    """The smallest level whose design (same spending function, same looks) stops at `look` with this nominal
    p-value there: the inverse of that look's threshold as a function of the level (interpolated, ~1e-5 relative).
    Below the table's smallest threshold the answer is the table's smallest level (1e-9): larger than the truth,
    never 0; past the range where thresholds rise with the level, 1."""
    curve, top = _level_curves(tuple(float(f) for f in fractions), name, float(gamma))[look]
    p = np.asarray(nominal_p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.exp(curve(np.log(np.clip(p, math.exp(curve.x[0]), top))))
    level = np.where(p > top, 1.0, np.clip(level, _LEVELS[0], 1.0))
    return np.where(np.isnan(p), np.nan, level)


def sequential_p(
    fractions: Sequence[float], nominal_p: np.ndarray, name: str = "obrien_fleming", gamma: float = -4.0
) -> np.ndarray:
    """The sequential p-value after each look: the smallest level whose design would have stopped by then, the
    running minimum over looks j <= k of `look_level` (of the repeated p-values of Jennison & Turnbull 2000, ch. 9).
    Under H0, P(it ever falls to u or below) <= u (the level-u design's error), so Holm's procedure may use it at
    whatever look each comparison stopped.
    `nominal_p`: shape (..., looks), NaN for looks not reached."""
    p = np.asarray(nominal_p, dtype=float)
    out = np.stack([look_level(fractions, p[..., k], k, name, gamma) for k in range(p.shape[-1])], axis=-1)
    return np.where(np.isnan(p), np.nan, np.fmin.accumulate(out, axis=-1))

"""Pareto fronts and 2-D hypervolume over result tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ..schema import Status, TrialRecord


def _to_max(points: ArrayLike, maximize: Sequence[bool]) -> np.ndarray:
    """Points flipped so that larger is better on every axis."""
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != len(maximize):
        raise ValueError(f"points must be (n, {len(maximize)}), got shape {p.shape}")
    return p * np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)


def pareto_mask(points: ArrayLike, maximize: Sequence[bool] = (True, True)) -> np.ndarray:
    """True for points no other point dominates (>= on every axis and > on one); rows with NaN are False.

    Equal points do not dominate each other, so duplicates on the front are all kept.
    """
    q = _to_max(points, maximize)
    valid = ~np.isnan(q).any(axis=1)
    mask = np.zeros(len(q), dtype=bool)
    mask[valid] = _front_2d(q[valid]) if q.shape[1] == 2 else _front_nd(q[valid])
    return mask


def _front_2d(q: np.ndarray) -> np.ndarray:
    """O(n log n): sweep x from high to low; a point survives if no larger x reaches its y, nor its own x group."""
    if not len(q):
        return np.zeros(0, dtype=bool)
    order = np.lexsort((-q[:, 1], -q[:, 0]))
    x, y = q[order, 0], q[order, 1]
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    group_max = np.maximum.reduceat(y, starts)
    # Best y among strictly larger x, per group of equal x.
    best_before = np.r_[-np.inf, np.maximum.accumulate(group_max)[:-1]]
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(x)]))
    keep_sorted = (y > best_before[group]) & (y == group_max[group])
    keep = np.empty(len(q), dtype=bool)
    keep[order] = keep_sorted
    return keep


def _front_nd(q: np.ndarray) -> np.ndarray:
    """Chunked all-pairs comparison for more than two objectives."""
    keep = np.ones(len(q), dtype=bool)
    for start in range(0, len(q), 512):
        block = q[start : start + 512, None, :]
        ge = (q[None, :, :] >= block).all(axis=2)
        gt = (q[None, :, :] > block).any(axis=2)
        keep[start : start + 512] = ~(ge & gt).any(axis=1)
    return keep


def pareto_front(df: pd.DataFrame, x: str, y: str, *, maximize: Sequence[bool] = (True, True)) -> pd.DataFrame:
    """The rows with both `x` and `y`, sorted by `x`, with a boolean column `pareto` (dominated rows kept)."""
    pts = df[df[x].notna() & df[y].notna()].copy()
    pts["pareto"] = pareto_mask(pts[[x, y]].to_numpy(dtype=float).reshape(-1, 2), maximize)
    return pts.sort_values([x, y]).reset_index(drop=True)


def hypervolume(points: ArrayLike, ref: Sequence[float], maximize: Sequence[bool] = (True, True)) -> float:
    """Area dominated by `points` and bounded by the reference point `ref` (2-D; points not beyond `ref` add 0)."""
    q = _to_max(points, maximize)
    r = _to_max([ref], maximize)[0]
    q = q[~np.isnan(q).any(axis=1)]
    q = q[(q > r).all(axis=1)]
    if not len(q):
        return 0.0
    front = q[pareto_mask(q)]
    front = front[np.lexsort((front[:, 1], -front[:, 0]))]  # x descending, so y ascends along the front
    heights = np.diff(np.concatenate([[r[1]], front[:, 1]]))
    return float(np.sum((front[:, 0] - r[0]) * np.clip(heights, 0.0, None)))


def reference_point(
    points: ArrayLike, maximize: Sequence[bool] = (True, True), margin: float = 0.1
) -> tuple[float, float]:
    """The worst value on each axis pushed `margin` of the range further, so that edge points count."""
    p = np.asarray(points, dtype=float)
    p = p[~np.isnan(p).any(axis=1)]
    if not len(p):
        raise ValueError("no points to place a reference point")
    lo, hi = p.min(axis=0), p.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    worst = np.where(np.asarray(maximize, dtype=bool), lo - margin * span, hi + margin * span)
    return float(worst[0]), float(worst[1])


def hypervolume_progress(
    df: pd.DataFrame,
    x: str = "deploy_macs",
    y: str = "top1",
    *,
    maximize: Sequence[bool] = (False, True),
    order: str = "search_number",
    ref: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Hypervolume of the trials seen so far, after each trial in `order` (reference point in `.attrs["ref"]`).

    Trials without `x` or `y` (failed, infeasible) still count as a step; the reference point is fixed over
    the whole run so that the curve never decreases.
    """
    rows = df.sort_values(order, na_position="last").reset_index(drop=True)
    pts = rows[[x, y]].to_numpy(dtype=float)
    if ref is None:
        ref = reference_point(pts, maximize)
    front = np.empty((0, 2))
    hv, improved = [], []
    for p in pts:
        before = hv[-1] if hv else 0.0
        if not np.isnan(p).any():
            cand = np.vstack([front, p])
            front = cand[pareto_mask(cand, maximize)]
        hv.append(hypervolume(front, ref, maximize) if len(front) else 0.0)
        improved.append(hv[-1] > before)
    out = pd.DataFrame({order: rows[order], "trial_id": rows["trial_id"], "hypervolume": hv, "improved": improved})
    out.attrs["ref"] = (float(ref[0]), float(ref[1]))
    return out


def search_candidate(result: TrialRecord) -> bool:
    """Whether a width-search trial record counts for its study's Pareto set: completed, trained to the end by the
    search (its `search.kind` is completed: not pruned, diverged, failed or skipped) and within every budget.

    The one rule behind both the search's pareto.csv (`search.collect.pareto_table`) and the report's Pareto set.
    """
    search = result.search
    return (
        result.status is Status.COMPLETED
        and search is not None
        and search.kind is Status.COMPLETED
        and bool(search.feasible)
    )


def search_values(results: Sequence[TrialRecord], n_objectives: int) -> np.ndarray:
    """(n, `n_objectives`) recorded objective values (`search.values`) of the records `search_candidate` accepts;
    a row of NaN for any other record (so `pareto_mask` leaves it off)."""
    out = np.full((len(results), n_objectives), np.nan)
    for i, r in enumerate(results):
        values = r.search.values if r.search is not None else None
        if search_candidate(r) and isinstance(values, list | tuple) and len(values) == n_objectives:
            out[i] = [np.nan if v is None else float(v) for v in values]
    return out

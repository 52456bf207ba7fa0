"""Pareto masks, hypervolume and search progress on hand-computed cases; a search's Pareto set in the report."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repvgg_search.analysis.examples import example_record
from repvgg_search.analysis.pareto import (
    hypervolume,
    hypervolume_progress,
    pareto_front,
    pareto_mask,
    reference_point,
    search_candidate,
    search_values,
)
from repvgg_search.analysis.report import build_report
from repvgg_search.schema import Status, parse_record


def brute_force_front(points: np.ndarray, maximize: tuple[bool, ...]) -> np.ndarray:
    """The definition, written out with loops: nobody is >= everywhere and > somewhere."""
    q = points * np.where(maximize, 1.0, -1.0)
    keep = []
    for i, p in enumerate(q):
        if np.isnan(p).any():
            keep.append(False)
            continue
        dominated = any(not np.isnan(o).any() and (o >= p).all() and (o > p).any() for j, o in enumerate(q) if j != i)
        keep.append(not dominated)
    return np.array(keep, dtype=bool)


def test_pareto_mask_known_case() -> None:
    pts = [(1, 5), (2, 4), (2, 3), (3, 1), (0, 4), (3, 1), (np.nan, 9)]
    # (2, 3) is beaten by (2, 4); (0, 4) by (1, 5); the two (3, 1) tie and both stay; NaN rows never count.
    assert pareto_mask(pts).tolist() == [True, True, False, True, False, True, False]


def test_pareto_mask_minimize_axis() -> None:
    pts = [(1.0, 90.0), (2.0, 95.0), (2.5, 94.0), (0.5, 80.0)]  # (GMACs to minimize, top1 to maximize)
    assert pareto_mask(pts, (False, True)).tolist() == [True, True, False, True]


@pytest.mark.parametrize("maximize", list(itertools.product([True, False], repeat=2)))
def test_pareto_mask_matches_definition(maximize: tuple[bool, bool]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        pts = rng.integers(0, 8, size=(int(rng.integers(1, 40)), 2)).astype(float)
        pts[rng.random(len(pts)) < 0.1, 0] = np.nan
        assert (pareto_mask(pts, maximize) == brute_force_front(pts, maximize)).all()


def test_pareto_mask_three_objectives() -> None:
    pts = np.array([(1, 1, 1), (2, 2, 2), (3, 0, 0), (2, 2, 1)], dtype=float)
    assert pareto_mask(pts, (True, True, True)).tolist() == [False, True, True, False]


def test_hypervolume_staircase() -> None:
    # Rectangles [0,3]x[0,1], [0,2]x[0,2], [0,1]x[0,3]: union area 3 + 2 + 1 = 6.
    assert hypervolume([(3, 1), (2, 2), (1, 3)], ref=(0, 0)) == pytest.approx(6.0)
    # A dominated point and a point beyond the reference add nothing.
    assert hypervolume([(3, 1), (2, 2), (1, 3), (1, 1), (-1, 5)], ref=(0, 0)) == pytest.approx(6.0)


def test_hypervolume_minimized_axis() -> None:
    # (GMACs, top1) with ref (2.0 GMACs, 90 %): 1.7*3 + 1.4*2 + 1.1*1 + 1.0*0.5 = 9.5.
    front = [(0.3, 93.0), (0.6, 95.0), (0.9, 96.0), (1.0, 96.5), (1.6, 96.4)]
    assert hypervolume(front, ref=(2.0, 90.0), maximize=(False, True)) == pytest.approx(9.5)


def test_hypervolume_empty_and_reference_point() -> None:
    assert hypervolume(np.empty((0, 2)), ref=(0, 0)) == 0.0
    ref = reference_point([(1.0, 90.0), (3.0, 95.0)], maximize=(False, True))
    assert ref == pytest.approx((3.2, 89.5))  # worst values pushed 10% of the range


def test_hypervolume_progress_is_monotone_and_hand_checked() -> None:
    df = pd.DataFrame(
        {
            "search_number": [0, 1, 2, 3, 4],
            "trial_id": list("abcde"),
            "gmacs": [0.3, 0.6, 0.8, np.nan, 0.9],
            "top1": [93.0, 95.0, 94.5, np.nan, 96.0],
        }
    )
    prog = hypervolume_progress(df, "gmacs", "top1", ref=(2.0, 90.0))
    assert prog["hypervolume"].tolist() == pytest.approx([5.1, 7.9, 7.9, 7.9, 9.0])
    assert prog["improved"].tolist() == [True, True, False, False, True]
    assert prog.attrs["ref"] == (2.0, 90.0)


def test_pareto_front_keeps_dominated_rows() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, None], "y": [3.0, 1.0, 2.0, 5.0], "id": list("abcd")})
    front = pareto_front(df, "x", "y", maximize=(False, True))
    assert front["id"].tolist() == ["a", "b", "c"]  # the row without x is not a point
    assert front["pareto"].tolist() == [True, False, False]


# ---------------------------------------------------------------- a width search's Pareto set, report vs pareto.csv

OBJECTIVES = ["top1", "images_per_s"]
# (number, status, kind, feasible, top1, images/s, GMACs). On top1 vs images/s the front is {0, 1}; on top1 vs
# GMACs over completed trials (what reports used to draw) it is {0, 2, 3, 4}.
CANDIDATES = [
    (0, "completed", "trained", True, 96.0, 5000.0, 1.2),  # best top1
    (1, "completed", "trained", True, 94.0, 9000.0, 1.0),  # fastest
    (2, "completed", "trained", True, 95.0, 4000.0, 0.6),  # slower than #0 and worse: only on the GMACs front
    (3, "completed", "trained", True, 93.0, 3000.0, 0.4),  # cheapest in MACs: only on the GMACs front
    (4, "completed", "trained", False, 97.0, 9500.0, 1.5),  # beats all, but over the latency budget
    (5, "pruned", "pruned", None, None, None, 0.9),
    (6, "infeasible", "infeasible", False, None, None, 3.5),  # over the MAC budget, never trained
    (7, "failed", "failed", None, None, None, 0.8),
]


def _candidate(number, status, kind, feasible, top1, ips, gmacs) -> dict:
    values = [top1, ips] if kind == "trained" else None
    search = {"study": "speed-study", "number": number, "kind": kind, "feasible": feasible, "values": values,
              "objectives": OBJECTIVES, "directions": ["maximize", "maximize"]}  # fmt: skip
    return example_record(
        f"cand{number}", top1=top1, preset="custom", group="speed-study", status=status, macs=int(gmacs * 1e9),
        images_per_s=ips, speed={"device": "cuda", "device_name": "GPU", "batch_size": 64}, search=search,
    )  # fmt: skip


def _markdown_table_after(md: str, marker: str) -> pd.DataFrame:
    lines = md[md.index(marker) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = [line.strip("|").split("|") for line in itertools.takewhile(lambda x: x.startswith("|"), lines[start:])]
    return pd.DataFrame([[c.strip() for c in r] for r in rows[2:]], columns=[c.strip() for c in rows[0]])


def test_search_candidate_and_values_follow_the_record() -> None:
    recs = [parse_record(_candidate(*c)) for c in CANDIDATES]  # v1's "trained" is read as completed
    assert recs[0].search.kind is Status.COMPLETED
    assert [search_candidate(r) for r in recs] == [True, True, True, True, False, False, False, False]
    values = search_values(recs, 2)
    assert values[0].tolist() == [96.0, 5000.0] and np.isnan(values[4:]).all()


def test_report_pareto_set_is_the_searchs_own(tmp_path: Path) -> None:
    """The study optimized top1 vs images/s: the report lists the set pareto.csv lists, not top1 vs GMACs."""
    from repvgg_search.search.collect import pareto_table
    from repvgg_search.sweep.folder import SweepFolder

    for c in CANDIDATES:
        (tmp_path / "search" / "trials" / f"cand{c[0]}").mkdir(parents=True)
        (tmp_path / "search" / "trials" / f"cand{c[0]}" / "result.json").write_text(json.dumps(_candidate(*c)))
    expected = pareto_table(SweepFolder(tmp_path / "search"), OBJECTIVES)
    md = build_report(tmp_path / "search", tmp_path / "report").read_text()
    table = _markdown_table_after(md, "Pareto set on the study's own objectives")
    assert set(table["trial_id"]) == set(expected["trial_id"]) == {"cand0", "cand1"}
    assert table["trial_id"].tolist() == expected["trial_id"].tolist()  # best top1 first, as pareto.csv
    assert "maximize top1, maximize images_per_s" in md
    assert "Hypervolume of top1 vs throughput (images/s) after each trial" in md  # progress: the same objectives


def test_every_search_objective_has_a_report_column():
    """The report values a study on its own objectives: each objective the search accepts has a metric-table
    column, a direction and a unit (an INT8 search's report once failed with KeyError: 'int8_top1')."""
    from repvgg_search.analysis.fronts import OBJECTIVE_COLUMNS, objective
    from repvgg_search.analysis.tables import metric_table
    from repvgg_search.schema import OBJECTIVES

    assert set(OBJECTIVE_COLUMNS) == set(OBJECTIVES)
    columns = set(metric_table([example_record("t0")]).columns)
    for name, (direction, *_) in OBJECTIVES.items():
        o = objective(name)
        assert o.column in columns and o.maximize == (direction == "maximize") and o.unit, name

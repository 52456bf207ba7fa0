"""Report fronts: top1 against each cost axis, one front per data set and measurement setup, never mixed; and each
width-search study's Pareto set on the study's own objectives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..schema import MAC_CONVENTION, OBJECTIVES, TrialRecord
from .pareto import hypervolume, pareto_front, pareto_mask, reference_point, search_values


@dataclass(frozen=True)
class Axis:
    """A cost axis: record column, display label and unit, scale from raw counts, direction."""

    column: str
    label: str
    unit: str
    scale: float
    maximize: bool
    per_setup: bool  # speed axes depend on the measurement setup; MACs and params do not
    digits: int  # decimals shown in tables
    note: str = ""


AXES = (
    Axis("images_per_s", "throughput", "images/s", 1.0, True, True, 1),
    Axis("latency_ms", "latency", "ms per batch", 1.0, False, True, 2),
    Axis("deploy_macs", "deploy MACs", "GMACs", 1e-9, False, False, 4, MAC_CONVENTION),
    Axis("deploy_params", "deploy params", "M", 1e-6, False, False, 3),
)


@dataclass
class Front:
    """One Pareto front: all eligible points (column `pareto` marks the front), its hypervolume and reference."""

    name: str
    axis: Axis
    data: str
    setup: str  # the speed setup, or the input size MACs were counted at
    points: pd.DataFrame  # columns x (display units), y (top1 %), pareto, plus the metric-table columns
    hypervolume: float
    ref: tuple[float, float]

    @property
    def x_label(self) -> str:
        """Axis label with unit (and, for MACs, the counting convention and input size)."""
        if self.axis.column == "deploy_macs":
            return f"{self.axis.label} at {self.setup} ({self.axis.unit}; {self.axis.note})"
        return f"{self.axis.label} ({self.axis.unit})"

    @property
    def title(self) -> str:
        """Plot/section title naming the data set and the setup."""
        where = "measured on " if self.axis.per_setup else "counted at input "
        return f"top1 vs {self.axis.label} — {self.data} — {where}{self.setup}"

    @property
    def hv_unit(self) -> str:
        """Unit of the hypervolume: x unit times percent."""
        return f"{self.axis.unit} x top1 %"


def _setup_key(axis: Axis) -> str:
    return "speed_setup" if axis.per_setup else "macs_input"


def build_fronts(df: pd.DataFrame, axes: tuple[Axis, ...] = AXES) -> list[Front]:
    """Every front of the report: per axis, per data set, per setup (speed device or MACs input size)."""
    fronts = []
    for axis in axes:
        ok = df[left_out_reasons(df, axis.column).isna()]
        key = _setup_key(axis)
        ok = ok.assign(data=ok["data"].fillna("unknown data"), **{key: ok[key].fillna("unknown setup")})
        groups = ok.groupby(["data", key], sort=True)
        for i, ((data, setup), part) in enumerate(groups, start=1):
            fronts.append(_front(f"{axis.column}_{i}", axis, str(data), str(setup), part))
    return fronts


def left_out_reasons(df: pd.DataFrame, column: str) -> pd.Series:
    """Why each trial is off the fronts of `column` (None when it is on them); status outranks missing metrics."""
    # Later assignments win, so the most basic reason is written last.
    reasons = pd.Series(None, index=df.index, dtype=object)
    reasons[df[column].isna()] = f"no {column}"
    reasons[df["top1"].isna()] = "no top1"
    bad = df["status"] != "completed"
    reasons[bad] = "status " + df.loc[bad, "status"].astype(str)
    return reasons


def left_out_table(df: pd.DataFrame, axes: tuple[Axis, ...] = AXES) -> pd.DataFrame:
    """How many trials each axis's fronts leave out, and why (failed, infeasible, missing a metric)."""
    rows = []
    for axis in axes:
        for reason, n in left_out_reasons(df, axis.column).dropna().value_counts().sort_index().items():
            rows.append({"front": f"top1 vs {axis.label}", "reason": reason, "trials": int(n)})
    return pd.DataFrame(rows, columns=["front", "reason", "trials"])


def _front(name: str, axis: Axis, data: str, setup: str, part: pd.DataFrame) -> Front:
    pts = part.assign(x=part[axis.column] * axis.scale, y=part["top1"])
    maximize = (axis.maximize, True)
    pts = pareto_front(pts, "x", "y", maximize=maximize)
    xy = pts[["x", "y"]].to_numpy(dtype=float)
    ref = reference_point(xy, maximize)
    return Front(name, axis, data, setup, pts, hypervolume(xy, ref, maximize), ref)


def setup_warnings(df: pd.DataFrame) -> list[str]:
    """Warnings for sources that mix measurement setups, data sets, MAC input sizes or block forms."""
    out = []
    setups = sorted(df["speed_setup"].dropna().unique())
    if len(setups) > 1:
        devices = sorted(df["device_name"].dropna().unique())
        out.append(
            f"this source holds speeds from {len(setups)} measurement setups ({len(devices)} device(s): "
            f"{'; '.join(devices)}); each gets its own speed fronts, and speeds are never compared across them"
        )
    if df["data"].nunique() > 1:
        out.append(f"trials on {df['data'].nunique()} data sets: top1 fronts are drawn per data set")
    if df["macs_input"].nunique() > 1:
        out.append("MACs were counted at several input sizes: MAC fronts are drawn per input size")
    train = df[(df["form"] == "train") & (df["status"] == "completed")]
    if len(train):
        names = ", ".join(sorted(train["variant"].dropna().unique())) or "unnamed"
        out.append(
            f"{len(train)} trial(s) ({names}) are not re-parameterizable: their deploy MACs, params and speed are "
            "train-form figures (form=train in tables, x markers in plots)"
        )
    return out


@dataclass(frozen=True)
class Objective:
    """A search objective (a name of `schema.OBJECTIVES`) as the report shows it."""

    name: str
    column: str  # the metric-table column holding the same figure
    label: str  # table column and axis label, with its unit
    unit: str
    scale: float  # display units per recorded unit
    digits: int
    maximize: bool


# Objective name -> the metric-table column of the same figure (OBJECTIVES says where a record holds each one);
# an `int8_` objective shares its float twin's unit and scale. tests/test_analysis_pareto.py keeps both in step.
OBJECTIVE_COLUMNS = {
    "top1": "top1",
    "images_per_s": "images_per_s",
    "latency_ms": "latency_ms",
    "macs": "deploy_macs",
    "params": "deploy_params",
    "int8_top1": "int8_top1",
    "int8_images_per_s": "int8_images_per_s",
}
LEGACY_OBJECTIVES = ("top1", "macs")  # records that name no objectives: top1 vs deploy GMACs, as reports used to


def objective(name: str) -> Objective:
    """The display form of search objective `name` (direction from `OBJECTIVES`, unit and scale from `AXES`)."""
    maximize, column = OBJECTIVES[name][0] == "maximize", OBJECTIVE_COLUMNS[name]
    int8 = "INT8 " if name.startswith("int8_") else ""
    if column.endswith("top1"):
        return Objective(name, column, f"{int8}top1", "%", 1.0, 2, maximize)
    axis = next(a for a in AXES if a.column == column.removeprefix("int8_"))
    label = "deploy GMACs" if name == "macs" else f"{int8}{axis.label} ({axis.unit})"
    return Objective(name, column, label, axis.unit, axis.scale, axis.digits, maximize)


@dataclass
class SearchFront:
    """One width-search study's Pareto set on its own objectives, by the rule of the search's pareto.csv."""

    study: str
    objectives: list[Objective]
    recorded: bool  # False: the records name no objectives, so LEGACY_OBJECTIVES over completed candidates
    points: pd.DataFrame  # the study's rows plus `value_<objective>` (display units), `candidate` and `pareto`


def search_front(study: str, part: pd.DataFrame, results: Sequence[TrialRecord]) -> SearchFront:
    """The Pareto set of one study: `part` holds its metric-table rows, `results` their records (same order).

    Objectives are those the records name (`search.objectives`); the candidates are the records
    `search_candidate` accepts, valued by their recorded `search.values`, exactly as `search.collect.pareto_table`
    does. Records naming no objectives (older ones) fall back to top1 vs deploy GMACs over completed trials."""
    names = next((list(r.search.objectives) for r in results if r.search is not None and r.search.objectives), None)
    recorded = bool(names) and all(n in OBJECTIVES for n in names)
    objectives = [objective(n) for n in (names if recorded else LEGACY_OBJECTIVES)]
    if recorded:
        values = search_values(results, len(objectives))
    else:
        values = part[[o.column for o in objectives]].to_numpy(dtype=float)
        values[(part["status"] != "completed").to_numpy()] = np.nan
    values = values * np.array([o.scale for o in objectives])
    points = part.assign(**{f"value_{o.name}": values[:, i] for i, o in enumerate(objectives)})
    points["candidate"] = ~np.isnan(values).any(axis=1)
    points["pareto"] = pareto_mask(values, [o.maximize for o in objectives])
    return SearchFront(study, objectives, recorded, points)

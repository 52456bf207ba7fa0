"""Error EDFs (Radosavovic et al., "On Network Design Spaces for Visual Recognition", 2019): the empirical
distribution of error over a population of trained models (a design space's samples, or a variant's seeds), one
curve per population. Comparing populations by their whole distribution, not by one run each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import files
from .plots import html_layout, new_figure, outside_legend, wrap

MIN_MODELS = 2  # a curve of one model is a single step: it says nothing a table does not


def edf_curves(df: pd.DataFrame, by: list[str], value: str = "top1") -> dict[str, np.ndarray]:
    """Label -> sorted errors (100 - `value`, in %) of each population of completed trials with `MIN_MODELS` or more."""
    done = df[(df["status"] == "completed") & df[value].notna()]
    curves: dict[str, np.ndarray] = {}
    for key, part in done.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        if len(part) >= MIN_MODELS:
            curves[" / ".join(str(k) for k in key if k is not None and k == k)] = np.sort(
                100.0 - part[value].to_numpy()
            )
    return curves


def edf_table(curves: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per curve: n and the error's minimum, median, mean and maximum."""
    rows = [
        {"population": name, "n": len(err), "min error": err.min(), "median error": float(np.median(err)),
         "mean error": err.mean(), "max error": err.max()}
        for name, err in curves.items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["population", "n", "min error", "median error", "mean error", "max error"])


def _steps(err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The EDF as a step curve: F(e) = fraction of models with error <= e."""
    n = len(err)
    return np.repeat(err, 2)[1:], np.repeat(np.arange(1, n + 1) / n, 2)[:-1]


def edf_png(curves: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """The curves as a PNG (x: error %, y: cumulative fraction of models), each labelled with its n."""
    fig, ax = new_figure()
    for name, err in curves.items():
        x, y = _steps(err)
        ax.plot(x, y, drawstyle="steps-post", linewidth=1.6, label=wrap(f"{name} (n={len(err)})", 150, 7))
    ax.set_xlabel("error (100 - top1), %")
    ax.set_ylabel("fraction of models with error <= x")
    ax.set_ylim(0, 1.02)
    ax.set_title(wrap(title, 380, 10), fontsize=10)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    files.write_figure(fig, path)
    return path


def edf_plotly(curves: dict[str, np.ndarray], title: str) -> Any:
    """The same curves as an interactive plotly figure (hover: the error and the fraction)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, err in curves.items():
        x, y = _steps(err)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{name} (n={len(err)})", line={"shape": "hv"}))
    html_layout(fig, title, "error (100 - top1), %", "fraction of models with error <= x")
    # Padded ranges: a tick at an axis's very end would put its label on the other axis's first one.
    lo, hi = min(e.min() for e in curves.values()), max(e.max() for e in curves.values())
    pad = 0.04 * (hi - lo or 1.0)
    fig.update_layout(
        xaxis={"range": [lo - pad, hi + pad]}, yaxis={"range": [-0.04, 1.04]}, legend={"font": {"size": 10}}
    )
    return fig

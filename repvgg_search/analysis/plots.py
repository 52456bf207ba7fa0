"""Figures: matplotlib PNGs and plotly figures for fronts, the paper's Figure-1 panel and search progress."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from .fronts import Front
from .reference import paper_reference

MAX_LABELS = 12  # front points annotated in PNGs; more would overlap
FRONT_COLOR, OTHER_COLOR, PAPER_COLOR = "#1f77b4", "#b0b0b0", "#d62728"


def _new_figure(ncols: int = 1, width: float = 7.5) -> tuple[Any, Any]:
    # The object API (no pyplot) keeps no global state and needs no display backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.8), dpi=110)
    # Fixed margins: an automatic layout engine draws every figure twice, and PNGs dominate the build time.
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.88, wspace=0.22)
    return fig, fig.subplots(1, ncols)


def _fmt(v: Any) -> str:
    return (
        "–" if v is None or (not isinstance(v, str) and pd.isna(v)) else f"{v:.4g}" if isinstance(v, float) else str(v)
    )


def trial_hover(df: pd.DataFrame) -> pd.Series:
    """Per trial: its configuration and measurements, as plotly hover HTML (computed once per report)."""
    out = []
    for r in df.itertuples(index=False):
        lines = [
            f"trial {r.trial_id} ({r.group})",
            f"preset {r.preset}, variant {r.variant}, seed {_fmt(r.seed)}, data {r.data}, epochs {_fmt(r.epochs)}",
            f"a={_fmt(r.a)} b={_fmt(r.b)} depths={r.depths} groups={_fmt(r.groups)} "
            f"grouped_layers={_fmt(r.grouped_layers)} use_se={_fmt(r.use_se)}",
            f"top1 {_fmt(r.top1)} %, form: {r.form}"
            + (" (not re-parameterizable: train-form figures)" if r.form == "train" else ""),
        ]
        if pd.notna(r.search_number):
            lines.append(f"search {r.search_study} #{_fmt(r.search_number)} ({r.search_state})")
        out.append("<br>".join(lines))
    return pd.Series(out, index=df.index, dtype=object)


def hover_text(df: pd.DataFrame, x_label: str = "x") -> list[str]:
    """Per point: the trial's hover text (column `hover` when present) and its x value."""
    base = df["hover"] if "hover" in df.columns else trial_hover(df)
    x = df["x"].map(_fmt) if "x" in df.columns else pd.Series("–", index=df.index)
    return (base + f"<br>{x_label}: " + x).tolist()


def point_label(row: Any) -> str:
    """Short label of a point: search number and widths, or preset/variant and seed."""
    if pd.notna(row.search_number):
        return f"#{int(row.search_number)} a={_fmt(row.a)} b={_fmt(row.b)}"
    return f"{row.preset}/{row.variant} s{_fmt(row.seed)}"


def _steps(front: Front) -> str:
    # Along a sorted front, the attained region steps right-then-up when x is minimized, up-then-right otherwise.
    return "steps-pre" if front.axis.maximize else "steps-post"


def front_caption(front: Front) -> str:
    """Hypervolume with its reference point and units."""
    rx, ry = front.ref
    return (
        f"{int(front.points['pareto'].sum())} of {len(front.points)} trials on the front; hypervolume "
        f"{front.hypervolume:.4g} ({front.hv_unit}) with reference point ({rx:.4g} {front.axis.unit}, "
        f"{ry:.4g} % top1), the worst value on each axis pushed 10% of its range further"
    )


def front_png(front: Front, path: Path) -> Path:
    """Scatter of all eligible trials (dominated in grey), the front as a step line, train-form points as x."""
    fig, ax = _new_figure()
    pts, on = front.points, front.points["pareto"]
    for form, marker in (("deploy", "o"), ("train", "x")):
        sel = pts["form"] == form
        suffix = "" if form == "deploy" else " (train form)"
        ax.scatter(pts.x[sel & ~on], pts.y[sel & ~on], c=OTHER_COLOR, marker=marker, s=18, label=f"dominated{suffix}")
        ax.scatter(pts.x[sel & on], pts.y[sel & on], c=FRONT_COLOR, marker=marker, s=30, label=f"Pareto front{suffix}")
    ax.plot(pts.x[on], pts.y[on], color=FRONT_COLOR, lw=1, drawstyle=_steps(front))
    for row in pts[on].head(MAX_LABELS).itertuples(index=False):
        ax.annotate(point_label(row), (row.x, row.y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(front.x_label, fontsize=8)
    ax.set_ylabel(f"top1 (%) on {front.data}", fontsize=8)
    ax.set_title("\n".join(textwrap.wrap(front.title, 90)), fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if len(h.get_offsets())]
    if keep:
        ax.legend(*zip(*keep), fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path


def front_plotly(front: Front) -> Any:
    """Interactive version of `front_png`; hovering a point shows its trial's configuration."""
    import plotly.graph_objects as go

    pts, on = front.points, front.points["pareto"]
    fig = go.Figure()
    for form, symbol in (("deploy", "circle"), ("train", "x")):
        for is_front, color, name in ((False, OTHER_COLOR, "dominated"), (True, FRONT_COLOR, "Pareto front")):
            sel = pts[(pts["form"] == form) & (on == is_front)]
            if len(sel):
                label = name + ("" if form == "deploy" else " (train form)")
                fig.add_trace(_scatter(go, sel, color, symbol, label, front.x_label))
    fig.add_trace(
        go.Scatter(
            x=pts.x[on],
            y=pts.y[on],
            mode="lines",
            line={"color": FRONT_COLOR, "width": 1, "shape": "vh" if front.axis.maximize else "hv"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    _layout(fig, front.title, front.x_label, f"top1 (%) on {front.data}")
    return fig


def _scatter(go: Any, df: pd.DataFrame, color: str, symbol: str, name: str, x_label: str) -> Any:
    return go.Scatter(
        x=df.x,
        y=df.y,
        mode="markers",
        name=name,
        marker={"color": color, "symbol": symbol, "size": 8},
        text=hover_text(df, x_label),
        hovertemplate="%{text}<extra></extra>",
    )


def _layout(fig: Any, title: str, x: str, y: str) -> None:
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        xaxis_title=x,
        yaxis_title=y,
        height=480,
        template="plotly_white",
        margin={"t": 60},
    )


def figure1_caption(ours: Front | None) -> str:
    """Says which device each panel's speeds come from, and that they are not comparable."""
    proto = paper_reference()["speed_protocol"]
    mine = f"ours: {ours.setup}, {ours.data}" if ours else "ours: no speed measurements in this source"
    return f"Published points: ImageNet top1, {proto}. {mine}. Different devices and data: panels are not comparable."


def _paper_panel(ax: Any, paper: pd.DataFrame) -> None:
    for family, color, marker in (("RepVGG", PAPER_COLOR, "o"), ("baseline", "#555555", "s")):
        part = paper[paper["family"] == family]
        ax.scatter(part.images_per_s, part.top1, marker=marker, color=color, s=25, label=f"{family} (paper)")
        for r in part.itertuples(index=False):
            ax.annotate(r.name, (r.images_per_s, r.top1), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set(xlabel="speed (examples/s, GTX 1080Ti, batch 128, fp32)", ylabel="ImageNet top1 (%)")
    ax.set_title("Published: the paper's Tables 4-5 (its Figure 1)", fontsize=9)


def _ours_panel(ax: Any, ours: Front | None) -> None:
    ax.set_title("Ours (other device, other data)", fontsize=9)
    if ours is None:
        ax.text(0.5, 0.5, "no speed measurements in this source", ha="center", transform=ax.transAxes)
        return
    pts, on = ours.points, ours.points["pareto"]
    ax.scatter(pts.x[~on], pts.y[~on], c=OTHER_COLOR, s=15, label="ours, dominated")
    ax.scatter(pts.x[on], pts.y[on], c=FRONT_COLOR, s=25, label="ours, Pareto front")
    ax.plot(pts.x[on], pts.y[on], color=FRONT_COLOR, lw=1, drawstyle=_steps(ours))
    ax.set(xlabel=f"throughput (images/s) on {ours.setup}", ylabel=f"top1 (%) on {ours.data}")


def figure1_png(paper: pd.DataFrame, ours: Front | None, path: Path) -> Path:
    """The paper's Figure 1 (published RepVGG presets and baselines) beside our throughput front, own axes each."""
    fig, (left, right) = _new_figure(2, 12)
    _paper_panel(left, paper)
    _ours_panel(right, ours)
    for ax in (left, right):
        ax.xaxis.label.set_size(7)
        ax.yaxis.label.set_size(8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.savefig(path)
    return path


def _paper_traces(go: Any, paper: pd.DataFrame) -> list[Any]:
    traces = []
    for family, color in (("RepVGG", PAPER_COLOR), ("baseline", "#555555")):
        part = paper[paper["family"] == family]
        hover = [
            f"{r.name}: top1 {r.top1} %, {r.images_per_s:.0f} examples/s, {r.params_m} M params, "
            f"{r.gmacs} GMACs, {r.epochs} epochs ({r.source})"
            for r in part.itertuples(index=False)
        ]
        traces.append(
            go.Scatter(
                x=part.images_per_s,
                y=part.top1,
                mode="markers+text",
                text=part.name,
                textposition="top center",
                textfont={"size": 8},
                hovertext=hover,
                hoverinfo="text",
                name=f"{family} (paper)",
                marker={"color": color},
            )
        )
    return traces


def figure1_plotly(paper: pd.DataFrame, ours: Front | None) -> Any:
    """Interactive `figure1_png`: two panels with separate axes, never one shared speed axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Published (paper, GTX 1080Ti)", "Ours (other device)"))
    for trace in _paper_traces(go, paper):
        fig.add_trace(trace, row=1, col=1)
    fig.update_xaxes(title_text="speed (examples/s, 1080Ti, batch 128, fp32)", row=1, col=1)
    fig.update_yaxes(title_text="ImageNet top1 (%)", row=1, col=1)
    if ours is not None:
        pts = ours.points
        fig.add_trace(_scatter(go, pts[~pts.pareto], OTHER_COLOR, "circle", "ours, dominated", "images/s"), 1, 2)
        fig.add_trace(_scatter(go, pts[pts.pareto], FRONT_COLOR, "circle", "ours, Pareto front", "images/s"), 1, 2)
        fig.update_xaxes(title_text=f"throughput (images/s) on {ours.setup}", row=1, col=2)
        fig.update_yaxes(title_text=f"top1 (%) on {ours.data}", row=1, col=2)
    fig.update_layout(height=500, template="plotly_white", title={"text": figure1_caption(ours), "font": {"size": 11}})
    return fig


def progress_png(progress: pd.DataFrame, path: Path, title: str, ylabel: str) -> Path:
    """Hypervolume after each trial of a search (a step line; improvements marked)."""
    fig, ax = _new_figure()
    order = progress.columns[0]
    ax.step(progress[order], progress["hypervolume"], where="post", color=FRONT_COLOR)
    imp = progress[progress["improved"]]
    ax.scatter(imp[order], imp["hypervolume"], color=FRONT_COLOR, s=15, label="trial improved the front")
    ax.set(xlabel=f"trial ({order})", ylabel=ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path


def progress_plotly(progress: pd.DataFrame, title: str, ylabel: str) -> Any:
    """Interactive `progress_png`."""
    import plotly.graph_objects as go

    order = progress.columns[0]
    text = [f"trial {t} ({order} {n})" for t, n in zip(progress["trial_id"], progress[order])]
    fig = go.Figure(
        go.Scatter(
            x=progress[order],
            y=progress["hypervolume"],
            mode="lines+markers",
            line={"shape": "hv", "color": FRONT_COLOR},
            text=text,
            name="hypervolume",
            hovertemplate="%{text}<br>hypervolume %{y:.4g}<extra></extra>",
        )
    )
    _layout(fig, title, f"trial ({order})", ylabel)
    return fig

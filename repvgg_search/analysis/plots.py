"""Figures: matplotlib PNGs and plotly figures for fronts, the paper's Figure-1 panel and search progress.

Layout rules, so that no text is clipped and no two labels overlap (tests/test_report_layout.py checks both on a
realistic report): PNGs use constrained layout with legends outside the axes, and long titles and axis labels are
wrapped to the room they have; point labels go where `place_labels` finds room inside the axes, clear of the other
labels and of the points they must not hide, and a label that fits nowhere is left off (every labelled point is
also in a table beside its figure). HTML
figures have a fixed size in pixels, so that labels placed here land where they were placed, and axes whose values
are counts (trial numbers) get integer ticks.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import files
from .fronts import Front
from .reference import paper_reference
from .tables import hover_text, point_label

MAX_LABELS = 12  # front points labelled in PNGs
FRONT_COLOR, OTHER_COLOR, PAPER_COLOR = "#1f77b4", "#b0b0b0", "#d62728"
DPI = 110
FONT = "DejaVu Sans"  # matplotlib's default font, and the first choice of the HTML figures: `text_size` measures it
HTML_FONT = f"{FONT}, Verdana, Arial, sans-serif"  # the fallbacks are no wider
HTML_WIDTH, HTML_HEIGHT = 1100, 500  # px; fixed, see the module docstring
LABEL_GAP, MARKER_RADIUS, LABEL_PAD = 6.0, 5.0, 1.0  # px: label to its point; half a marker; between labels
LABEL_BACKING = {"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.8}  # readable over points
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


# ---------------------------------------------------------------- text measurement and label placement


@functools.lru_cache(maxsize=4096)
def text_size(text: str, size: float) -> tuple[float, float]:
    """Width and height (with descent) of one line of `text` in `FONT` at `size` (points; CSS px in HTML)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    w, h, d = TextToPath().get_text_width_height_descent(text, FontProperties(family=FONT, size=size), ismath=False)
    return float(w), float(h + d)


def wrap(text: str, width: float, size: float, sep: str = "\n") -> str:
    """`text` broken at spaces into lines no wider than `width` (in the units of `text_size`), joined by `sep`."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_size(f"{lines[-1]} {word}", size)[0] <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return sep.join(lines)


def place_labels(
    anchors: Sequence[Sequence[float]],
    sizes: Sequence[Sequence[float]],
    area: Sequence[float],
    obstacles: Any = (),
) -> list[tuple[float, float] | None]:
    """Where each label goes, in order (pixels, y up): the lower-left corner of the first box of its size beside its
    anchor, trying eight directions at two distances, that lies inside `area` (x0, y0, x1, y1) and clear of the
    boxes placed before it and of every obstacle point (markers); None for a label that fits nowhere."""
    obs = np.asarray(obstacles, dtype=float).reshape(-1, 2)
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float] | None] = []
    for (px, py), (w, h) in zip(anchors, sizes):
        box = next((b for b in _candidates(px, py, w, h) if _free(b, area, placed, obs)), None)
        out.append(None if box is None else (box[0], box[1]))
        if box is not None:
            placed.append(box)
    return out


def _candidates(px: float, py: float, w: float, h: float) -> Iterator[tuple[float, float, float, float]]:
    for step in (1, 2):  # further away, a label could be read as another point's
        d = LABEL_GAP * step
        for sx, sy in _DIRECTIONS:
            x0 = px + d if sx > 0 else px - d - w if sx < 0 else px - w / 2
            y0 = py + d if sy > 0 else py - d - h if sy < 0 else py - h / 2
            yield x0, y0, x0 + w, y0 + h


def _free(box: tuple[float, ...], area: Sequence[float], placed: list, obs: np.ndarray) -> bool:
    x0, y0, x1, y1 = box
    if x0 < area[0] or y0 < area[1] or x1 > area[2] or y1 > area[3]:
        return False
    p = LABEL_PAD
    if any(x0 < b[2] + p and b[0] - p < x1 and y0 < b[3] + p and b[1] - p < y1 for b in placed):
        return False
    r = MARKER_RADIUS
    hit = (obs[:, 0] > x0 - r) & (obs[:, 0] < x1 + r) & (obs[:, 1] > y0 - r) & (obs[:, 1] < y1 + r)
    return not hit.any()


# ---------------------------------------------------------------- matplotlib


def new_figure(ncols: int = 1, width: float = 7.5) -> tuple[Any, Any]:
    """A figure with a canvas to measure text on, laid out by constrained layout (once: see `freeze_layout`)."""
    # The object API (no pyplot) keeps no global state and needs no display backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def freeze_layout(fig: Any) -> None:
    """Fix every axes' limits and lay the figure out once, so that labels can be placed in final pixels."""
    for ax in fig.axes:
        ax.autoscale_view()
        ax.set_xlim(ax.get_xlim())
        ax.set_ylim(ax.get_ylim())
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine(None)  # no engine at all: saving then draws the figure once, where it now stands


def outside_legend(ax: Any, fontsize: float = 7) -> None:
    """The axes' legend right of it (so that it covers no point or label), without entries that drew nothing."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if not hasattr(h, "get_offsets") or len(h.get_offsets())]
    if keep:
        ax.legend(*zip(*keep), fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def annotate_points(ax: Any, points: list[tuple[float, float, str]], obstacles: Any, fontsize: float = 6) -> int:
    """Label points (data coordinates) where `place_labels` finds room; the number left off. After `freeze_layout`."""
    renderer = ax.figure.canvas.get_renderer()
    kw = {"textcoords": "offset points", "fontsize": fontsize, "ha": "left", "va": "bottom", "bbox": LABEL_BACKING}
    anns = [ax.annotate(t, (x, y), xytext=(0, 0), **kw) for x, y, t in points]
    anchors = ax.transData.transform(np.asarray([(x, y) for x, y, _ in points], dtype=float).reshape(-1, 2))
    sizes = [a.get_window_extent(renderer).size for a in anns]
    x0, y0, x1, y1 = ax.bbox.extents
    obs = ax.transData.transform(np.asarray(obstacles, dtype=float).reshape(-1, 2))
    spots = place_labels(anchors, sizes, (x0 + 1, y0 + 1, x1 - 1, y1 - 1), obs)
    to_points = 72 / ax.figure.dpi
    for ann, (px, py), spot in zip(anns, anchors, spots):
        if spot is None:
            ann.remove()
        else:
            ann.xyann = ((spot[0] - px) * to_points, (spot[1] - py) * to_points)
    return spots.count(None)


# ---------------------------------------------------------------- plotly


def html_layout(fig: Any, title: str, x: str, y: str) -> None:
    """Fixed size, the title and axis titles wrapped to the room they have (the x axis's shared with a legend at
    its right), margins that hold them."""
    title, plot_width = wrap(title, HTML_WIDTH - 60, 13, "<br>"), HTML_WIDTH - 330
    fig.update_layout(
        title={"text": title, "font": {"size": 13}, "x": 0.02, "xanchor": "left"},
        xaxis={"title": {"text": wrap(x, plot_width, 12, "<br>"), "font": {"size": 12}}, "automargin": True},
        yaxis={"title": {"text": wrap(y, HTML_HEIGHT - 200, 12, "<br>"), "font": {"size": 12}}, "automargin": True},
        width=HTML_WIDTH,
        height=HTML_HEIGHT,
        autosize=False,
        template="plotly_white",
        font={"family": HTML_FONT},
        margin={"t": 40 + 18 * title.count("<br>"), "l": 80, "r": 30, "b": 70},
    )


def integer_ticks(span: float, most: int = 10) -> int:
    """A tick step for an axis of counts: 1, 2 or 5 times a power of ten, giving at most `most` ticks."""
    return next(step for step in (m * 10**e for e in itertools.count() for m in (1, 2, 5)) if span / step <= most)


# ---------------------------------------------------------------- figures


def _steps(front: Front) -> str:
    # Along a sorted front, the attained region steps right-then-up when x is minimized, up-then-right otherwise.
    return "steps-pre" if front.axis.maximize else "steps-post"


def front_caption(front: Front) -> str:
    """Hypervolume with its reference point and units; which points the PNG labels."""
    rx, ry = front.ref
    return (
        f"{int(front.points['pareto'].sum())} of {len(front.points)} trials on the front; hypervolume "
        f"{front.hypervolume:.4g} ({front.hv_unit}) with reference point ({rx:.4g} {front.axis.unit}, "
        f"{ry:.4g} % top1), the worst value on each axis pushed 10% of its range further. The PNG labels up to "
        f"{MAX_LABELS} front trials where a label fits; the table below lists every one."
    )


def front_png(front: Front, path: Path) -> Path:
    """Scatter of all eligible trials (dominated in grey), the front as a step line, train-form points as x."""
    fig, ax = new_figure()
    pts, on = front.points, front.points["pareto"]
    for form, marker in (("deploy", "o"), ("train", "x")):
        sel = pts["form"] == form
        suffix = "" if form == "deploy" else " (train form)"
        ax.scatter(pts.x[sel & ~on], pts.y[sel & ~on], c=OTHER_COLOR, marker=marker, s=18, label=f"dominated{suffix}")
        ax.scatter(pts.x[sel & on], pts.y[sel & on], c=FRONT_COLOR, marker=marker, s=30, label=f"Pareto front{suffix}")
    ax.plot(pts.x[on], pts.y[on], color=FRONT_COLOR, lw=1, drawstyle=_steps(front))
    ax.set_xlabel(wrap(front.x_label, 380, 8), fontsize=8)
    ax.set_ylabel(f"top1 (%) on {front.data}", fontsize=8)
    ax.set_title(wrap(front.title, 380, 8), fontsize=8)
    outside_legend(ax)
    ax.grid(alpha=0.3)
    freeze_layout(fig)
    front_pts = pts[on]
    spread = np.unique(np.linspace(0, len(front_pts) - 1, min(len(front_pts), MAX_LABELS)).round().astype(int))
    labelled = [(r.x, r.y, point_label(r)) for r in front_pts.iloc[spread].itertuples(index=False)]
    # Labels keep clear of front points only: dominated ones may lie under a label's white backing.
    annotate_points(ax, labelled, front_pts[["x", "y"]].to_numpy(dtype=float))
    files.write_figure(fig, path)
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
    html_layout(fig, front.title, front.x_label, f"top1 (%) on {front.data}")
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


def figure1_caption(ours: Front | None) -> str:
    """Says which device each panel's speeds come from, and that they are not comparable."""
    proto = paper_reference()["speed_protocol"]
    mine = f"ours: {ours.setup}, {ours.data}" if ours else "ours: no speed measurements in this source"
    return (
        f"Published points: ImageNet top1, {proto}. {mine}. Different devices and data: panels are not comparable. "
        "The published speed axis is logarithmic; a label that would overlap another is left off (every published "
        "point is in the table below)."
    )


PAPER_SPEED_LABEL = "speed (examples/s, GTX 1080Ti, batch 128, fp32; log scale)"
PAPER_SPEED_TICKS = (250, 500, 1000, 2000, 4000)
PAPER_FAMILIES = (("RepVGG", PAPER_COLOR, "o", "circle"), ("baseline", "#555555", "s", "square"))


def _paper_panel(ax: Any, paper: pd.DataFrame) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for family, color, marker, _ in PAPER_FAMILIES:
        part = paper[paper["family"] == family]
        ax.scatter(part.images_per_s, part.top1, marker=marker, color=color, s=25, label=f"{family} (paper)")
    ax.set_xscale("log")
    ax.set_xticks([t for t in PAPER_SPEED_TICKS if t <= paper.images_per_s.max() * 1.3])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(wrap(PAPER_SPEED_LABEL, 300, 8), fontsize=8)
    ax.set_ylabel("ImageNet top1 (%)", fontsize=8)
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
    ax.set_xlabel(wrap(f"throughput (images/s) on {ours.setup}", 300, 8), fontsize=8)
    ax.set_ylabel(f"top1 (%) on {ours.data}", fontsize=8)


def figure1_png(paper: pd.DataFrame, ours: Front | None, path: Path) -> Path:
    """The paper's Figure 1 (published RepVGG presets and baselines) beside our throughput front, own axes each."""
    fig, (left, right) = new_figure(2, 12)
    _paper_panel(left, paper)
    _ours_panel(right, ours)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        outside_legend(ax)
    freeze_layout(fig)
    xy = paper[["images_per_s", "top1"]].to_numpy(dtype=float)
    annotate_points(left, [(x, y, name) for (x, y), name in zip(xy, paper["name"])], xy)
    files.write_figure(fig, path)
    return path


def _paper_traces(go: Any, paper: pd.DataFrame) -> list[Any]:
    traces = []
    for family, color, _, symbol in PAPER_FAMILIES:
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
                mode="markers",
                hovertext=hover,
                hoverinfo="text",
                name=f"{family} (paper)",
                marker={"color": color, "symbol": symbol, "size": 8},
            )
        )
    return traces


# Figure 1 in HTML: margins and the gap between the panels, in px and as a fraction of the plot width.
FIG1_MARGIN = {"l": 80, "r": 190, "t": 70, "b": 110}
FIG1_SPACING = 0.14
FIG1_LABEL_SIZE = 10
FIG1_HEIGHT = 540


def _paper_labels(fig: Any, paper: pd.DataFrame) -> list[dict[str, Any]]:
    """Annotations naming the published points where they fit, placed in the left panel's pixels: its ranges,
    the margins and the figure size are all fixed here, so the pixels are known before the browser draws."""
    xs, ys = np.log10(paper.images_per_s.to_numpy(dtype=float)), paper.top1.to_numpy(dtype=float)
    xr, yr = (xs.min() - 0.08, xs.max() + 0.08), (ys.min() - 0.8, ys.max() + 0.8)
    ticks = [t for t in PAPER_SPEED_TICKS if xr[0] <= np.log10(t) <= xr[1]]
    fig.update_xaxes(type="log", range=list(xr), tickvals=ticks, ticktext=[str(t) for t in ticks], row=1, col=1)
    fig.update_yaxes(range=list(yr), row=1, col=1)
    m = FIG1_MARGIN
    width, height = HTML_WIDTH - m["l"] - m["r"], FIG1_HEIGHT - m["t"] - m["b"]
    d0, d1 = fig.layout.xaxis.domain
    px = m["l"] + width * (d0 + (d1 - d0) * (xs - xr[0]) / (xr[1] - xr[0]))
    py = m["b"] + height * (ys - yr[0]) / (yr[1] - yr[0])
    anchors = np.column_stack([px, py])
    sizes = [(w + 6, h + 6) for w, h in (text_size(n, FIG1_LABEL_SIZE) for n in paper["name"])]  # + the box's pad
    area = (m["l"] + width * d0 + 1, m["b"] + 1, m["l"] + width * d1 - 1, m["b"] + height - 1)
    spots = place_labels(anchors, sizes, area, anchors)
    return [
        {"x": x, "y": y, "text": name, "xref": "x", "yref": "y", "showarrow": False, "xanchor": "left",
         "yanchor": "bottom", "xshift": spot[0] - ax, "yshift": spot[1] - ay, "font": {"size": FIG1_LABEL_SIZE}}
        for name, x, y, (ax, ay), spot in zip(paper["name"], xs, ys, anchors, spots)
        if spot is not None
    ]  # fmt: skip


def figure1_plotly(paper: pd.DataFrame, ours: Front | None) -> Any:
    """Interactive `figure1_png`: two panels with separate axes, never one shared speed axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = ("Published (paper, GTX 1080Ti)", "Ours (other device, other data)")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=titles, horizontal_spacing=FIG1_SPACING, column_widths=[0.58, 0.42]
    )
    for trace in _paper_traces(go, paper):
        fig.add_trace(trace, row=1, col=1)
    plot_width = HTML_WIDTH - FIG1_MARGIN["l"] - FIG1_MARGIN["r"]
    left, right = (plot_width * (d[1] - d[0]) - 10 for d in (fig.layout.xaxis.domain, fig.layout.xaxis2.domain))
    fig.update_xaxes(title_text=wrap(PAPER_SPEED_LABEL, left, 12, "<br>"), row=1, col=1)
    fig.update_yaxes(title_text="ImageNet top1 (%)", row=1, col=1)
    if ours is not None:
        pts = ours.points
        fig.add_trace(_scatter(go, pts[~pts.pareto], OTHER_COLOR, "circle", "ours, dominated", "images/s"), 1, 2)
        fig.add_trace(_scatter(go, pts[pts.pareto], FRONT_COLOR, "circle", "ours, Pareto front", "images/s"), 1, 2)
        fig.update_xaxes(title_text=wrap(f"throughput (images/s) on {ours.setup}", right, 12, "<br>"), row=1, col=2)
        fig.update_yaxes(title_text=f"top1 (%) on {ours.data}", row=1, col=2)
    fig.update_xaxes(automargin=True, title_font_size=12)
    fig.update_yaxes(automargin=True, title_font_size=12)
    for a in _paper_labels(fig, paper):
        fig.add_annotation(a)
    fig.update_layout(
        title={"text": "The paper's Figure 1 beside our throughput front (own axes each)", "font": {"size": 13}},
        width=HTML_WIDTH,
        height=FIG1_HEIGHT,
        autosize=False,
        template="plotly_white",
        font={"family": HTML_FONT},
        margin=FIG1_MARGIN,
    )
    return fig


def progress_png(progress: pd.DataFrame, path: Path, title: str, ylabel: str) -> Path:
    """Hypervolume after each trial of a search (a step line; improvements marked; integer trial ticks)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure()
    order = progress.columns[0]
    ax.step(progress[order], progress["hypervolume"], where="post", color=FRONT_COLOR)
    imp = progress[progress["improved"]]
    ax.scatter(imp[order], imp["hypervolume"], color=FRONT_COLOR, s=15, label="trial improved the front")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"trial ({order})")
    ax.set_ylabel(wrap(ylabel, 250, 10))
    ax.set_title(wrap(title, 480, 8), fontsize=8)
    outside_legend(ax)
    ax.grid(alpha=0.3)
    files.write_figure(fig, path)
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
    html_layout(fig, title, f"trial ({order})", ylabel)
    numbers = pd.to_numeric(progress[order], errors="coerce").dropna()
    span = float(numbers.max() - numbers.min()) if len(numbers) else 1.0
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=integer_ticks(span), tickformat="d")
    return fig

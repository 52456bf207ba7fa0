"""Figures of per-layer quantization sensitivity (`quant.layers`), one PNG per block design on shared axes, so that
designs compare at a glance (`full` vs `qarepvgg`: where the INT8 error comes from). Part of the torch-free analysis
library (the report draws them): matplotlib only, through its object API (no pyplot state, no display), laid out as
the report's other PNGs (plots.py)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import files

DPI = 110  # as the report's other PNGs (analysis/plots.py)

SQNR_SERIES = (("sqnr_db", "layer output (weights + input)", "-o"), ("weight_sqnr_db", "weights only", "--^"),
               ("input_sqnr_db", "input only", ":v"), ("logits_sqnr_db", "logits, this layer only", "-s"))  # fmt: skip
Limits = Mapping[str, tuple[float, float]]


def short_name(name: str) -> str:
    """`stage3.12.rbr_reparam` -> `s3.12`; `stage0.rbr_reparam` -> `s0`; others as they are."""
    m = re.fullmatch(r"stage(\d+)(?:\.(\d+))?\.\w+", name)
    if not m:
        return name
    return f"s{m[1]}" + (f".{m[2]}" if m[2] is not None else "")


def outside_legend(ax: Any, fontsize: float = 7) -> None:
    """The axes' legend right of it, covering no point (the rule of the report's PNGs)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def shared_limits(designs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, tuple[float, float]]:
    """y limits covering every design's layers (SQNR in dB; kernel |w| and std; activation ranges), with a margin."""
    layers = [r for rows in designs.values() for r in rows]
    sqnr = _finite([r.get(k) for r in layers for k, _, _ in SQNR_SERIES])
    kernel = [v for v in _finite([x for r in layers for x in (_absmax(r), r.get("weight_std"))]) if v > 0]
    acts = _finite([x for r in layers for x in (r.get("input_min"), r.get("input_max"), r.get("input_clip_min"),
                                                r.get("input_clip_max"))])  # fmt: skip
    out = {}
    if sqnr:
        out["sqnr"] = (min(sqnr) - 2.0, max(sqnr) + 2.0)
    if kernel:
        out["kernel"] = (min(kernel) / 1.5, max(kernel) * 1.5)
    if acts:
        span = max(acts) - min(acts) or 1.0
        out["activation"] = (min(acts) - 0.05 * span, max(acts) + 0.05 * span)
    return out


def _absmax(r: Mapping[str, Any]) -> float | None:
    lo, hi = r.get("weight_min"), r.get("weight_max")
    return None if lo is None or hi is None else max(abs(lo), abs(hi))


def plot_layers(
    layers: Sequence[Mapping[str, Any]], path: str | Path, *, title: str, limits: Limits | None = None
) -> Path:
    """One design's figure: per layer (x, in graph order), the SQNR of its output and of the logits when only it is
    quantized; its fused kernel's max |w| and std (log scale); the input range seen in calibration and the range
    its quantizer represents. Float layers (kept out of quantization) have no SQNR and are marked `(float)`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 8.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)
    x = list(range(len(layers)))
    limits = limits or shared_limits({title: layers})
    _sqnr_panel(axes[0], layers, x, limits)
    _kernel_panel(axes[1], layers, x, limits)
    _activation_panel(axes[2], layers, x, limits)
    names = [short_name(r["name"]) + ("" if r.get("quantized", True) else " (float)") for r in layers]
    axes[2].set_xticks(x, names, rotation=90, fontsize=7)
    axes[2].set_xlabel("deploy layer (graph order)")
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_figure(fig, path, dpi=DPI)
    return path


def _sqnr_panel(ax: Any, layers: Sequence[Mapping[str, Any]], x: list[int], limits: Limits) -> None:
    for key, label, style in SQNR_SERIES:
        ys = [r.get(key) if r.get(key) is not None and math.isfinite(r[key]) else math.nan for r in layers]
        if any(not math.isnan(y) for y in ys):
            ax.plot(x, ys, style, markersize=3, linewidth=1, label=label)
    ax.set_ylabel("SQNR (dB)", fontsize=8)
    if "sqnr" in limits:
        ax.set_ylim(*limits["sqnr"])
    ax.grid(alpha=0.3)
    outside_legend(ax)


def _kernel_panel(ax: Any, layers: Sequence[Mapping[str, Any]], x: list[int], limits: Limits) -> None:
    ax.plot(x, [_absmax(r) for r in layers], "-o", markersize=3, linewidth=1, label="fused kernel max |w|")
    ax.plot(x, [r.get("weight_std") for r in layers], "--^", markersize=3, linewidth=1, label="fused kernel std")
    ax.set_yscale("log")
    ax.set_ylabel("weight", fontsize=8)
    if "kernel" in limits:
        ax.set_ylim(*limits["kernel"])
    ax.grid(alpha=0.3, which="both")
    outside_legend(ax)


def _activation_panel(ax: Any, layers: Sequence[Mapping[str, Any]], x: list[int], limits: Limits) -> None:
    def series(key: str) -> list[float]:
        return [r.get(key) if r.get(key) is not None else math.nan for r in layers]

    ax.fill_between(x, series("input_clip_min"), series("input_clip_max"), alpha=0.2, step="mid",
                    label="input quantizer range")  # fmt: skip
    ax.plot(x, series("input_max"), "-o", markersize=3, linewidth=1, label="input max (calibration)")
    ax.plot(x, series("input_min"), "--v", markersize=3, linewidth=1, label="input min (calibration)")
    ax.set_ylabel("activation", fontsize=8)
    if "activation" in limits:
        ax.set_ylim(*limits["activation"])
    ax.grid(alpha=0.3)
    outside_legend(ax)


def mean_layers(trials: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The per-layer records of several trials of one architecture (e.g. a design's seeds) as one: numeric fields
    averaged over the trials that have them (SQNRs in dB averaged as dB), the rest taken from the first trial."""
    if not trials:
        return []
    names = [r["name"] for r in trials[0]]
    for rows in trials[1:]:
        if [r["name"] for r in rows] != names:
            raise ValueError("mean_layers: the trials' layers differ (not one architecture)")
    out = []
    for i, first in enumerate(trials[0]):
        row = dict(first)
        for key, value in first.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "index":
                vals = _finite([rows[i].get(key) for rows in trials])
                row[key] = sum(vals) / len(vals) if vals else None
        out.append(row)
    return out


def plot_designs(
    designs: Mapping[str, Sequence[Mapping[str, Any]]], folder: str | Path, *, caption: str = "",
    stem: str = "quant_layers",
) -> dict[str, Path]:  # fmt: skip
    """A figure per design (`folder/<stem>_<design>.png`), all on the same y limits; `caption` (e.g. the
    protocol, data and image count) goes in each title."""
    limits = shared_limits(designs)
    return {
        design: plot_layers(rows, Path(folder) / f"{stem}_{design}.png", limits=limits,
                            title=f"INT8 sensitivity per layer: {design}" + (f" ({caption})" if caption else ""))
        for design, rows in designs.items()
    }  # fmt: skip

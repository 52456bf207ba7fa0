"""No clipped or overlapping text in the report's figures, on a realistic report.

The report covers an ablation sweep of the 11 variants of `conf/sweep/ablation.yaml` x 3 seeds on digits (top1 in
steps of 100/360 %, so seeds tie and points coincide, as on a real validation split) and two small width searches
(one with top1 vs images/s, one with top1 vs MACs, as objectives). Every PNG the report draws is checked through
matplotlib's own text extents; every plotly figure of report.html through the boxes headless Chromium lays out.
"""

from __future__ import annotations

import html
import json
import os
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from matplotlib.figure import Figure as MplFigure
from matplotlib.text import Annotation, Text

from repvgg_search.analysis.examples import example_record
from repvgg_search.analysis.report import build_report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
VAL_IMAGES = 360  # digits' validation split
TOL = 1.0  # px: a box this far past an edge, or overlapping by this much, is still fine (antialiasing)
# Per variant: mean top1 (%) of the digits proxy and CPU throughput (images/s); relu_in_branches runs in train form.
VARIANT_NUMBERS = {
    "full": (97.3, 812.0),
    "no_identity": (96.3, 815.0),
    "no_1x1": (96.9, 809.0),
    "no_branches": (95.2, 820.0),
    "identity_no_bn": (96.8, 811.0),
    "post_bn": (96.1, 813.0),
    "relu_in_branches": (97.5, 455.0),
    "diracnet": (97.1, 810.0),
    "trivial": (95.8, 814.0),
    "acb": (96.5, 808.0),
    "residual_reorg": (97.0, 760.0),
}
GPU = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "batch_size": 128, "threads": None}


# ---------------------------------------------------------------- realistic records


def ablation_variants() -> list[str]:
    """The ablation sweep's variants, each a file of conf/variant."""
    spec = yaml.safe_load((REPO / "repvgg_search/conf/sweep/ablation.yaml").read_text())
    names = list(spec["sweep"]["axes"]["variant"])
    assert all((REPO / "repvgg_search/conf/variant" / f"{n}.yaml").exists() for n in names)
    return names


def _top1(mean: float, rng: random.Random) -> float:
    return round(round((mean + rng.gauss(0, 0.3)) / 100 * VAL_IMAGES) * 100 / VAL_IMAGES, 4)


def ablation_records(rng: random.Random) -> list[dict[str, Any]]:
    """11 variants x 3 seeds, CPU speeds; the deploy forms share one MAC count (they all fuse to plain 3x3)."""
    out = []
    for variant in ablation_variants():
        mean, ips = VARIANT_NUMBERS[variant]
        form = "train" if variant == "relu_in_branches" else "deploy"
        macs = 1_448_000_000 if variant == "residual_reorg" else 1_361_513_728
        for seed in range(3):
            out.append(
                example_record(
                    f"abl-{variant}-{seed}",
                    top1=_top1(mean, rng),
                    variant=variant,
                    seed=seed,
                    group="ablation",
                    images_per_s=ips + rng.gauss(0, 3),
                    form=form,
                    macs=macs,
                )
            )
    return out


def search_record(study: str, number: int, objectives: list[str], rng: random.Random) -> dict[str, Any]:
    """One candidate of a width search, shaped like the search worker's (its `search` block included)."""
    a, b, g = rng.choice([0.5, 0.75, 1.0, 1.25, 1.5]), rng.choice([1.0, 1.5, 2.0, 2.5]), rng.choice([1, 2, 4])
    gmacs = 1.16 * (a / 0.75) ** 2 + 0.15 * b / g
    ips = 30000 / (0.3 + gmacs) * rng.uniform(0.8, 1.2)
    kind = "infeasible" if gmacs > 3.0 else "failed" if number == 5 else "trained"
    status = {"infeasible": "infeasible", "failed": "failed"}.get(kind, "completed")
    top1 = _top1(93 + 4 * (1 - 1 / (1 + gmacs)), rng) if status == "completed" else None
    known = {"top1": top1, "images_per_s": ips, "macs": gmacs * 1e9, "params": 8.3e6 * a * b}
    search = {
        "study": study,
        "number": number,
        "kind": kind,
        "state": {"failed": "FAIL"}.get(kind, "COMPLETE"),
        "feasible": {"trained": True, "infeasible": False}.get(kind),
        "values": [known[o] for o in objectives] if kind == "trained" else None,
        "objectives": objectives,
        "directions": ["minimize" if o in ("macs", "params") else "maximize" for o in objectives],
    }
    return example_record(
        f"{study}-{number:02d}",
        top1=top1,
        preset="custom",
        group=study,
        status=status,
        macs=int(gmacs * 1e9),
        params=int(8.3e6 * a * b),
        images_per_s=ips,
        speed=GPU,
        arch={"a": a, "b": b, "groups": g, "grouped_layers": [2, 4] if g > 1 else None},
        search=search,
    )


def write_sweep(root: Path, name: str, kind: str, records: list[dict[str, Any]]) -> Path:
    """sweep.json and trials/<trial_id>/result.json, as a sweep folder holds them."""
    (root / name).mkdir(parents=True)
    (root / name / "sweep.json").write_text(json.dumps({"name": name, "kind": kind, "schema_version": 1}))
    for rec in records:
        (root / name / "trials" / rec["trial_id"]).mkdir(parents=True)
        (root / name / "trials" / rec["trial_id"] / "result.json").write_text(json.dumps(rec))
    return root / name


def realistic_sources(root: Path) -> Path:
    """The ablation sweep and two width searches (12 candidates on top1 vs images/s, 4 on top1 vs MACs)."""
    rng = random.Random(0)
    write_sweep(root, "ablation", "grid", ablation_records(rng))
    speed = [search_record("width-a0", n, ["top1", "images_per_s"], rng) for n in range(12)]
    write_sweep(root, "width-a0", "search", speed)
    write_sweep(root, "width-b0", "search", [search_record("width-b0", n, ["top1", "macs"], rng) for n in range(4)])
    return root


# ---------------------------------------------------------------- the report, with every PNG's drawn texts


@dataclass
class Drawn:
    """One PNG the report saved: its figure and every text matplotlib drew on it, with its box in pixels."""

    path: Path
    fig: Any
    texts: list[tuple[str, bool, Any]]  # (text, is a point/annotation label, window extent)


@dataclass
class Report:
    outdir: Path
    pngs: list[Drawn]


def _saved_path(fname: Any) -> Path:
    """The figure's final path: `files.write_figure` saves into the temporary file `.<name>.<random>` it then renames."""
    if not hasattr(fname, "fileno"):
        return Path(fname)
    tmp = Path(os.readlink(f"/proc/self/fd/{fname.fileno()}"))
    return tmp.with_name(tmp.name[1:].rsplit(".", 1)[0])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    root = realistic_sources(tmp_path_factory.mktemp("sources"))
    outdir = tmp_path_factory.mktemp("report")
    pngs: list[Drawn] = []
    texts: dict[int, tuple[str, bool, Any]] = {}  # per artist, its last draw (a layout pass may draw it before)
    draw, savefig = Text.draw, MplFigure.savefig

    def recording_draw(self: Text, renderer: Any) -> None:
        draw(self, renderer)
        if renderer is not None and self.get_visible() and self.get_text().strip():
            texts[id(self)] = (self.get_text(), isinstance(self, Annotation), self.get_window_extent(renderer))

    def recording_savefig(self: MplFigure, fname: Any, *args: Any, **kwargs: Any) -> None:
        texts.clear()
        savefig(self, fname, *args, **kwargs)
        pngs.append(Drawn(_saved_path(fname), self, list(texts.values())))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Text, "draw", recording_draw)
        mp.setattr(MplFigure, "savefig", recording_savefig)
        build_report(root, outdir)
    return Report(outdir, pngs)


def _overlap(a: Any, b: Any) -> bool:
    """Whether two boxes (x0, y0, x1, y1) share more than TOL pixels both ways."""
    return min(a[2], b[2]) - max(a[0], b[0]) > TOL and min(a[3], b[3]) - max(a[1], b[1]) > TOL


def test_the_report_draws_every_kind_of_figure(report: Report) -> None:
    names = {d.path.name for d in report.pngs}
    assert {"figure1_paper.png", "edf_ablation.png", "edf_search.png"} <= names
    assert {"search_progress_1.png", "search_progress_2.png"} <= names
    assert len([n for n in names if n.startswith("front_")]) == 6  # 2 speed axes x 2 setups + MACs + params


def test_png_text_lies_inside_its_figure(report: Report) -> None:
    outside = []
    for d in report.pngs:
        w, h = d.fig.bbox.width, d.fig.bbox.height
        for text, _, b in d.texts:
            if b.x0 < -TOL or b.y0 < -TOL or b.x1 > w + TOL or b.y1 > h + TOL:
                outside.append(f"{d.path.name}: {text!r} at {b.extents.round(1).tolist()} (figure {w:.0f}x{h:.0f})")
    assert not outside, "clipped text:\n" + "\n".join(outside)


def test_png_texts_do_not_overlap(report: Report) -> None:
    """Point labels, titles, axis labels, tick labels, legends: no two texts of a figure overlap."""
    overlaps = [
        f"{d.path.name}: {a!r} over {b!r}"
        for d in report.pngs
        for i, (a, _, a_box) in enumerate(d.texts)
        for b, _, b_box in d.texts[i + 1 :]
        if _overlap(a_box.extents, b_box.extents)
    ]
    assert not overlaps, "overlapping text:\n" + "\n".join(overlaps)


def test_png_point_labels_are_drawn(report: Report) -> None:
    """Labels are left off only where they would collide: the fronts and Figure 1 still name most points."""
    labels = {d.path.name: sum(is_label for _, is_label, _ in d.texts) for d in report.pngs}
    assert labels["figure1_paper.png"] >= 15
    assert sum(n for name, n in labels.items() if name.startswith("front_")) >= 30


def test_png_trial_axes_have_integer_ticks(report: Report) -> None:
    for d in report.pngs:
        if d.path.name.startswith("search_progress_"):
            ax = d.fig.axes[0]
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), (d.path.name, ticks)


def test_label_placement_keeps_labels_apart_and_inside() -> None:
    from repvgg_search.analysis.plots import place_labels

    anchors = [(50.0, 50.0)] * 6 + [(98.0, 10.0)]  # six labels on one point, one at the right edge
    sizes = [(30.0, 10.0)] * 7
    spots = place_labels(anchors, sizes, (0.0, 0.0, 100.0, 100.0), anchors)
    boxes = [(x, y, x + 30, y + 10) for x, y in (s for s in spots if s is not None)]
    assert len(boxes) >= 5 and spots[-1] is not None
    assert all(_inside(list(b), [0.0, 0.0, 100.0, 100.0]) for b in boxes)
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert place_labels([(5.0, 5.0)], [(200.0, 10.0)], (0.0, 0.0, 100.0, 100.0)) == [None]  # fits nowhere


def test_integer_tick_steps() -> None:
    from repvgg_search.analysis.plots import integer_ticks

    assert [integer_ticks(s) for s in (0, 3, 10, 11, 25, 60, 150)] == [1, 1, 1, 2, 5, 10, 20]


# ---------------------------------------------------------------- report.html in headless Chromium

# Runs in the page once plotly has drawn: every non-empty text of every plot, with its box, and for a text in a
# data-anchored annotation or a trace's text (a point label) the box of the plot area it belongs to.
PROBE = """
function areaOf(gd, xref, yref) {
  const fl = gd._fullLayout, xa = fl[xref.replace('x', 'xaxis')], ya = fl[yref.replace('y', 'yaxis')];
  const svg = gd.querySelector('svg.main-svg').getBoundingClientRect();
  return [svg.left + xa._offset, svg.top + ya._offset, svg.left + xa._offset + xa._length,
          svg.top + ya._offset + ya._length];
}
function probe() {
  const out = [];
  document.querySelectorAll('div.js-plotly-plot').forEach(gd => {
    const box = gd.querySelector('.svg-container').getBoundingClientRect(), texts = [];
    gd.querySelectorAll('svg text').forEach(t => {
      const s = (t.textContent || '').trim(), r = t.getBoundingClientRect(), st = getComputedStyle(t);
      if (!s || st.display === 'none' || st.visibility === 'hidden' || (r.width === 0 && r.height === 0)) return;
      let area = null, kind = t.closest('.xtick') ? 'xtick' : 'text';
      const ann = t.closest('g.annotation'), sub = t.closest('.textpoint') && t.closest('g.subplot');
      if (ann) {
        const a = gd.layout.annotations[+ann.getAttribute('data-index')];
        if (a && a.xref && a.xref !== 'paper') area = areaOf(gd, a.xref, a.yref);
      } else if (sub) {
        const xy = [...sub.classList].find(c => /^x\\d*y\\d*$/.test(c)), m = xy.match(/^(x\\d*)(y\\d*)$/);
        area = areaOf(gd, m[1], m[2]);
      }
      texts.push({text: s, kind, area, box: [r.left, r.top, r.right, r.bottom]});
    });
    const xtitle = gd._fullLayout.xaxis.title.text || '';
    out.push({id: gd.id, xtitle, box: [box.left, box.top, box.right, box.bottom], texts});
  });
  const pre = document.createElement('pre');
  pre.id = 'layout-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}
window.addEventListener('load', () => setTimeout(probe, 500));
"""


@pytest.fixture(scope="module")
def html_plots(report: Report, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt chromium)")
    tmp = tmp_path_factory.mktemp("browser")
    page = tmp / "report.html"
    page.write_text((report.outdir / "report.html").read_text().replace("</body>", f"<script>{PROBE}</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,900"]
    flags += ["--virtual-time-budget=20000", "--dump-dom", page.as_uri()]
    proc = subprocess.run([str(CHROMIUM), *flags], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the probe did not run: " + proc.stderr[-2000:]
    plots = json.loads(html.unescape(found.group(1)))
    assert len(plots) == len(re.findall(r'id="(plot-\d+)"', (report.outdir / "report.html").read_text())) >= 10
    return plots


def _inside(box: list[float], area: list[float]) -> bool:
    return box[0] >= area[0] - TOL and box[1] >= area[1] - TOL and box[2] <= area[2] + TOL and box[3] <= area[3] + TOL


@pytest.mark.browser
def test_html_text_lies_inside_its_plot(html_plots: list[dict[str, Any]]) -> None:
    outside = [
        f"{p['id']}: {t['text'][:60]!r} at {[round(v) for v in t['box']]}, plot {[round(v) for v in p['box']]}"
        for p in html_plots
        for t in p["texts"]
        if not _inside(t["box"], p["box"])
    ]
    assert not outside, "text outside its plot:\n" + "\n".join(outside)


@pytest.mark.browser
def test_html_point_labels_lie_inside_their_plot_area(html_plots: list[dict[str, Any]]) -> None:
    labels = [(p["id"], t) for p in html_plots for t in p["texts"] if t["area"]]
    assert len(labels) >= 15, "Figure 1 names the published points"
    clipped = [f"{pid}: {t['text']!r}" for pid, t in labels if not _inside(t["box"], t["area"])]
    assert not clipped, "point labels cut by their plot area:\n" + "\n".join(clipped)


@pytest.mark.browser
def test_html_texts_do_not_overlap(html_plots: list[dict[str, Any]]) -> None:
    overlaps = [
        f"{p['id']}: {a['text'][:50]!r} over {b['text'][:50]!r}"
        for p in html_plots
        for i, a in enumerate(p["texts"])
        for b in p["texts"][i + 1 :]
        if _overlap(a["box"], b["box"])
    ]
    assert not overlaps, "overlapping text:\n" + "\n".join(overlaps)


@pytest.mark.browser
def test_html_trial_axes_have_integer_ticks(html_plots: list[dict[str, Any]]) -> None:
    progress = [p for p in html_plots if p["xtitle"].startswith("trial (")]
    assert len(progress) == 2
    for p in progress:
        ticks = [t["text"] for t in p["texts"] if t["kind"] == "xtick"]
        assert ticks and all(re.fullmatch(r"−?\d+", t) for t in ticks), (p["id"], ticks)

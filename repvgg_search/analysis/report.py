"""Build the report (report.md, report.html, PNGs, trials.csv) from a source; its command is `analysis/cli.py`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import files
from ..errors import BadInputError
from ..schema import MAC_CONVENTION, TrialRecord
from . import plots
from .ablation import ABLATION_DIGITS, ABLATION_TITLES, ablation_tables, reference_caption
from .document import Bullets, Document, Figure, Heading, Table, Text, render_html, render_markdown
from .edf import edf_curves, edf_plotly, edf_png, edf_table
from .fronts import (
    OBJECTIVE_COLUMNS,
    Front,
    Objective,
    SearchFront,
    build_fronts,
    left_out_table,
    objective,
    search_front,
    setup_warnings,
)
from .layer_plot import plot_designs
from .load import LoadResult, load_records, load_sources
from .pareto import hypervolume_progress
from .quant import QUANT_DIGITS, layer_groups, layers_caption, layers_stem, quant_caption, quant_table
from .reference import figure1_points
from .tables import metric_table, trial_hover

MAX_SKIPPED_ROWS = 50  # the full list is in trials.csv/skipped.csv; the page shows the first ones
FRONT_COLUMNS = ["trial_id", "preset", "variant", "seed", "a", "b", "depths", "groups", "top1", "x", "form"]
PAPER_COLUMNS = {"images_per_s": "speed (examples/s, 1080Ti)", "params_m": "params (M)", "gmacs": "GMACs"}
PAPER_DIGITS = {"top1": 2, "speed (examples/s, 1080Ti)": 0, "params (M)": 2, "GMACs": 1}
ARCH_COLUMNS = ["search_number", "trial_id", "a", "b", "depths", "groups", "grouped_layers", "use_se"]


class ReportError(BadInputError):
    """The source was read but holds nothing a report can be built from."""


@dataclass
class Outputs:
    """Where the report went and what it left out (for the CLI's closing lines)."""

    outdir: Path
    files: list[Path]
    loaded: LoadResult
    left_out: pd.DataFrame


def build_report(
    source: str | Path | list[str | Path],
    outdir: str | Path,
    *,
    group: str | None = None,
    tags: list[str] | None = None,
    state: str | None = None,
) -> Path:
    """Write report.md, report.html, PNG figures, trials.csv and skipped.csv into `outdir`; return report.md.

    Several sources go into one report, each trial labelled with its source (column `source`)."""
    sources = source if isinstance(source, list) else [source]
    return build(sources, Path(outdir), group=group, tags=tags, state=state).outdir / "report.md"


def build(sources: list[str | Path], outdir: Path, **filters) -> Outputs:
    """The report of `sources` in `outdir`, with what it read and left out (`build_report` returns its path)."""
    if outdir.exists() and not outdir.is_dir():
        raise ReportError(f"-o {outdir} is a file, not a folder; choose another output folder")
    loaded = load_records(sources[0], **filters) if len(sources) == 1 else load_sources(sources, **filters)
    source = ", ".join(map(str, sources))
    if not loaded.records:
        raise ReportError(_nothing_usable(source, loaded))
    df = metric_table(loaded.records)
    df["hover"] = trial_hover(df)
    outdir.mkdir(parents=True, exist_ok=True)
    doc = Document("RepVGG search report")
    left = left_out_table(df)
    fronts = build_fronts(df)
    _summary(doc, source, loaded, df, left)
    _fronts_section(doc, fronts, outdir)
    _ablation_section(doc, df)
    _quant_section(doc, df, loaded.records, outdir)
    _edf_section(doc, df, outdir)
    _width_search_section(doc, df, loaded.records, outdir)
    _paper_section(doc, fronts, outdir)
    written = [outdir / b.png for b in doc.blocks if isinstance(b, Figure)]
    files.write_text(outdir / "report.md", render_markdown(doc))
    files.write_text(outdir / "report.html", render_html(doc))
    files.write_csv(outdir / "trials.csv", df.drop(columns="hover"))
    files.write_csv(outdir / "skipped.csv", pd.DataFrame(loaded.skipped, columns=["where", "why"]))
    written += [outdir / n for n in ("report.md", "report.html", "trials.csv", "skipped.csv")]
    return Outputs(outdir, written, loaded, left)


def _nothing_usable(source: str | Path, loaded: LoadResult) -> str:
    why = Counter(w for _, w in loaded.skipped)
    parts = [f"{n} x {w}" for w, n in why.most_common()]
    if loaded.filtered_out:
        parts.append(f"{loaded.filtered_out} record(s) did not match the filters {loaded.filters}")
    return f"no usable trial records in {source}; left out: " + ("; ".join(parts) or "nothing found")


def _summary(doc: Document, source: str | Path, loaded: LoadResult, df: pd.DataFrame, left: pd.DataFrame) -> None:
    origins = Counter(df["origin"])
    sweeps = [f"{s.get('name')} ({s.get('kind')})" for s in loaded.sweeps if isinstance(s, dict)]
    doc.add(
        Heading(1, "Summary"),
        Bullets(
            [
                f"source: {source}",
                f"trials in the report: {len(df)} ({', '.join(f'{n} from {o}' for o, n in origins.items())})",
                f"status: {', '.join(f'{n} {s}' for s, n in Counter(df['status']).most_common())}",
                f"filters: {loaded.filters or 'none'}; records not matching them: {loaded.filtered_out}",
                f"sweeps: {', '.join(sweeps) or 'no sweep.json (wandb or trial folders)'}",
                f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; every trial is in trials.csv",
            ]
        ),
        Heading(1, "Left out"),
    )
    if loaded.skipped:
        shown = min(len(loaded.skipped), MAX_SKIPPED_ROWS)
        doc.add(
            Text(f"{len(loaded.skipped)} record(s) could not be used at all (first {shown} below, all in skipped.csv):")
        )
        doc.add(Table(pd.DataFrame(loaded.skipped[:MAX_SKIPPED_ROWS], columns=["where", "why"])))
    else:
        doc.add(Text("No record was left out entirely."))
    doc.add(Text("Trials kept in the report but left off some fronts (each front's trials are the rest):"), Table(left))
    notes = loaded.notes + setup_warnings(df)
    doc.add(
        Heading(1, "Warnings and notes"), Bullets(notes or ["none"]), Heading(1, "Conventions"), Bullets(_conventions())
    )


def _conventions() -> list[str]:
    return [
        "top1: accuracy (%) on the evaluation split of the trial's data set; the y axis of every front",
        f"MACs: {MAC_CONVENTION}, shown in G (1e9) at the input size stated; params in M (1e6)",
        "deploy figures are those of the re-parameterized plain model, except where form=train (the variant "
        "cannot be converted, so its train form is measured)",
        "throughput: images/s; latency: ms per batch; each measured on the setup named "
        "(device | batch | input | dtype); fronts never mix setups",
        "hypervolume: area dominated by the front up to the stated reference point, in x-unit x top1 %",
        "Pareto front: trials no other trial beats on both axes; dominated trials are drawn in grey",
    ]


def _front_table(front: Front) -> Table:
    on = front.points[front.points["pareto"]]
    cols = [c for c in FRONT_COLUMNS if c in on.columns]
    table = on[cols].rename(columns={"x": front.x_label})
    digits = {"top1": 2, front.x_label: front.axis.digits, "a": 3, "b": 3}
    return Table(table, caption=f"Trials on the front ({front.x_label}).", digits=digits)


def _fronts_section(doc: Document, fronts: list[Front], outdir: Path) -> None:
    doc.add(Heading(1, "Pareto fronts"))
    if not fronts:
        doc.add(Text("No trial has both a top1 and a cost figure: no fronts to draw (see Left out)."))
    for f in fronts:
        png = f"front_{f.name}.png"
        plots.front_png(f, outdir / png)
        doc.add(Heading(2, f.title), Figure(png, plots.front_plotly(f), plots.front_caption(f)), _front_table(f))


def _quant_section(doc: Document, df: pd.DataFrame, records: list[TrialRecord], outdir: Path) -> None:
    table = quant_table(df)
    if table.empty:
        return
    doc.add(Heading(1, "Quantization"), Text(quant_caption()), Table(table, digits=QUANT_DIGITS))
    for (preset, data, protocol), designs in layer_groups(records).items():  # the sensitivity figure per design
        images = next((r.quant.layer_images for r in records if r.quant is not None and r.quant.layers), None)
        stem = layers_stem(preset, data, protocol)
        pngs = plot_designs(designs, outdir, caption=f"{preset}, {data}, {protocol}", stem=stem)
        doc.add(Heading(2, f"INT8 sensitivity per layer: {preset}, {data}, protocol {protocol}"))
        for design, png in pngs.items():
            doc.add(Figure(png.name, None, f"{design}. " + layers_caption(images)))


def _ablation_section(doc: Document, df: pd.DataFrame) -> None:
    tables = ablation_tables(df)
    if all(t.empty for t in tables.values()):
        return
    doc.add(Heading(1, "Ablations"), Text(reference_caption(tables=tables)))  # as summary.md: with the one-seed caution
    for name, t in tables.items():
        if not t.empty:
            doc.add(Heading(2, ABLATION_TITLES[name]), Table(t, digits=ABLATION_DIGITS))


def _edf_section(doc: Document, df: pd.DataFrame, outdir: Path) -> None:
    """Error EDFs: one curve per variant (its seeds) and per width search (its sampled models), with n."""
    prefix = ["source"] if df["source"].nunique() > 1 else []
    groups = {
        "ablation": (df[df["search_study"].isna()], [*prefix, "preset", "variant"], "variants over their seeds"),
        "search": (
            df[df["search_study"].notna()],
            [*prefix, "search_study"],
            "width searches over their sampled models",
        ),
    }
    found = {name: (edf_curves(part, by), what) for name, (part, by, what) in groups.items()}
    found = {name: cw for name, cw in found.items() if cw[0]}
    if not found:
        return
    doc.add(
        Heading(1, "Error EDFs"),
        Text(
            "Empirical distribution of error (100 - top1) over each population of completed trials (Radosavovic et "
            "al., 2019): a curve further up and to the left is a better population. Populations of one trial are "
            "left out (a single step)."
        ),
    )
    for name, (curves, what) in found.items():
        title = f"Error EDF of {what}"
        plots_png = f"edf_{name}.png"
        edf_png(curves, outdir / plots_png, title)
        caption = "n: trials behind each curve; " + ", ".join(f"{k} (n={len(v)})" for k, v in curves.items())
        doc.add(Heading(2, title), Figure(plots_png, edf_plotly(curves, title), caption))
        doc.add(Table(edf_table(curves), digits=2))


def _width_search_section(doc: Document, df: pd.DataFrame, results: list[TrialRecord], outdir: Path) -> None:
    """Per study: its candidates, its Pareto set on its own objectives (as pareto.csv has it), its progress."""
    searched = df[df["search_study"].notna()]
    if searched.empty:
        return
    doc.add(Heading(1, "Width search"))
    for i, (study, part) in enumerate(searched.groupby("search_study", sort=True), start=1):
        front = search_front(str(study), part, [results[j] for j in part.index])  # df row j is results[j]
        states = ", ".join(f"{n} {s}" for s, n in Counter(part["status"]).most_common())
        doc.add(Heading(2, f"Study {study}"), Text(f"{len(part)} candidates: {states}."))
        doc.add(Text(_pareto_intro(front)), _search_table(front))
        _progress(doc, front, outdir / f"search_progress_{i}.png")


def _pareto_intro(front: SearchFront) -> str:
    goals = ", ".join(f"{'maximize' if o.maximize else 'minimize'} {o.name}" for o in front.objectives)
    if not front.recorded:
        return (
            f"Pareto set ({goals}) over the completed candidates: these records name no search objectives (written "
            "before the search recorded them), so this need not be the search's own Pareto set:"
        )
    return (
        f"Pareto set on the study's own objectives ({goals}), over the candidates the search trained to the end "
        "within every budget, valued as the search recorded them: the same set as the search's pareto.csv. The "
        "other figures of each candidate follow its objectives:"
    )


def _search_table(front: SearchFront) -> Table:
    on = front.points[front.points["pareto"]]
    first = front.objectives[0]
    on = on.sort_values(f"value_{first.name}", ascending=not first.maximize, kind="stable")
    table = on[ARCH_COLUMNS].copy()
    for o in front.objectives:
        table[o.label] = on[f"value_{o.name}"]
    others = [objective(n) for n in OBJECTIVE_COLUMNS if n not in {o.name for o in front.objectives}]
    others = [o for o in others if on[o.column].notna().any()]  # e.g. INT8 figures exist only with quant.ptq
    for o in others:
        table[o.label] = on[o.column] * o.scale
    table["form"] = on["form"]
    digits = {o.label: o.digits for o in [*front.objectives, *others]} | {"a": 3, "b": 3}
    return Table(table, digits=digits)


def _progress_points(front: SearchFront) -> tuple[Objective, Objective, pd.DataFrame]:
    """The two axes of the progress curve: the study's objectives when it has two (top1 on y), else top1 vs deploy
    GMACs; either way only the Pareto candidates have values (the others are steps)."""
    pts = front.points
    if len(front.objectives) == 2:
        y = next((o for o in front.objectives if o.name == "top1"), front.objectives[0])
        x = next(o for o in front.objectives if o is not y)
        return x, y, pts.assign(x=pts[f"value_{x.name}"], y=pts[f"value_{y.name}"])
    x, y, cand = objective("macs"), objective("top1"), pts["candidate"]
    return x, y, pts.assign(x=(pts[x.column] * x.scale).where(cand), y=pts[y.column].where(cand))


def _progress(doc: Document, front: SearchFront, png: Path) -> None:
    x, y, pts = _progress_points(front)
    if pts[["x", "y"]].dropna().empty:
        doc.add(Text("No candidate counts for the Pareto set yet: no progress curve."))
        return
    prog = hypervolume_progress(pts, x="x", y="y", maximize=(x.maximize, y.maximize), order="search_number")
    rx, ry = prog.attrs["ref"]
    title = f"Search progress of {front.study}: hypervolume of {y.name} vs {x.label} over trials"
    ylabel = f"hypervolume ({x.unit} x {y.name} {y.unit})"
    caption = (
        f"Hypervolume of {y.name} vs {x.label} after each trial; reference point ({x.label} {rx:.4g}, {y.label} "
        f"{ry:.4g}), fixed over the study. Only candidates that count for the Pareto set add to it; the others "
        "(failed, pruned, infeasible) are steps."
    )
    plots.progress_png(prog, png, title, ylabel)
    doc.add(Figure(png.name, plots.progress_plotly(prog, title, ylabel), caption))


def _paper_section(doc: Document, fronts: list[Front], outdir: Path) -> None:
    speed = [f for f in fronts if f.axis.column == "images_per_s"]
    ours = max(speed, key=lambda f: len(f.points)) if speed else None
    paper = figure1_points()
    plots.figure1_png(paper, ours, outdir / "figure1_paper.png")
    doc.add(
        Heading(1, "Published reference (the paper's Figure 1)"),
        Text("The paper's points, kept apart from ours: they ran on a GTX 1080Ti on ImageNet, ours did not."),
        Figure("figure1_paper.png", plots.figure1_plotly(paper, ours), plots.figure1_caption(ours)),
        Table(
            paper.rename(columns=PAPER_COLUMNS), caption="Published points (source labels kept).", digits=PAPER_DIGITS
        ),
    )


if __name__ == "__main__":  # `python -m repvgg_search.analysis.report`, as documented: the command lives in cli.py
    from .cli import main

    raise SystemExit(main())

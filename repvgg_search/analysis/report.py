"""Build the report (report.md, report.html, PNGs, trials.csv) from a source; `python -m analysis.report --help`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import BadInputError
from . import plots
from .ablation import ABLATION_DIGITS, ABLATION_TITLES, ablation_tables, reference_caption
from .document import Bullets, Document, Figure, Heading, Table, Text, render_html, render_markdown
from .edf import edf_curves, edf_plotly, edf_png, edf_table
from .fronts import Front, build_fronts, left_out_table, setup_warnings
from .load import SOURCE_HELP, LoadResult, load_records, load_sources
from .pareto import hypervolume_progress, pareto_front
from .reference import figure1_points
from .schema import MAC_CONVENTION
from .tables import metric_table

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
    return _build(sources, Path(outdir), group=group, tags=tags, state=state).outdir / "report.md"


def _build(sources: list[str | Path], outdir: Path, **filters) -> Outputs:
    loaded = load_records(sources[0], **filters) if len(sources) == 1 else load_sources(sources, **filters)
    source = ", ".join(map(str, sources))
    if not loaded.records:
        raise ReportError(_nothing_usable(source, loaded))
    df = metric_table(loaded.records)
    df["hover"] = plots.trial_hover(df)
    outdir.mkdir(parents=True, exist_ok=True)
    doc = Document("RepVGG search report")
    left = left_out_table(df)
    fronts = build_fronts(df)
    _summary(doc, source, loaded, df, left)
    _fronts_section(doc, fronts, outdir)
    _ablation_section(doc, df)
    _edf_section(doc, df, outdir)
    _width_search_section(doc, df, outdir)
    _paper_section(doc, fronts, outdir)
    files = [outdir / b.png for b in doc.blocks if isinstance(b, Figure)]
    (outdir / "report.md").write_text(render_markdown(doc), encoding="utf-8")
    (outdir / "report.html").write_text(render_html(doc), encoding="utf-8")
    df.drop(columns="hover").to_csv(outdir / "trials.csv", index=False)
    pd.DataFrame(loaded.skipped, columns=["where", "why"]).to_csv(outdir / "skipped.csv", index=False)
    files += [outdir / n for n in ("report.md", "report.html", "trials.csv", "skipped.csv")]
    return Outputs(outdir, files, loaded, left)


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


def _ablation_section(doc: Document, df: pd.DataFrame) -> None:
    tables = ablation_tables(df)
    if all(t.empty for t in tables.values()):
        return
    doc.add(Heading(1, "Ablations"), Text(reference_caption()))
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


def _width_search_section(doc: Document, df: pd.DataFrame, outdir: Path) -> None:
    searched = df[df["search_study"].notna()]
    if searched.empty:
        return
    doc.add(Heading(1, "Width search"))
    for i, (study, part) in enumerate(searched.groupby("search_study", sort=True), start=1):
        part = part.assign(gmacs=part["deploy_macs"] * 1e-9)
        done = part[(part["status"] == "completed") & part["top1"].notna()]
        states = ", ".join(f"{n} {s}" for s, n in Counter(part["status"]).most_common())
        doc.add(Heading(2, f"Study {study}"), Text(f"{len(part)} candidates: {states}."))
        front = pareto_front(done, "gmacs", "top1", maximize=(False, True))
        cols = [*ARCH_COLUMNS, "top1", "gmacs", "deploy_params", "form", "search_values"]
        pset = front[front["pareto"]][cols].assign(deploy_params=lambda d: d["deploy_params"] * 1e-6)
        pset = pset.rename(columns={"gmacs": "deploy GMACs", "deploy_params": "deploy params (M)"})
        doc.add(Text("Pareto set (top1 vs deploy GMACs, device-independent), with each candidate's architecture:"))
        doc.add(Table(pset, digits={"top1": 2, "deploy GMACs": 4, "deploy params (M)": 3, "a": 3, "b": 3}))
        _progress(doc, part, study, outdir / f"search_progress_{i}.png")


def _progress(doc: Document, part: pd.DataFrame, study: str, png: Path) -> None:
    if part[["gmacs", "top1"]].dropna().empty:
        doc.add(Text("No candidate has both top1 and deploy MACs yet: no progress curve."))
        return
    prog = hypervolume_progress(part, x="gmacs", y="top1", maximize=(False, True), order="search_number")
    rx, ry = prog.attrs["ref"]
    title = f"Search progress of {study}: hypervolume of top1 vs deploy GMACs over trials"
    ylabel = "hypervolume (GMACs x top1 %)"
    caption = (
        f"Reference point ({rx:.4g} GMACs, {ry:.4g} % top1), fixed over the study; "
        "failed and infeasible candidates count as steps."
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    p.add_argument(
        "source", nargs="+", help=f"{SOURCE_HELP}; several sources go into one report (their EDFs side by side)"
    )
    p.add_argument("-o", "--outdir", required=True, type=Path, help="folder for report.md, report.html, PNGs")
    p.add_argument("--group", help="only runs of this group (sweep or study name)")
    p.add_argument("--tag", action="append", dest="tags", help="only runs with this tag (repeat: all must match)")
    p.add_argument("--state", help="only trials with this status (completed, failed, ...; wandb's finished, ...)")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build the report, print where it went and what it left out."""
    args = _parser().parse_args(argv)
    try:
        out = _build(args.source, args.outdir, group=args.group, tags=args.tags, state=args.state)
    except BadInputError as e:  # SourceError, ReportError, an unknown --state
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(out.files)} files to {out.outdir}: report.md, report.html, {len(out.files) - 4} PNG figures")
    print(f"trials in the report: {len(out.loaded.records)}; records left out entirely: {len(out.loaded.skipped)}")
    for where, why in out.loaded.skipped[:10]:
        print(f"  left out {where}: {why}")
    for row in out.left_out.itertuples(index=False):
        print(f"  off the '{row.front}' fronts: {row.trials} ({row.reason})")
    for note in out.loaded.notes:
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

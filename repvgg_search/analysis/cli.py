"""`python -m repvgg_search.analysis.report SOURCE... -o DIR` (console script `repvgg-report`): Pareto fronts,
ablation tables, error EDFs and the paper's reference points from a sweep folder, trial folders, wandb offline
runs or a wandb project, as report.md, a self-contained report.html, PNG figures and trials.csv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import exit_on_bad_input
from .load import SOURCE_HELP
from .report import build


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repvgg_search.analysis.report", description=__doc__)
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
    # Bad input (SourceError, ReportError, an unknown --state): one line, exit 2; a full disk: one line, exit 1.
    out = exit_on_bad_input(build)(args.source, args.outdir, group=args.group, tags=args.tags, state=args.state)
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

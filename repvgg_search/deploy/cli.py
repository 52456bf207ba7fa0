"""`python -m repvgg_search.deploy TRIAL_DIR`: export a finished trial's deploy form (ONNX, torch.export), checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, BadInputError
from ..trial.export import export_trial
from .export import FORMATS, TOLERANCE, ExportError


def main(argv: list[str] | None = None) -> int:
    """Export a completed trial's deploy form into <trial>/export/ and record it in its result.json. Exit status:
    0 exported and within the tolerance, 1 an export differs from PyTorch by more, 2 bad input."""
    parser = argparse.ArgumentParser(prog="python -m repvgg_search.deploy", description=main.__doc__)
    parser.add_argument("trial_dir", type=Path, help="a completed trial's folder (holds result.json and deploy.pt)")
    parser.add_argument("--format", action="append", choices=FORMATS, help="repeatable; default: all")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="max relative error (default 1e-5)")
    args = parser.parse_args(argv)
    try:
        found = export_trial(args.trial_dir, args.format or FORMATS, args.tolerance)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for fmt, block in found.items():
        print(f"{fmt:<13} {args.trial_dir / block['file']}  max rel error {block['max_rel_error']:.2e} "
              f"(<= {block['tolerance']:g}, checked on a {'x'.join(map(str, block['checked_on']))} batch)")  # fmt: skip
    return 0

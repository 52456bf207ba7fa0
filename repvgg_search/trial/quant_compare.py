"""INT8 figures of a finished trial under several quantization protocols, side by side: for each, the float ONNX
and INT8 top1 on the trial's whole validation split, the exact simulation's top1, the runtime gap and the drop.

Run: python -m repvgg_search.trial.quant_compare TRIAL_DIR [--protocol ort_qdq symmetric ...] [--out DIR]
Each protocol's INT8 model and its `quant` block (the record a trial would hold) go to DIR/<protocol>/ (default: a
temporary folder); the trial folder is only read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data import build_loaders, calibration_images
from ..data.config import DataConfig
from ..deploy.quant import ptq
from ..deploy.quant_protocols import resolve_quant_protocol
from ..deploy.sensitivity import summarize_layers
from ..errors import exit_on_bad_input
from .artifact import from_trial

COLUMNS = ("protocol", "reduce_range", "float_onnx", "int8", "reference", "gap", "drop", "ties", "logit_err", "worst")


def compare_protocols(
    trial: str | Path, protocols: Sequence[str | Mapping[str, Any]], out: str | Path, *, layer_images: int = 64
) -> list[dict[str, Any]]:
    """The `quant` block of `trial`'s deploy form under each protocol (files under `out/<protocol name>/`)."""
    taken = from_trial(trial)
    data = DataConfig(**taken.record.config["data"])
    _, val, _ = build_loaders(data, device="cpu", seed=int(taken.record.seed))
    blocks = []
    for value in protocols:
        protocol = resolve_quant_protocol(value)
        images = calibration_images(data, protocol.calib_images)
        folder = Path(out) / protocol.name
        block = ptq(taken.model, folder, images, val, protocol, layer_images=layer_images)
        (folder / "quant.json").write_text(json.dumps(block, indent=1, default=float))
        blocks.append(block)
    return blocks


def row(block: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the comparison table (top1 in %, gap and drop in top1 points)."""
    worst = summarize_layers(block.get("layers") or [])
    return {
        "protocol": block["protocol"]["name"],
        "reduce_range": block["reduce_range_used"],
        "float_onnx": block["float_onnx_top1"],
        "int8": block["int8_top1"],
        "reference": block["reference_top1"],
        "gap": block["runtime_gap"],
        "drop": block["drop"],
        "ties": block["agreement"]["int8_ties"],
        "logit_err": block["agreement"].get("int8_vs_reference_max_rel"),
        "worst": f"{worst['worst_layer']} {worst['worst_sqnr_db']:.1f} dB" if worst["worst_layer"] else "-",
    }


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return str(v).lower()
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [list(COLUMNS)] + [[cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table)


@exit_on_bad_input
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trial", help="a completed trial folder (keep_checkpoint=deploy or all)")
    p.add_argument("--protocol", nargs="+", default=["ort_qdq", "symmetric", "ort_legacy"])
    p.add_argument("--out", default=None, help="where each protocol's INT8 model and quant.json go")
    p.add_argument("--layer-images", type=int, default=64, help="validation images of the per-layer analysis")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in args.protocol:  # one at a time, each line printed when it is measured
            (block,) = compare_protocols(args.trial, [protocol], args.out or tmp, layer_images=args.layer_images)
            if not rows:
                print(f"{args.trial}: {block['val_images']} validation images, {block['calib_images']} calibration "
                      f"images; CPU {block['cpu']['model']} (VNNI/AMX flags: {block['cpu']['vnni'] or 'none'}); top1 "
                      "in %, gap = INT8 - reference, drop = float ONNX - INT8 (top1 points); logit_err = "
                      "max|INT8 - reference| / max|reference|; worst = lowest layer-output SQNR", flush=True)  # fmt: skip
            rows.append(row(block))
            print(format_rows(rows).splitlines()[-1] if len(rows) > 1 else format_rows(rows), flush=True)


if __name__ == "__main__":
    main()

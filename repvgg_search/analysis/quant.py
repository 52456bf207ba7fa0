"""The quantization ablation: per block design and quantization protocol, float ONNX top1, INT8 top1 and the drop
over the seeds (the exact simulation's where the runtime's INT8 arithmetic is off it by more than GAP_LIMIT), each
paired by seed against the baseline (`full`) with Holm-corrected verdicts, beside the QARepVGG paper's numbers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..schema import ArchBlock, Status, TrialRecord
from .ablation import compare_variants, interval, seed_list
from .layer_plot import mean_layers
from .reference import paper_reference
from .stats import ALPHA, fixed_seed_rule, mean_ci
from .tables import GAP_LIMIT, to_markdown

QUANT_TITLE = "INT8 post-training quantization: top1 and drop (float minus INT8) per block design"
QUANT_DIGITS = {"float top1": 2, "INT8 top1": 2, "drop": 2, "max |gap|": 2, "drop std": 2, "INT8 Δ vs baseline": 2,
                "INT8 p Holm": 3, "drop Δ vs baseline": 2, "drop p Holm": 3, "INT8 speedup": 2,
                "reference float": 1, "reference INT8": 1, "reference drop": 1}  # fmt: skip
DROP_WORDS = {"better": "smaller drop", "worse": "larger drop"}  # the verdict on -drop, said of the drop


def quant_table(df: pd.DataFrame, baseline: str = "full") -> pd.DataFrame:
    """One row per (preset, data, protocol, variant) with INT8 results: n, float ONNX and INT8 top1, the drop
    (float ONNX - INT8) with its 95% t interval, where they come from (the runtime, or the exact simulation for
    trials whose |runtime_gap| > GAP_LIMIT), the INT8 top1 and the drop paired by seed against `baseline`
    (Holm-corrected verdicts over that preset, data and protocol), the INT8/float speed ratio in onnxruntime, and the
    QARepVGG paper's numbers (source label)."""
    done = df[(df["status"] == "completed") & df["int8_top1"].notna() & df["search_study"].isna()]
    rows = []
    keys = ["preset", "data", "quant_protocol"]
    for (preset, data, protocol), part in done.groupby(keys, dropna=False, sort=True):
        part = part.assign(neg_drop=-part["quant_drop_used"])
        by_int8 = compare_variants(part, baseline, "int8_used", paper=False)
        by_drop = compare_variants(part, baseline, "neg_drop", paper=False)
        for variant in sorted(part["variant"].unique(), key=lambda v: (v != baseline, v != "qarepvgg", v)):
            trials = part[part["variant"] == variant]
            head = {"preset": preset, "data": data, "protocol": protocol, "variant": variant}
            rows.append(head | _cells(trials) | _versus(by_int8, by_drop, variant, baseline) | _reference(variant))
    return pd.DataFrame(rows)


def _cells(trials: pd.DataFrame) -> dict[str, Any]:
    drop = mean_ci(trials["quant_drop_used"])
    simulated = int((trials["drop_from"] == "simulation").sum())
    gap = trials["runtime_gap"].abs()
    return {
        "n": drop["n"],
        "seeds": seed_list(trials),
        "float top1": trials["float_onnx_top1"].fillna(trials["deploy_top1"]).fillna(trials["top1"]).mean(),
        "INT8 top1": trials["int8_used"].mean(),
        "drop": drop["mean"],
        "from": "runtime" if not simulated else f"simulation ({simulated} of {len(trials)})",
        "max |gap|": gap.max() if gap.notna().any() else None,
        "drop std": drop["std"],
        "drop 95% CI": interval(drop["ci_low"], drop["ci_high"], signed=True),
        "INT8 speedup": trials["int8_speedup"].mean() if trials["int8_speedup"].notna().any() else None,
    }


def _versus(by_int8, by_drop, variant: str, baseline: str) -> dict[str, Any]:
    keys = ["INT8 Δ vs baseline", "INT8 p Holm", "INT8 verdict", "drop Δ vs baseline", "drop p Holm", "drop verdict"]
    if variant == baseline:
        return dict.fromkeys(keys) | {"INT8 verdict": "baseline", "drop verdict": "baseline"}
    if by_int8 is None or variant not in by_int8.index:
        return dict.fromkeys(keys) | {"INT8 verdict": f"no completed {baseline}"}
    a, d = by_int8.loc[variant], by_drop.loc[variant]
    return {
        "INT8 Δ vs baseline": a["mean_diff"],
        "INT8 p Holm": a["p_holm"],
        "INT8 verdict": a["verdict"],
        "drop Δ vs baseline": -d["mean_diff"],
        "drop p Holm": d["p_holm"],
        "drop verdict": DROP_WORDS.get(d["verdict"], d["verdict"]),
    }


def _reference(variant: str) -> dict[str, Any]:
    ref = paper_reference().get("quantization", {}).get(variant)
    if not isinstance(ref, dict):
        return {"reference": None, "reference float": None, "reference INT8": None, "reference drop": None,
                "reference source": None}  # fmt: skip
    fp, q = ref.get("float_top1"), ref.get("int8_top1")
    return {
        "reference": ref.get("model"),
        "reference float": fp,
        "reference INT8": q,
        "reference drop": fp - q if fp is not None and q is not None else None,
        "reference source": ref.get("source"),
    }


def quant_caption(baseline: str = "full") -> str:
    claim = paper_reference().get("quantization", {}).get("claim", "")
    return (
        "Float top1: the deploy form exported to ONNX (float32, onnxruntime); INT8 top1: its static INT8 "
        "quantization under the protocol named in the row (onnxruntime QDQ; conf/quant/), on the same validation "
        "images. drop = float ONNX - INT8 top1; 95% t interval over the seeds. gap = the runtime's INT8 top1 - "
        "that of an exact float64 simulation of the same quantized graph (same scales and zero points): where a "
        f"trial's |gap| > {GAP_LIMIT} points, its INT8 top1 and drop are the simulation's (column from: how many), "
        f"so the figures measure the quantization, not the CPU's INT8 kernels. Δ vs {baseline}: paired by seed; p: "
        f"{fixed_seed_rule(ALPHA)}; Holm-corrected over the variants; verdict at "
        f"α={ALPHA} (for the drop: smaller/larger drop). INT8 speedup: INT8 over float images/s, both in onnxruntime "
        "on the CPU under one protocol. Reference: RepVGG-A0 and QARepVGG-A0 on ImageNet, 224 px, from Chu et al. "
        f"2023 (label qarepvgg; TensorRT-style PTQ whose settings the paper does not give in full); {claim}. Our "
        "numbers come from the data, model and recipe of the run, not the paper's."
    )


def quant_markdown(df: pd.DataFrame, baseline: str = "full") -> str:
    """The quantization table as markdown with its caption; "" when no trial has INT8 results."""
    table = quant_table(df, baseline)
    if table.empty:
        return ""
    return f"{QUANT_TITLE}\n\n{to_markdown(table, QUANT_DIGITS)}\n\n{quant_caption(baseline)}"


LayerGroups = dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]]


def layer_groups(records: Sequence[TrialRecord]) -> LayerGroups:
    """The per-layer sensitivity (`quant.layers`) of completed trials outside a width search, per (preset, data,
    protocol) and block design, averaged over the design's seeds (`mean_layers`; trials whose layers differ from
    the design's first, another architecture, are left out)."""
    found: dict[tuple[str, str, str], dict[str, list[list[dict[str, Any]]]]] = {}
    for rec in records:
        q = rec.quant
        if rec.status is not Status.COMPLETED or q is None or not q.layers or rec.search is not None:
            continue
        data = (rec.config or {}).get("data", {}).get("name")
        arch = rec.arch or ArchBlock()
        key = (str(arch.preset), str(data), str((q.protocol or {}).get("name")))
        trials = found.setdefault(key, {}).setdefault(str(arch.variant), [])
        if not trials or [r["name"] for r in trials[0]] == [r["name"] for r in q.layers]:
            trials.append(q.layers)
    return {key: {v: mean_layers(t) for v, t in sorted(designs.items())} for key, designs in sorted(found.items())}


def layers_stem(preset: str, data: str, protocol: str) -> str:
    """The figures' file-name stem of one (preset, data, protocol): `quant_layers_<preset>_<data>_<protocol>`, with
    characters a file name should not hold (a changed protocol's `+`, `=`, `,`, brackets) as `-`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"quant_layers_{preset}_{data}_{protocol}")


def layers_caption(n_images: int | None) -> str:
    return (
        "Per deploy layer (graph order), with only that layer quantized: the SQNR of its output (weights and input "
        "quantized), of the weights alone, of its input alone, and of the logits; the fused kernel's max |w| and std; "
        "the input range seen in calibration and the range its quantizer represents. Mean over the design's seeds; "
        f"{n_images or '?'} validation images; float layers (kept out of quantization) have no SQNR. All designs of "
        "one preset, data set and protocol share the y axes."
    )

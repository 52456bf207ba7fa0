"""The quantization ablation: per block design, float top1, INT8 top1 and the drop over the seeds, each paired by
seed against the baseline (`full`) with Holm-corrected verdicts, beside the QARepVGG paper's numbers."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .ablation import compare_variants, interval, seed_list
from .reference import paper_reference
from .stats import ALPHA, mean_ci
from .tables import to_markdown

QUANT_TITLE = "INT8 post-training quantization: top1 and drop (float minus INT8) per block design"
QUANT_DIGITS = {"float top1": 2, "INT8 top1": 2, "drop": 2, "drop std": 2, "INT8 Δ vs baseline": 2,
                "INT8 p Holm": 3, "drop Δ vs baseline": 2, "drop p Holm": 3, "INT8 speedup": 2,
                "reference float": 1, "reference INT8": 1, "reference drop": 1}  # fmt: skip
DROP_WORDS = {"better": "smaller drop", "worse": "larger drop"}  # the verdict on -drop, said of the drop


def quant_table(df: pd.DataFrame, baseline: str = "full") -> pd.DataFrame:
    """One row per (preset, data, variant) with INT8 results: n, float and INT8 top1, the drop with its 95% t
    interval, the INT8 top1 and the drop paired by seed against `baseline` (Holm-corrected verdicts over that
    preset and data), the INT8/float speed ratio in onnxruntime, and the QARepVGG paper's numbers (source label)."""
    done = df[(df["status"] == "completed") & df["int8_top1"].notna() & df["search_study"].isna()]
    rows = []
    for (preset, data), part in done.groupby(["preset", "data"], dropna=False, sort=True):
        part = part.assign(neg_drop=-part["quant_drop"])
        by_int8 = compare_variants(part, baseline, "int8_top1", paper=False)
        by_drop = compare_variants(part, baseline, "neg_drop", paper=False)
        for variant in sorted(part["variant"].unique(), key=lambda v: (v != baseline, v != "qarepvgg", v)):
            trials = part[part["variant"] == variant]
            head = {"preset": preset, "data": data, "variant": variant}
            rows.append(head | _cells(trials) | _versus(by_int8, by_drop, variant, baseline) | _reference(variant))
    return pd.DataFrame(rows)


def _cells(trials: pd.DataFrame) -> dict[str, Any]:
    drop = mean_ci(trials["quant_drop"])
    return {
        "n": drop["n"],
        "seeds": seed_list(trials),
        "float top1": trials["deploy_top1"].fillna(trials["top1"]).mean(),
        "INT8 top1": trials["int8_top1"].mean(),
        "drop": drop["mean"],
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
        "Float top1: the deploy form in PyTorch; INT8 top1: its static INT8 quantization (onnxruntime QDQ, int8 "
        "weights per channel, uint8 activations calibrated on a fixed set of training images), on the same "
        f"validation images. drop = float - INT8 top1; 95% t interval over the seeds. Δ vs {baseline}: paired by "
        f"seed, two-sided paired t-test, Holm-corrected over the variants; verdict at α={ALPHA} (for the drop: "
        "smaller/larger drop). INT8 speedup: INT8 over float images/s, both in onnxruntime on the CPU under one "
        "protocol. Reference: RepVGG-A0 and QARepVGG-A0 on ImageNet, 224 px, from Chu et al. 2023 (label qarepvgg); "
        f"{claim}. Our numbers come from the data, model and recipe of the run, not the paper's."
    )


def quant_markdown(df: pd.DataFrame, baseline: str = "full") -> str:
    """The quantization table as markdown with its caption; "" when no trial has INT8 results."""
    table = quant_table(df, baseline)
    if table.empty:
        return ""
    return f"{QUANT_TITLE}\n\n{to_markdown(table, QUANT_DIGITS)}\n\n{quant_caption(baseline)}"

"""The ablation tables (the paper's Tables 6 and 7): each variant's top1 over its seeds with a confidence interval,
and its paired difference from the baseline (`full`) with a Holm-corrected verdict, beside the paper's numbers."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .reference import paper_reference, reference_row, table_variants
from .sequential import SequentialDesign, sequential_caption, sequential_comparisons
from .stats import (
    ALPHA,
    MIN_EFFECT,
    NO_VERDICT,
    POWER,
    direction,
    fixed_seed_rule,
    mean_ci,
    paired_comparisons,
    smallest_exact_n,
)
from .tables import to_markdown

ABLATION_TITLES = {"table6": "Table 6: branches (identity, 1x1)", "table7": "Table 7: block designs"}
ABLATION_DIGITS = {"top1 mean": 2, "top1 std": 2, "Δ vs baseline": 2, "p Holm": 3, "deploy GMACs": 3,
                   "reference top1": 2, "reference Δ": 2, "seeds for ±0.5": 0, "INT8 drop": 2, "pairs": 0,
                   "next n": 0}  # fmt: skip


def ablation_tables(
    df: pd.DataFrame, baseline: str = "full", design: SequentialDesign | None = None
) -> dict[str, pd.DataFrame]:
    """Tables 6 and 7, one row per (preset, data, variant): top1 over the seeds (n, mean, std, 95% t interval),
    the paired difference from `baseline` by seed (mean, 95% CI, Holm-corrected p over every comparison of that
    preset and data, verdict, seeds needed for a 0.5-point difference), and the paper's numbers with labels.
    `design`: a sequential sweep's; its verdicts, repeated intervals and next seeds replace the fixed-seed ones."""
    rows: dict[str, list[dict[str, Any]]] = {"table6": [], "table7": []}
    plain = df[df["search_study"].isna()]  # search candidates vary widths, not the block: not an ablation
    known = set(table_variants("table6")) | set(table_variants("table7"))
    for (preset, data), part in plain[plain["variant"].isin(known)].groupby(
        ["preset", "data"], dropna=False, sort=True
    ):
        compared = compare_variants(part, baseline, design=design)
        for table, table_rows in rows.items():
            for v in table_variants(table):
                trials = part[part["variant"] == v]
                if trials.empty:
                    continue
                head = {"preset": preset, "data": data, "variant": v, **_flags(table, v)}
                table_rows.append(head | _seed_cells(trials) | _versus(compared, v, baseline) | _reference(table, v))
    return {k: pd.DataFrame(r) for k, r in rows.items()}


def _done(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[(trials["status"] == "completed") & trials["top1"].notna()]


def _flags(table: str, variant: str) -> dict[str, str]:
    if table != "table6":
        return {}
    t6 = paper_reference()["table6"][variant]
    return {"identity": "yes" if t6["identity"] else "no", "1x1": "yes" if t6["conv1x1"] else "no"}


def _seed_cells(trials: pd.DataFrame) -> dict[str, Any]:
    done = _done(trials)
    ci = mean_ci(done["top1"])
    forms = sorted(set(done["form"].dropna()))
    return {
        "n": ci["n"],
        "top1 mean": ci["mean"],
        "top1 std": ci["std"],
        "top1 95% CI": interval(ci["ci_low"], ci["ci_high"]),
        "seeds": seed_list(done),
        "left out": len(trials) - len(done),
        "deploy GMACs": done["deploy_macs"].mean() / 1e9 if len(done) else None,
        "form": "/".join(forms) or None,
        **({"INT8 drop": done["quant_drop_used"].mean()} if done["quant_drop_used"].notna().any() else {}),  # quant.ptq
    }


def seed_list(trials: pd.DataFrame) -> str:
    """The seeds behind a table row, sorted: `0,1,2`."""
    return ",".join(str(s) for s in trials["seed"].dropna().sort_values())


def interval(low: Any, high: Any, signed: bool = False) -> str | None:
    """A 95% interval as table text (`94.64 .. 98.86`; `signed`: `-1.51 .. +1.69`), None when it has no bounds."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return None
    return f"{low:+.2f} .. {high:+.2f}" if signed else f"{low:.2f} .. {high:.2f}"


def compare_variants(
    part: pd.DataFrame, baseline: str, value: str = "top1", paper: bool = True, design: SequentialDesign | None = None
) -> pd.DataFrame | None:
    """Every variant of `part`'s completed trials against the baseline on `value`, paired by seed, Holm-corrected
    together, with the paper's difference beside each (`paper`), indexed by variant; None without a baseline.
    With a sequential `design`: `sequential.sequential_comparisons`, plus the paper's difference and direction."""
    done = _done(part)
    if baseline not in set(done["variant"]):
        return None
    diffs = {v: paper_diff(v, baseline) for v in done["variant"].unique()} if paper else None
    if design is None:
        return paired_comparisons(done, by="variant", baseline=baseline, value=value, paper=diffs).set_index("variant")
    out = sequential_comparisons(done, by="variant", baseline=baseline, value=value, design=design)
    out["paper_diff"] = [(diffs or {}).get(v) for v in out["variant"]]
    out["direction"] = [direction(v, p) for v, p in zip(out["verdict"], out["paper_diff"])]
    return out.set_index("variant")


VERSUS = ["Δ vs baseline", "Δ 95% CI", "p Holm", "verdict", "seeds for ±0.5", "reference Δ", "direction"]
SEQUENTIAL_VERSUS = ["Δ vs baseline", "Δ 95% CI", "p Holm", "verdict", "pairs", "next n", "reference Δ", "direction"]


def _versus(compared: pd.DataFrame | None, variant: str, baseline: str) -> dict[str, Any]:
    sequential = compared is not None and "next_n" in compared.columns  # pairs used and asked for, no sample size
    cells = dict.fromkeys(SEQUENTIAL_VERSUS if sequential else VERSUS)
    if variant == baseline:
        return cells | {"verdict": "baseline"}
    if compared is None or variant not in compared.index:
        return cells | {"verdict": f"no completed {baseline}"}
    c = compared.loc[variant]
    cells |= {
        "Δ vs baseline": c["mean_diff"],
        "Δ 95% CI": interval(c["ci_low"], c["ci_high"], signed=True),
        "p Holm": c["p_holm"],
        "verdict": c["verdict"],
        "reference Δ": c["paper_diff"],
        "direction": c["direction"],
    }
    if sequential:
        return cells | {"pairs": int(c["n_pairs"]), "next n": int(c["next_n"]) if pd.notna(c["next_n"]) else None}
    return cells | {"seeds for ±0.5": int(c["seeds_needed"]) if pd.notna(c["seeds_needed"]) else None}


def paper_diff(variant: str, baseline: str) -> float | None:
    """The paper's top1 difference of `variant` from `baseline`, where it shows both numbers."""
    for table in ("table6", "table7"):
        ours, base = reference_row(table, variant)["top1"], reference_row(table, baseline)["top1"]
        if ours is not None and base is not None:
            return ours - base
    return None


def _reference(table: str, variant: str) -> dict[str, Any]:
    ref = reference_row(table, variant)
    return {
        "reference top1": ref["top1"],
        "reference source": ref["source"] if ref["top1"] is not None else None,
        "reference note": ref["note"],
    }


def ablation_markdown(df: pd.DataFrame, baseline: str = "full", design: SequentialDesign | None = None) -> str:
    """Tables 6 and 7 as markdown with their caption (for a sweep's closing summary); "" if no ablation.
    `design`: a sequential sweep's (its verdicts and caption)."""
    tables = ablation_tables(df, baseline, design)
    parts = [f"{ABLATION_TITLES[k]}\n\n{to_markdown(t, ABLATION_DIGITS)}" for k, t in tables.items() if not t.empty]
    return "\n\n".join([*parts, reference_caption(baseline, tables, design)]) if parts else ""


def reference_caption(
    baseline: str = "full", tables: dict[str, pd.DataFrame] | None = None, design: SequentialDesign | None = None
) -> str:
    """What the statistics and the reference columns of the ablation tables are."""
    one_seed = tables is not None and all(t.empty or (t["n"] <= 1).all() for t in tables.values())
    caution = f" With one seed per variant: {NO_VERDICT}; the table orders nothing." if one_seed else ""
    if design is not None:
        variants = {v for t in (tables or {}).values() if not t.empty for v in t["variant"]} - {baseline}
        m = max(1, len(variants))  # one Holm family per preset and data, across both tables
        return f"{sequential_caption(baseline, design, m)} {_reference_text()}"
    return (
        f"top1 95% CI: t interval over the seeds (n < 10). Δ vs baseline: this variant minus {baseline}, paired by "
        f"seed (same data order and initialization), mean and 95% t interval of the paired differences (the "
        f"estimate). p Holm: the test, {fixed_seed_rule(ALPHA)}; Holm-corrected over all comparisons "
        f"against {baseline}; verdict at α={ALPHA}. seeds for ±0.5: seeds a paired t-test would need to detect a "
        f"{MIN_EFFECT}-point difference with {POWER:.0%} power, from the observed spread of the paired differences, "
        f"and at least {smallest_exact_n(ALPHA)} (shown where the verdict is indistinguishable). {_reference_text()}"
        + caution
    )


def _reference_text() -> str:
    return (
        f"reference top1: {paper_reference()['ablation_setting']}, with each number's source label (paper-text, "
        "third-party, derived; numbers the shared reference marks unverified are not shown); reference Δ and "
        "direction: the paper's difference and whether ours points the same way (undetermined without a better or "
        "worse verdict)."
    )

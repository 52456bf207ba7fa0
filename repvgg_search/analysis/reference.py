"""The paper's published numbers (analysis/paper_reference.yaml), with their source labels."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

REFERENCE_FILE = Path(__file__).with_name("paper_reference.yaml")
# Only these labels are numbers someone has checked; anything else is never shown as a reference number.
SHOWN_SOURCES = ("paper-table", "paper-text", "third-party", "derived")


@functools.lru_cache(maxsize=1)
def paper_reference() -> dict[str, Any]:
    """The reference data as loaded from the YAML file (cached; treat as read-only)."""
    with REFERENCE_FILE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def reference_row(table: str, variant: str) -> dict[str, Any]:
    """Reference top1, source label and note for one variant of "table6" or "table7" (top1 None if not shown)."""
    entry = paper_reference()[table].get(variant)
    if entry is None:
        return {"top1": None, "source": None, "note": ""}
    shown = entry.get("source") in SHOWN_SOURCES
    return {
        "top1": entry.get("top1") if shown else None,
        "source": entry.get("source"),
        "note": entry.get("note", ""),
    }


def table_variants(table: str) -> list[str]:
    """Our variant names in the paper's row order for "table6" or "table7"."""
    return list(paper_reference()[table])


def figure1_points() -> pd.DataFrame:
    """The paper's published top1 vs speed points (RepVGG presets and baselines) on its GTX 1080Ti."""
    ref = paper_reference()
    rows = []
    for family, section in (("RepVGG", "models"), ("baseline", "baselines")):
        for name, e in ref[section].items():
            if e.get("top1") is None or e.get("speed") is None or e.get("source") not in SHOWN_SOURCES:
                continue
            rows.append(
                {
                    "name": name,
                    "family": family,
                    "top1": float(e["top1"]),
                    "images_per_s": float(e["speed"]),
                    "params_m": e.get("params"),
                    "gmacs": e.get("macs"),
                    "epochs": e.get("epochs", 120),
                    "source": e["source"],
                }
            )
    return pd.DataFrame(rows)

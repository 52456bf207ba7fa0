"""Regenerate tests/golden/complexity.json: `python tests/make_golden.py` (review the diff before committing)."""

from __future__ import annotations

import json
from pathlib import Path

from repvgg_search.models import create_model, list_models, reparameterize_model
from repvgg_search.profile import MAC_CONVENTION, complexity

GOLDEN = Path(__file__).parent / "golden" / "complexity.json"


def golden_numbers() -> dict:
    """fvcore MACs and params of every preset (variant full, 1000 classes, 3x224x224), both forms."""
    out = {"convention": MAC_CONVENTION, "input_size": [3, 224, 224], "num_classes": 1000, "presets": {}}
    for name in list_models():
        train = create_model(name).eval()
        forms = {"train": train, "deploy": reparameterize_model(train)}
        out["presets"][name] = {form: {k: complexity(m)[k] for k in ("macs", "params")} for form, m in forms.items()}
    return out


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(golden_numbers(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")

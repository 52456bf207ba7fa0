"""Per-image paired analysis: a trial's per-image correctness on the validation set as a packed bit file, and a
paired test between two variants over the test images, pooled over seeds, with what each kind of test concludes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import BadInputError
from .bits import CORRECT_FILE, MAGIC, order_digest, pack_correct, read_correct, write_correct
from .stats import ALPHA, holm, sign_flip_pvalues

__all__ = [
    "CORRECT_FILE",
    "MAGIC",
    "order_digest",
    "pack_correct",
    "read_correct",
    "write_correct",
]  # the bit file lives in bits.py

EXACT_MAX_IMAGES = 16  # images that differ at all: up to here the sign-flip p is exact, beyond it normal
CLUSTERED = "clustered McNemar (images as clusters)"
EXACT = "sign-flip exact over images"
PER_IMAGE_COLUMNS = ["baseline", "seeds", "images", "variant_only", "baseline_only", "mean_diff", "ci_low",
                     "ci_high", "z", "p", "p_holm", "test"]  # fmt: skip
PER_IMAGE_CAPTION = (
    "Per-image test: for each seed, the images one variant classifies right and the other wrong; pooled over the "
    "seeds image by image (each image's count over the seeds is one observation, so an image that is hard in every "
    "seed counts once: the clustered McNemar test of Durkalski et al., Stat. Med. 2003; exact sign-flip over the "
    f"images when at most {EXACT_MAX_IMAGES} differ), Holm-corrected over the comparisons. What each test concludes: "
    "the per-seed verdict (differences of top1 paired by seed) generalizes over training runs: it says whether a new "
    "seed of the variant would be expected to beat a new seed of the baseline. The per-image test generalizes over "
    "test images given these trained networks: it says whether these particular runs differ on images drawn like the "
    'validation set. Per-example errors are nearly independent across images (Jordan, ICLR 2024, "On the variance '
    'of neural network training with respect to test sets and distributions"), which makes the per-image test far '
    "more powerful; a per-image difference under an undecided per-seed verdict says these runs differ, not that the "
    "variant trains better."
)


def _matrix(correct: np.ndarray | list, name: str) -> np.ndarray:
    x = np.asarray(correct, dtype=bool)
    if x.ndim != 2:
        raise BadInputError(f"{name}: per-image correctness must be (seeds, images), got shape {x.shape}")
    return x


def per_image_test(variant: np.ndarray, baseline: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Paired test of two variants' per-image correctness, (seeds, images) each, rows paired by seed.

    Each image contributes D_i = sum over seeds of (variant right - baseline right); under H0 (the two are
    exchangeable image by image) D_i is symmetric about 0. The statistic z = sum D_i / sqrt(sum D_i^2) is McNemar's
    (1947) with one seed and, with several, the clustered-data McNemar test of Durkalski, Palesch, Lipsitz & Rust
    (Stat. Med. 2003, 22:2417-2428), which stays valid when an image's outcomes correlate across seeds (they do:
    hard images are hard for every seed). With at most EXACT_MAX_IMAGES images with D_i != 0 the p-value is the
    exact sign-flip one over those images. `mean_diff`: variant minus baseline top1 in points averaged over the
    seeds, with a normal interval from the spread of D_i over images.
    """
    v, b = _matrix(variant, "variant"), _matrix(baseline, "baseline")
    if v.shape != b.shape:
        raise BadInputError(f"per-image correctness shapes differ: variant {v.shape}, baseline {b.shape}")
    seeds, images = v.shape
    if seeds == 0 or images < 2:
        raise BadInputError(f"per-image test needs at least one seed and two images, got {v.shape}")
    d = v.astype(np.int64) - b.astype(np.int64)
    per_image = d.sum(axis=0)
    total, squares = float(per_image.sum()), float((per_image**2).sum())
    mean = total / images
    sd = math.sqrt(max(0.0, (squares - images * mean**2) / (images - 1)))
    half = sps.norm.isf((1 - confidence) / 2) * sd / math.sqrt(images)
    differ = per_image[per_image != 0].astype(float)
    z = total / math.sqrt(squares) if squares else 0.0
    if len(differ) <= EXACT_MAX_IMAGES:
        p, test = (float(sign_flip_pvalues(differ[None, :])[0]) if len(differ) else 1.0), EXACT
    else:
        p, test = float(2 * sps.norm.sf(abs(z))), CLUSTERED
    scale = 100.0 / seeds  # per-image counts summed over seeds -> top1 points of one seed, on average
    return {
        "seeds": seeds,
        "images": images,
        "variant_only": int((d == 1).sum()),
        "baseline_only": int((d == -1).sum()),
        "mean_diff": mean * scale,
        "ci_low": float((mean - half) * scale),
        "ci_high": float((mean + half) * scale),
        "z": z,
        "p": p,
        "test": test,
    }


def per_image_comparisons(
    correct: Mapping[Any, Mapping[Any, np.ndarray]], baseline: Any = "full", alpha: float = ALPHA
) -> pd.DataFrame:
    """Every variant against the baseline on per-image correctness (`correct[variant][seed]`: one bool array over the
    validation images), over the seeds both have, Holm-corrected over the comparisons; `p_holm < alpha` is a
    difference on these runs' test distribution (see PER_IMAGE_CAPTION for what it does and does not say)."""
    if baseline not in correct:
        raise BadInputError(f"sweep.baseline={baseline!r} has no per-image records; variants present: {list(correct)}")
    base = correct[baseline]
    rows = []
    for variant, by_seed in correct.items():
        if variant == baseline:
            continue
        seeds = sorted(set(by_seed) & set(base))
        if not seeds:
            rows.append({"variant": variant, "baseline": baseline, "seeds": 0, "p": None})
            continue
        test = per_image_test(np.stack([by_seed[s] for s in seeds]), np.stack([base[s] for s in seeds]))
        rows.append({"variant": variant, "baseline": baseline, **test})
    out = pd.DataFrame(rows, columns=["variant", *PER_IMAGE_COLUMNS])
    out["p_holm"] = holm(out["p"].tolist()) if len(out) else []
    out["p_holm"] = out["p_holm"].astype(float)
    return out

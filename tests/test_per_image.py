"""Per-image correctness files (real files: round trip, size, refusals) and the per-image paired test against
McNemar's statistic, the exact binomial test, and the clustered form's behaviour on repeated seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from repvgg_search.analysis.per_image import (
    CLUSTERED,
    CORRECT_FILE,
    EXACT,
    PER_IMAGE_CAPTION,
    PER_IMAGE_COLUMNS,
    order_digest,
    pack_correct,
    per_image_comparisons,
    per_image_test,
    read_correct,
    write_correct,
)
from repvgg_search.errors import BadInputError


def test_a_50k_image_file_round_trips_in_about_6_kb(tmp_path: Path) -> None:
    correct = np.random.default_rng(0).random(50_000) < 0.76
    order = order_digest(f"val/n{i:08d}.JPEG" for i in range(50_000))
    path = write_correct(tmp_path / CORRECT_FILE, correct, order)
    assert 6_250 < path.stat().st_size < 6_400  # 6,250 bytes of bits and a header of about 80
    assert (read_correct(path, images=50_000, order=order) == correct).all()
    assert [p.name for p in tmp_path.iterdir()] == [CORRECT_FILE]  # no temporary file left behind
    odd = np.array([True, False, True])  # a count that does not fill its last byte
    assert read_correct(write_correct(tmp_path / "odd.bits", odd, "x")).tolist() == [True, False, True]


def test_a_reader_refuses_files_that_do_not_match(tmp_path: Path) -> None:
    correct = np.ones(1000, dtype=bool)
    path = write_correct(tmp_path / CORRECT_FILE, correct, order_digest(range(1000)))
    with pytest.raises(BadInputError, match="holds 1000 images, expected 999"):
        read_correct(path, images=999)
    with pytest.raises(BadInputError, match="image order"):
        read_correct(path, order=order_digest(reversed(range(1000))))
    torn = tmp_path / "torn.bits"
    torn.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BadInputError, match="truncated"):
        read_correct(torn)
    other = tmp_path / "other.bits"
    other.write_bytes(b"not a bit file at all")
    with pytest.raises(BadInputError, match="not a per-image correctness file"):
        read_correct(other)
    with pytest.raises(BadInputError, match="flat array of booleans"):
        pack_correct(np.array([0, 1, 2]), "x")
    assert order_digest([1, 2, 3]) != order_digest([1, 3, 2]) and len(order_digest([1])) == 16


def _pair(rng: np.random.Generator, seeds: int, images: int, acc_v: float, acc_b: float):
    return rng.random((seeds, images)) < acc_v, rng.random((seeds, images)) < acc_b


def test_one_seed_is_mcnemar() -> None:
    v, b = _pair(np.random.default_rng(1), 1, 2_000, 0.80, 0.77)
    only_v, only_b = int((v & ~b).sum()), int((~v & b).sum())
    out = per_image_test(v, b)
    assert (out["variant_only"], out["baseline_only"]) == (only_v, only_b) and out["test"] == CLUSTERED
    chi2 = (only_v - only_b) ** 2 / (only_v + only_b)  # McNemar (1947), no continuity correction
    assert out["z"] ** 2 == pytest.approx(chi2) and out["p"] == pytest.approx(sps.chi2.sf(chi2, 1))
    assert out["mean_diff"] == pytest.approx(100 * (v.mean() - b.mean()))


def test_few_discordant_images_give_the_exact_binomial_test() -> None:
    v, b = np.ones((1, 50), dtype=bool), np.ones((1, 50), dtype=bool)
    b[0, :9] = False  # 9 images only the variant gets right
    v[0, 10] = False  # 1 only the baseline gets right
    out = per_image_test(v, b)
    assert out["test"] == EXACT and (out["variant_only"], out["baseline_only"]) == (9, 1)
    assert out["p"] == pytest.approx(sps.binomtest(9, 10, 0.5).pvalue)
    same = per_image_test(v, v)
    assert same["p"] == 1.0 and same["mean_diff"] == 0.0 and same["z"] == 0.0


def test_repeated_seeds_add_no_information() -> None:
    """Three copies of one seed's outcome are one image-level observation each: the clustered statistic is the
    single seed's, where pooling the seeds as independent pairs would inflate z by sqrt(3)."""
    v, b = _pair(np.random.default_rng(2), 1, 3_000, 0.80, 0.78)
    one = per_image_test(v, b)
    three = per_image_test(np.repeat(v, 3, axis=0), np.repeat(b, 3, axis=0))
    assert three["z"] == pytest.approx(one["z"]) and three["p"] == pytest.approx(one["p"])
    assert three["mean_diff"] == pytest.approx(one["mean_diff"])
    naive = (three["variant_only"] - three["baseline_only"]) / math.sqrt(three["variant_only"] + three["baseline_only"])
    assert naive == pytest.approx(math.sqrt(3) * one["z"])


def test_per_image_test_keeps_its_level_under_the_null() -> None:
    """2,000 null comparisons of 3 seeds x 500 images with image difficulty shared across seeds and variants."""
    rng = np.random.default_rng(3)
    hard = rng.random((2_000, 1, 500)) < 0.3  # images every network tends to miss
    p = []
    for h in hard:
        acc = np.where(h, 0.3, 0.95)
        p.append(per_image_test(rng.random((3, 500)) < acc, rng.random((3, 500)) < acc)["p"])
    rate = np.mean(np.array(p) < 0.05)
    assert 0.03 < rate < 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2_000)


def test_per_image_comparisons_pool_common_seeds_with_holm() -> None:
    rng = np.random.default_rng(4)
    base = {s: rng.random(800) < 0.75 for s in range(3)}
    better = {s: base[s] | (rng.random(800) < 0.3) for s in range(3)}  # fixes some of the baseline's misses
    same = {s: rng.random(800) < 0.75 for s in (0, 2, 5)}
    out = per_image_comparisons({"full": base, "better": better, "same": same, "none": {9: base[0]}})
    assert list(out.columns) == ["variant", *PER_IMAGE_COLUMNS]
    rows = out.set_index("variant")
    assert rows.loc["better", "seeds"] == 3 and rows.loc["same", "seeds"] == 2 and rows.loc["none", "seeds"] == 0
    assert rows.loc["better", "p_holm"] < 1e-10 and rows.loc["better", "mean_diff"] > 5
    assert rows.loc["better", "p_holm"] == pytest.approx(min(1.0, 2 * rows.loc["better", "p"]))
    assert math.isnan(rows.loc["none", "p_holm"])
    with pytest.raises(BadInputError, match="sweep.baseline='full'"):
        per_image_comparisons({"a": base})
    with pytest.raises(BadInputError, match="shapes differ"):
        per_image_test(np.ones((2, 10), bool), np.ones((3, 10), bool))


def test_the_caption_says_what_each_test_concludes() -> None:
    assert "generalizes over training runs" in PER_IMAGE_CAPTION
    assert "generalizes over test images given these trained networks" in PER_IMAGE_CAPTION
    assert "Jordan, ICLR 2024" in PER_IMAGE_CAPTION and "Durkalski" in PER_IMAGE_CAPTION

"""Complexity (golden numbers, the paper's table), throughput records, and the profile command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import run_cli

from repvgg_search.analysis.reference import paper_reference
from repvgg_search.models import VARIANTS, create_model, list_models, list_variants, reparameterize_model
from repvgg_search.profile import complexity, equivalence_error, throughput

GOLDEN = json.loads((Path(__file__).parent / "golden" / "complexity.json").read_text())

REFERENCE = paper_reference()
# The paper's Table 4/5 entries (RepVGG-B1g2 -> b1g2); B2g2 and B3g2 are not in the paper.
PAPER_MODELS = {name.removeprefix("RepVGG-").lower(): e for name, e in REFERENCE["models"].items()
                if e.get("source") == "paper-table"}  # fmt: skip
THIRD_PARTY = {name.removeprefix("RepVGG-").lower(): e for name, e in REFERENCE["third_party_deploy_sizes"].items()}


def _printed(value: float, digits: int) -> int:
    """A printed figure as an integer count of its last digit (8.30 -> 830), free of float rounding."""
    return round(value * 10**digits)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_golden_complexity(name):
    """fvcore's counts of both forms match the checked-in golden numbers exactly."""
    train = create_model(name).eval()
    deploy = reparameterize_model(train)
    for form, model in (("train", train), ("deploy", deploy)):
        got = complexity(model, (3, 224, 224))
        assert {k: got[k] for k in ("macs", "params")} == GOLDEN["presets"][name][form], form


@pytest.mark.parametrize("name", list_models())
def test_meta_counter_matches_golden(name):
    """The fast shape-only counter trials use gives fvcore's golden numbers for every preset, both forms."""
    with torch.device("meta"):  # no weights at all: the counter needs shapes only
        train = create_model(name).eval()
    for form, model in (("train", train), ("deploy", reparameterize_model(train))):  # fusion works on shapes too
        got = complexity(model, method="meta")
        assert {"macs": got["macs"], "params": got["params"]} == GOLDEN["presets"][name][form], form


@pytest.mark.parametrize("variant", list_variants())
@pytest.mark.parametrize("extra", [{}, {"groups": 4}, {"use_se": True}], ids=["plain", "g4", "se"])
def test_meta_counter_matches_fvcore_on_every_variant(variant, extra):
    train = create_model("a0", variant=variant, num_classes=10, **extra).eval()
    forms = [train] + ([reparameterize_model(train)] if VARIANTS[variant].reparameterizable else [])
    for model in forms:
        fv, meta = complexity(model, (3, 32, 32)), complexity(model, (3, 32, 32), method="meta")
        assert (fv["macs"], fv["params"], fv["by_operator"]) == (meta["macs"], meta["params"], meta["by_operator"])


def test_the_paper_table_covers_the_presets_it_prints():
    assert set(PAPER_MODELS) == set(list_models()) - {"b2g2", "b3g2", "d2se"}
    assert REFERENCE["printed_precision"]["macs"] == 1 and REFERENCE["printed_precision"]["params"] == 2


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_deploy_macs_agree_with_the_paper_at_its_printed_precision(name):
    """fvcore's count rounded to the paper's one decimal is the paper's figure (A0: 1.3615 -> 1.4)."""
    digits = REFERENCE["printed_precision"]["macs"]
    macs = GOLDEN["presets"][name]["deploy"]["macs"]
    assert (macs * 10**digits + 5 * 10**8) // 10**9 == _printed(PAPER_MODELS[name]["macs"], digits)


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_deploy_params_are_the_papers_figures_truncated(name):
    """The paper's two-decimal params are our counts truncated, not rounded, for every preset it prints (A0:
    8,309,384 -> 8.30; rounded that is 8.31, mmpretrain's figure), so the counts agree with both tables."""
    digits = REFERENCE["printed_precision"]["params"]
    params = GOLDEN["presets"][name]["deploy"]["params"]
    assert params * 10**digits // 10**6 == _printed(PAPER_MODELS[name]["params"], digits)
    third = REFERENCE["third_party_precision"]["params"]
    assert (params * 10**third + 5 * 10**5) // 10**6 == _printed(THIRD_PARTY[name]["params"], third)


def test_rounded_params_agree_with_the_paper_only_where_truncation_and_rounding_coincide():
    digits = REFERENCE["printed_precision"]["params"]
    rounded = {n for n, e in PAPER_MODELS.items()
               if (GOLDEN["presets"][n]["deploy"]["params"] * 10**digits + 5 * 10**5) // 10**6
               == _printed(e["params"], digits)}  # fmt: skip
    assert rounded == {"b1g2", "b3"}


@pytest.mark.parametrize("name", sorted(THIRD_PARTY))
def test_deploy_macs_are_within_002_gmacs_of_mmpretrains_table(name):
    """mmpretrain's two-decimal MACs (third-party) run 0 to 0.02 G above fvcore's count (its counter counts more
    than convs, BN and the head); the paper's own table is the reference above."""
    assert abs(GOLDEN["presets"][name]["deploy"]["macs"] / 1e9 - THIRD_PARTY[name]["macs"]) <= 0.02


def test_complexity_counts_grouped_convs_and_leaves_model_alone():
    model = create_model("a0", num_classes=10, groups=4).train()
    got = complexity(model, (3, 32, 32))
    assert model.training and got["params"] == sum(p.numel() for p in model.parameters())
    dense = complexity(create_model("a0", num_classes=10), (3, 32, 32))
    assert got["macs"] < dense["macs"] and got["by_operator"]["conv"] < dense["by_operator"]["conv"]


def test_throughput_record():
    model = reparameterize_model(create_model("a0", num_classes=10).eval())
    rec = throughput(model, batch_size=4, input_size=(3, 32, 32), device="cpu", warmup=1, iters=3)
    for key in ("images_per_s", "latency_ms", "latency_ms_iqr", "device_name", "threads", "batch_size", "dtype"):
        assert key in rec
    assert rec["images_per_s"] > 0 and rec["device"] == "cpu" and rec["input_size"] == [3, 32, 32]
    assert rec["dtype"] == "float32" and rec["peak_memory_mb"] is None  # the CPU reports no peak memory


def test_throughput_bfloat16_and_channels_last():
    model = reparameterize_model(create_model("a0", num_classes=10).eval())
    rec = throughput(model, batch_size=2, input_size=(3, 32, 32), dtype="bfloat16", channels_last=True, iters=2)
    assert rec["dtype"] == "bfloat16" and rec["channels_last"]


def test_equivalence_error_is_zero_for_identical_models():
    model = create_model("a0", num_classes=10).eval()
    err = equivalence_error(model, model, torch.randn(1, 3, 32, 32))
    assert err["max_abs_error"] == 0.0


@pytest.mark.slow
def test_profile_command_prints_both_forms():
    out = run_cli("repvgg_search.profile", "model=a0", "variant=post_bn", "speed.batch_size=2", "speed.input_size=32",
                  "speed.iters=2", timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "deploy" in out.stdout and "8.31" in out.stdout and "post_bn" in out.stdout


@pytest.mark.slow
def test_profile_command_marks_relu_in_branches():
    out = run_cli("repvgg_search.profile", "model=a0", "variant=relu_in_branches", "speed.batch_size=1",
                  "speed.input_size=32", "speed.iters=1", timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "not re-parameterizable" in out.stdout


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.a=-1"], "width multiplier a must be a finite number > 0"),
        (["model.groups=3", "model.name=b1"], "groups=3 does not divide"),
        (["speed.dtype=int8"], "speed.dtype='int8' is not allowed; allowed: float32"),
        (["device=cuda:3"], "no CUDA device is visible"),
    ],
)
def test_profile_command_bad_input(overrides, match):
    out = run_cli("repvgg_search.profile", *overrides, timeout=300)
    assert out.returncode == 2 and match in out.stderr, out.stderr

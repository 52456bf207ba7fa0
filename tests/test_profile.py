"""Complexity (golden numbers, the paper's table), throughput records, and the profile command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import run_cli

from repvgg_search.models import VARIANTS, create_model, list_models, list_variants, reparameterize_model
from repvgg_search.profile import complexity, equivalence_error, throughput

GOLDEN = json.loads((Path(__file__).parent / "golden" / "complexity.json").read_text())

# Deploy-form sizes from shared/reference/repvgg_paper.yaml, two-decimal figures: params (M), MACs (G).
# Source labels as there: third-party = mmpretrain's table of the authors' converted weights; derived = counted.
PAPER_DEPLOY = {
    "a0": (8.31, 1.36, "third-party"),
    "a1": (12.79, 2.37, "third-party"),
    "a2": (25.50, 5.12, "third-party"),
    "b0": (14.34, 3.06, "third-party"),
    "b1": (51.83, 11.82, "third-party"),
    "b1g2": (41.36, 8.82, "third-party"),
    "b1g4": (36.13, 7.32, "third-party"),
    "b2": (80.32, 18.39, "third-party"),
    "b2g2": (63.96, 13.68, "derived"),
    "b2g4": (55.78, 11.34, "third-party"),
    "b3": (110.96, 26.22, "third-party"),
    "b3g2": (87.40, 19.45, "derived"),
    "b3g4": (75.63, 16.08, "third-party"),
}


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


@pytest.mark.parametrize("name", list(PAPER_DEPLOY))
def test_golden_deploy_sizes_agree_with_the_paper(name):
    params_m, gmacs, _source = PAPER_DEPLOY[name]
    deploy = GOLDEN["presets"][name]["deploy"]
    assert abs(deploy["params"] / 1e6 - params_m) <= 0.02
    assert abs(deploy["macs"] / 1e9 - gmacs) <= 0.02


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

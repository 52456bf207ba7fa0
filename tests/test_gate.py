"""The conversion gate tests the conversion, not the precision: near ties flipping under bf16 never fail it, a broken
fusion always does, and a failed gate keeps the training (a rerun gates again without training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from support import QUICK_TRIAL

from repvgg_search import checkpoints, files
from repvgg_search.config import CONF_DIR, GateConfig, register_configs
from repvgg_search.data import DataConfig, build_loaders
from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.models.blocks import RepBlock
from repvgg_search.schema import Status
from repvgg_search.training import TrainConfig, build_optimizer, build_scheduler, evaluate, train_one_epoch
from repvgg_search.trial import run_trial, settings_from_config
from repvgg_search.trial.gate import agreement, check_forms, conversion_gate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained():
    """A small RepVGG trained two epochs on digits, and the validation loader."""
    torch.manual_seed(0)
    model = create_model("a0", num_classes=10, a=0.25, b=0.25, depths=(1, 2, 2, 2, 1))
    train_loader, val_loader, _ = build_loaders(DataConfig(), device=CPU, seed=0)
    cfg = TrainConfig(epochs=2)
    optimizer = build_optimizer(model, cfg, 64)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    for epoch in range(2):
        train_one_epoch(model, train_loader, optimizer, scheduler, cfg=cfg, device=CPU, epoch=epoch, seed=0,
                        log=lambda line: None)  # fmt: skip
    return model.eval(), val_loader


def with_near_ties(model: torch.nn.Module) -> torch.nn.Module:
    """Class 1's classifier row a tiny random perturbation of class 0's: the two logits nearly tie on every image."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        w, b = model.linear.weight, model.linear.bias
        w[1] = w[0] + 1e-3 * w[0].norm() * torch.randn(w.shape[1], generator=gen) / w.shape[1] ** 0.5
        b[1] = b[0]
    return model


def test_near_ties_flip_under_bf16_but_never_fail_the_gate(trained):
    model, val = trained
    model = with_near_ties(model)
    deploy = reparameterize_model(model)
    gate = conversion_gate(model, deploy, val, CPU, GateConfig())
    assert gate.passed and gate.max_rel_error < 1e-5 and gate.dtype == "float32" and not gate.tf32
    train_bf16 = evaluate(model, val, device=CPU, amp="bf16", keep=True)
    bf16 = agreement(train_bf16, evaluate(deploy, val, device=CPU, amp="bf16", keep=True), "bf16")
    assert bf16.differ > 0, "the constructed ties must flip some images, or this test tests nothing"
    # Only close calls flip: every flipped image's margin is below the median margin of all images (bf16's 8
    # significant bits, accumulated through the network, decide them; how far that reaches depends on the CPU's
    # bf16 kernels, so the bound is relative to this very evaluation, not a number of logit units).
    assert bf16.max_margin < float(train_bf16["margin"].median())
    assert len(bf16.examples) == min(bf16.differ, 20)
    forms = check_forms(model, val, CPU, model.arch, "bf16", GateConfig())  # what a trial runs
    assert forms.passed and forms.deploy is not None and forms.conversion.agreement.differ == bf16.differ
    # float64: only the rounding of the fused float32 weights is left (no float32 accumulation error).
    exact = conversion_gate(model, deploy, val, CPU, GateConfig(dtype="float64", max_rel_error=1e-6))
    assert exact.passed and exact.max_rel_error <= gate.max_rel_error


def _broken(monkeypatch, scale: float = 1e-3) -> None:
    """A fusion that is wrong by a relative `scale` in its kernels: what a bug in a fusion rule looks like."""
    fused = RepBlock.fused_kernel_bias

    def wrong(self):
        kernel, bias = fused(self)
        return kernel * (1 + scale), bias

    monkeypatch.setattr(RepBlock, "fused_kernel_bias", wrong)


@pytest.mark.parametrize("variant", ["full", "acb", "post_bn", "diracnet", "qarepvgg"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_broken_fusion_always_fails_the_gate(trained, monkeypatch, variant, dtype):
    _, val = trained
    torch.manual_seed(0)
    model = create_model("a0", variant=variant, num_classes=10, a=0.25, b=0.25, depths=(1, 2, 2, 2, 1)).eval()
    _broken(monkeypatch)
    gate = conversion_gate(model, reparameterize_model(model), val, CPU, GateConfig(dtype=dtype))
    assert not gate.passed and gate.max_rel_error > gate.bound


def _trial_settings(tmp_path: Path):
    register_configs()
    overrides = [*QUICK_TRIAL, "model.depths=[1,2,2,2,1]", "train.epochs=2", "speed.rounds=2"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return settings_from_config(compose("train", overrides=overrides))


@pytest.mark.slow
def test_a_failed_gate_keeps_the_training_and_a_rerun_does_not_retrain(tmp_path, monkeypatch):
    settings, folder = _trial_settings(tmp_path), tmp_path / "trial"
    with monkeypatch.context() as patch:
        _broken(patch)
        failed = run_trial(settings, folder, progress=False)
    assert failed.status is Status.FAILED and failed.error.startswith("conversion gate failed: ")
    assert failed.metrics.top1 > 0 and failed.metrics.epochs == 2  # the train form's metrics
    assert not failed.conversion.gate.passed and failed.speed is None and "speed" not in failed.to_json()
    assert checkpoints.load_checkpoint(folder / files.CHECKPOINT)["epochs_done"] == 2
    assert json.loads((folder / files.RESULT).read_text())["status"] == "failed"
    done = run_trial(settings, folder, progress=False)  # the fusion is right again
    assert done.status is Status.COMPLETED and done.resumes == [2] and done.conversion.gate.passed
    assert len(files.read_jsonl(folder / files.METRICS)) == 2  # no epoch trained twice
    assert done.metrics.top1 == failed.metrics.top1

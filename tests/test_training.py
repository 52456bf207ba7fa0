"""Engine: lr scaling and schedule, weight-decay groups, reproducible epochs, mixup/smoothing, recipes, validation."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import pytest
import torch
import yaml
from torch import nn

from repvgg_search.config import CONF_DIR as CONF
from repvgg_search.data import DataConfig, DataError, TensorLoader, build_loaders, load_digits_split
from repvgg_search.models import create_model
from repvgg_search.training import (
    TrainConfig,
    TrainConfigError,
    build_optimizer,
    build_scheduler,
    evaluate,
    train_one_epoch,
    validate_train,
    want_progress,
)


def tiny_model(variant: str = "full") -> nn.Module:
    torch.manual_seed(0)
    return create_model("a0", variant=variant, num_classes=10, depths=(1, 2, 2, 2, 1), a=0.25, b=0.25)


@pytest.fixture(scope="module")
def digits():
    """A 320-image slice of the digits training split (10 steps of 32) with random translation, and the val split."""
    x_train, y_train, x_val, y_val, fill = load_digits_split(32, 0.2, 0)
    train = TensorLoader(x_train[:320], y_train[:320], batch_size=32, train=True, seed=0, translate=2, fill=fill)
    return train, TensorLoader(x_val, y_val, batch_size=128, train=False), len(y_val)


def _lrs(cfg: TrainConfig, steps_per_epoch: int, global_batch: int = 256) -> list[float]:
    opt = build_optimizer(tiny_model(), cfg, global_batch)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return [*lrs, opt.param_groups[0]["lr"]]


def test_warmup_then_cosine_per_iteration():
    cfg = TrainConfig(epochs=4, base_lr=0.1, warmup_epochs=1)
    lrs = _lrs(cfg, steps_per_epoch=10)
    assert lrs[:10] == pytest.approx([0.1 * (t + 1) / 10 for t in range(10)])  # linear warmup, per step
    assert lrs[10] == pytest.approx(0.1)  # the cosine starts at the peak
    assert lrs[10:] == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 30)) for t in range(31)])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # annealed to 0 after the last step
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_no_warmup_starts_at_the_peak():
    lrs = _lrs(TrainConfig(epochs=2, base_lr=0.1, warmup_epochs=0), steps_per_epoch=5)
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.0)


def test_linear_lr_scaling():
    cfg = TrainConfig(base_lr=0.1, base_batch_size=256)
    assert build_optimizer(tiny_model(), cfg, 64).param_groups[0]["lr"] == pytest.approx(0.025)
    assert build_optimizer(tiny_model(), cfg, 1024).param_groups[0]["lr"] == pytest.approx(0.4)


def test_scheduler_state_round_trips():
    cfg = TrainConfig(epochs=3, base_lr=0.1, warmup_epochs=1)
    model = tiny_model()
    opt = build_optimizer(model, cfg, 256)
    sched = build_scheduler(opt, cfg, 7)
    for _ in range(9):
        opt.step()
        sched.step()
    opt2 = build_optimizer(model, cfg, 256)
    sched2 = build_scheduler(opt2, cfg, 7)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(5):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_bn_and_bias_are_exempt_from_weight_decay():
    model = tiny_model("diracnet")  # also has per-channel alpha/beta vectors
    decay, no_decay = build_optimizer(model, TrainConfig(weight_decay=1e-4), 256).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert "linear.weight" in decayed and all(n.endswith("conv.weight") or n == "linear.weight" for n in decayed)
    assert {"linear.bias", "stage0.rbr_dense.bn.weight", "stage0.rbr_dense.bn.bias"} <= exempt
    assert all(".bn." in n or n.endswith(("bias", "alpha", "beta")) for n in exempt)
    assert len(decayed) + len(exempt) == len(names)
    both = build_optimizer(model, TrainConfig(weight_decay=1e-4, decay_bn_bias=True), 256).param_groups
    assert [g["weight_decay"] for g in both] == [1e-4, 1e-4]


def _fresh(cfg: TrainConfig, steps: int):
    model = tiny_model()
    opt = build_optimizer(model, cfg, 32)
    return model, opt, build_scheduler(opt, cfg, steps)


def test_an_epoch_is_reproducible_from_its_starting_state(digits):
    train, _, _ = digits
    cfg = TrainConfig(epochs=3, base_lr=0.1, mixup_alpha=0.2)  # mixup and translation draw random numbers
    model, opt, sched = _fresh(cfg, len(train))
    kw = {"cfg": cfg, "device": "cpu", "seed": 7}
    train_one_epoch(model, train, opt, sched, epoch=0, **kw)
    start = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
    first = train_one_epoch(model, train, opt, sched, epoch=1, **kw)
    after_first = copy.deepcopy(model.state_dict())
    torch.rand(100)  # disturb the global RNG and run another epoch before resuming
    train_one_epoch(model, train, opt, sched, epoch=2, **kw)
    model2, opt2, sched2 = _fresh(cfg, len(train))
    for obj, state in zip((model2, opt2, sched2), start):
        obj.load_state_dict(state)
    second = train_one_epoch(model2, train, opt2, sched2, epoch=1, **kw)
    timing = ("images_per_s", "seconds", "data_wait_s", "data_wait_frac")  # wall-clock figures
    assert {k: v for k, v in second.items() if k not in timing} == {k: v for k, v in first.items() if k not in timing}
    assert all(torch.equal(after_first[k], v) for k, v in model2.state_dict().items())  # bit-identical


def test_train_and_evaluate_with_mixup_and_label_smoothing(digits):
    train, val, val_size = digits
    cfg = TrainConfig(epochs=2, base_lr=0.2, warmup_epochs=0.5, mixup_alpha=0.2, label_smoothing=0.1, grad_clip=5.0)
    model = tiny_model()
    opt = build_optimizer(model, cfg, 32)
    sched = build_scheduler(opt, cfg, len(train))
    lines: list[str] = []
    for epoch in range(2):
        result = train_one_epoch(model, train, opt, sched, cfg=cfg, device="cpu", epoch=epoch, seed=0, log=lines.append)
    assert math.isfinite(result["loss"]) and result["images_per_s"] > 0 and result["lr"] == pytest.approx(0.0)
    assert any("train loss" in line for line in lines)
    model.train()
    scores = evaluate(model, val, device="cpu")
    assert scores["total"] == val_size and 0 <= scores["correct"] <= val_size
    assert scores["top1"] == pytest.approx(100 * scores["correct"] / val_size)
    assert model.training  # evaluate restores the mode it found


def test_progress_bar_and_bf16_paths_run():
    cfg = DataConfig(name="synthetic", synthetic_train_size=32, synthetic_val_size=8, batch_size=16)
    train, val, _ = build_loaders(cfg, device="cpu", seed=0)
    tcfg = TrainConfig(epochs=1, amp="bf16", log_interval=1)
    model = tiny_model()
    opt = build_optimizer(model, tcfg, 16)
    sched = build_scheduler(opt, tcfg, len(train))
    result = train_one_epoch(model, train, opt, sched, cfg=tcfg, device="cpu", epoch=0, seed=0, progress=True)
    assert result["steps"] == 2 and math.isfinite(result["loss"])
    assert evaluate(model, val, device="cpu", amp="bf16")["total"] == 8


def test_divergence_is_reported():
    cfg = DataConfig(name="synthetic", synthetic_train_size=64, synthetic_val_size=8, batch_size=32)
    train, _, _ = build_loaders(cfg, device="cpu", seed=0)
    tcfg = TrainConfig(epochs=1, base_lr=1e30, warmup_epochs=0)
    model = tiny_model()
    opt = build_optimizer(model, tcfg, 32)
    with pytest.raises(FloatingPointError, match="train.base_lr"):
        for epoch in range(3):
            train_one_epoch(
                model, train, opt, build_scheduler(opt, tcfg, 10), cfg=tcfg, device="cpu", epoch=epoch, seed=0
            )


def test_want_progress_is_off_in_batch_jobs(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert want_progress() is False


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"epochs": 0}, "train.epochs=0 must be an integer >= 1"),
        ({"base_lr": 0.0}, "train.base_lr=0.0 must be a finite number > 0"),
        ({"base_lr": float("nan")}, "train.base_lr=nan"),
        ({"base_batch_size": 0}, "train.base_batch_size=0 must be an integer >= 1"),
        ({"momentum": 1.0}, "train.momentum=1.0 must be a finite number in [0, 1)"),
        ({"weight_decay": -1e-4}, "train.weight_decay"),
        ({"label_smoothing": 1.0}, "train.label_smoothing"),
        ({"mixup_alpha": -0.2}, "train.mixup_alpha"),
        ({"warmup_epochs": 6}, "train.warmup_epochs=6 must be a finite number in [0, train.epochs=6)"),
        ({"grad_clip": 0.0}, "train.grad_clip=0.0 must be a finite number > 0, or null"),
        ({"log_interval": -1}, "train.log_interval"),
        ({"momentum": 0.0, "nesterov": True}, "train.nesterov=true needs train.momentum > 0"),
        ({"amp": "fp8"}, "train.amp='fp8' is unknown; allowed: none, bf16, fp16"),
        ({"name": ""}, "train.name"),
    ],
)
def test_train_validation_names_the_field(changes, expected):
    with pytest.raises(TrainConfigError) as info:
        validate_train(dataclasses.replace(TrainConfig(epochs=6), **changes))
    assert expected in str(info.value)


def test_fp16_needs_cuda_and_data_fields_are_checked_too():
    with pytest.raises(TrainConfigError, match="train.amp=fp16 needs a CUDA device"):
        validate_train(TrainConfig(amp="fp16"), device="cpu")
    with pytest.raises(DataError, match="data.image_size=8 must be an integer >= 32"):
        validate_train(TrainConfig(), DataConfig(image_size=8))
    validate_train(TrainConfig(amp="bf16"), DataConfig(), device="cpu")


def _load(group: str, name: str) -> dict:
    return yaml.safe_load((CONF / group / f"{name}.yaml").read_text())


@pytest.mark.parametrize("path", sorted((CONF / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_train_recipes_are_valid_train_configs(path):
    cfg = TrainConfig(**yaml.safe_load(path.read_text()))
    validate_train(cfg, device="cpu")
    assert cfg.name == path.stem


def test_proxy_recipe_is_the_default_and_paper_recipes_match_the_paper():
    assert TrainConfig(**_load("train", "proxy")) == TrainConfig()
    paper = TrainConfig(**_load("train", "paper_120ep"))
    common = {"base_lr": 0.1, "base_batch_size": 256, "momentum": 0.9, "nesterov": False}
    common |= {"weight_decay": 1e-4, "decay_bn_bias": False}
    assert dataclasses.asdict(paper) == {
        **dataclasses.asdict(TrainConfig()),
        **common,
        "name": "paper_120ep",
        "epochs": 120,
        "warmup_epochs": 0.0,
        "label_smoothing": 0.0,
        "mixup_alpha": 0.0,
        "autoaugment": False,
    }
    long = TrainConfig(**_load("train", "paper_200ep"))
    expected = {"epochs": 200, "warmup_epochs": 5, "label_smoothing": 0.1, "mixup_alpha": 0.2, "autoaugment": True}
    assert dataclasses.asdict(long) == {**dataclasses.asdict(paper), **expected, "name": "paper_200ep"}


@pytest.mark.parametrize("path", sorted((CONF / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_data_configs_load(path):
    cfg = DataConfig(**yaml.safe_load(path.read_text()))
    assert cfg.name == path.stem
    if cfg.root is None and cfg.name in ("cifar10", "cifar100", "imagenet"):
        with pytest.raises(DataError, match="data.root is not set"):
            validate_train(TrainConfig(), cfg, device="cpu")
    else:
        validate_train(TrainConfig(), cfg, device="cpu")

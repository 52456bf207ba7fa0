"""The generator: every preset builds and trains, every variant converts exactly, bad input is refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from repvgg_search.models import (
    PRESETS,
    VARIANTS,
    ArchConfig,
    ArchError,
    NotReparameterizableError,
    arch_config,
    create_model,
    list_models,
    list_variants,
    reparameterize_model,
)
from repvgg_search.models.arch import default_grouped_layers
from repvgg_search.profile import equivalence_error, randomize_bn_

PAPER_PRESETS = ["a0", "a1", "a2", "b0", "b1", "b1g2", "b1g4", "b2", "b2g2", "b2g4", "b3", "b3g2", "b3g4"]
CONVERTIBLE = [v for v, spec in VARIANTS.items() if spec.reparameterizable]


def test_registries_hold_the_vocabulary():
    assert list_models()[: len(PAPER_PRESETS)] == PAPER_PRESETS
    assert list_variants() == [
        "full", "no_identity", "no_1x1", "no_branches", "identity_no_bn", "post_bn",
        "relu_in_branches", "diracnet", "trivial", "acb", "residual_reorg", "qarepvgg",
    ]  # fmt: skip
    assert [v for v, s in VARIANTS.items() if not s.reparameterizable] == ["relu_in_branches"]
    assert [v for v, s in VARIANTS.items() if not s.plain] == ["relu_in_branches", "residual_reorg"]


@pytest.mark.parametrize("name", list_models())
def test_preset_forward_backward(name):
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 7)
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_widths_and_paper_grouping_rule():
    arch = arch_config("a0")
    assert arch.widths == (48, 48, 96, 192, 1280)
    assert arch_config("b3").widths == (64, 192, 384, 768, 2560)
    # The paper: 3rd, 5th, ..., 21st layers of A; additionally 23rd, 25th, 27th of B (stem = 1st layer).
    assert default_grouped_layers(arch.num_layers) == tuple(range(2, 21, 2))
    assert default_grouped_layers(arch_config("b0").num_layers) == tuple(range(2, 27, 2))
    groups = arch_config("b1g4").layer_groups()
    assert groups[0] == 1 and groups[1] == 1 and groups[2] == 4 and groups[27] == 1
    model = create_model("b1g4")
    assert model.stage1[1].rbr_dense.conv.groups == 4  # layer 2
    assert model.stage1[1].rbr_1x1.conv.groups == 4  # the 1x1 has the 3x3's groups
    assert model.stage1[0].rbr_dense.conv.groups == 1  # layer 1


def test_overrides_replace_preset_fields():
    model = create_model("b1g4", a=1.25, b=2.0, depths=(1, 2, 4, 8, 1), groups=2, num_classes=10)
    arch = model.arch
    assert (arch.a, arch.b, arch.depths, arch.groups, arch.num_classes) == (1.25, 2.0, (1, 2, 4, 8, 1), 2, 10)
    assert len(model.stage3) == 8 and model.linear.out_features == 10


# Every kind of block a preset contains (stride 1 and 2, in != out channels, identity, grouped, squeeze-excitation)
# appears in these two small models; each preset's own widths and depths are checked once more below, whole.
SMALL = {"a0": {}, "se": {"name": "d2se", "a": 0.5, "b": 1.0, "depths": (1, 2, 2, 2, 1)}}


def _equivalence_cases():
    return [
        pytest.param(model, groups, v, id=f"{model}-g{groups}-{v}")
        for model in SMALL
        for groups in (1, 2, 4)
        for v in CONVERTIBLE
    ]


def _exact(model: nn.Module, variant: str, gen: torch.Generator, float32: bool = True) -> None:
    """Random BN statistics and affine parameters, eval mode: deploy output == train output."""
    model = randomize_bn_(model.double(), gen).eval()
    # 48 px: every stage still sees a map of >= 2x2, so every kernel tap meets real input somewhere.
    x = torch.randn(2, 3, 48, 48, generator=gen, dtype=torch.float64)
    deploy = reparameterize_model(model)
    assert equivalence_error(model, deploy, x)["max_rel_error"] <= 1e-10
    _assert_deploy_structure(deploy, variant)
    if float32:
        model = model.float()
        assert equivalence_error(model, reparameterize_model(model), x.float())["max_rel_error"] <= 1e-5


@pytest.mark.parametrize(("model", "groups", "variant"), _equivalence_cases())
def test_reparameterization_is_exact(model, groups, variant):
    small = dict(SMALL[model])
    name = small.pop("name", model)
    gen = torch.Generator().manual_seed(0)
    _exact(create_model(name, variant=variant, groups=groups, num_classes=10, **small), variant, gen)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_preset_reparameterizes_exactly(name):
    """Each preset at its own widths, depths and groups (the full block): float64, like the grid above."""
    _exact(create_model(name, num_classes=10), "full", torch.Generator().manual_seed(0), float32=False)


def _assert_deploy_structure(deploy: nn.Module, variant: str) -> None:
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.modules()), "BN left in the deploy form"
    # The body's convs (squeeze-excitation's own 1x1 convs, in SE presets such as d2se, are not part of it).
    convs = [m for name, m in deploy.named_modules() if isinstance(m, nn.Conv2d) and ".se." not in f".{name}."]
    assert all(c.bias is not None for c in convs)
    if VARIANTS[variant].plain:  # one 3x3 conv per layer and nothing else
        assert all(c.kernel_size == (3, 3) for c in convs)
        assert len(convs) == deploy.arch.num_layers


def test_seed_s_gives_every_variant_the_same_initial_weights_where_shapes_allow():
    from repvgg_search.models import build_model

    def built(variant: str, seed: int) -> dict[str, torch.Tensor]:
        return build_model(arch_config("a0", variant=variant, num_classes=10), seed=seed).state_dict()

    full, no_identity, acb = built("full", 3), built("no_identity", 3), built("acb", 3)
    shared = [k for k in no_identity if k in full]
    assert len(shared) == len(no_identity) and all(torch.equal(full[k], no_identity[k]) for k in shared)
    assert torch.equal(full["stage1.1.rbr_dense.conv.weight"], acb["stage1.1.rbr_dense.conv.weight"])
    assert not torch.equal(full["linear.weight"], built("full", 4)["linear.weight"])  # another seed, another start


def test_reparameterize_leaves_argument_untouched():
    model = create_model("a0", num_classes=10)
    randomize_bn_(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    deploy = reparameterize_model(model)
    assert model.training and not deploy.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.data_ptr() == q.data_ptr() for p in model.parameters() for q in deploy.parameters())
    assert set(deploy.state_dict()) >= {"stage0.rbr_reparam.weight", "stage0.rbr_reparam.bias", "linear.weight"}


def test_residual_reorg_keeps_shortcuts():
    model = create_model("b0", variant="residual_reorg", num_classes=10)
    assert len(model.stage1) == 2 and len(model.stage3) == 8  # 4 and 16 layers as 2-layer residual blocks
    deploy = reparameterize_model(model.eval())
    assert hasattr(deploy.stage1[1], "rbr_shortcut") and isinstance(deploy.stage1[1].rbr_shortcut, nn.Identity)
    assert isinstance(deploy.stage1[0].rbr_shortcut, nn.Conv2d)  # projection where the shape changes


def test_relu_in_branches_refuses_conversion():
    model = create_model("a0", variant="relu_in_branches", num_classes=10)
    with pytest.raises(NotReparameterizableError, match="relu_in_branches") as info:
        reparameterize_model(model)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a": 0}, "width multiplier a must be a finite number > 0"),
        ({"b": -1.0}, "width multiplier b"),
        ({"a": math.inf}, "finite"),
        ({"b": math.nan}, "finite"),
        ({"depths": (1, 2, 4, 14)}, "depths must be 5 positive integers"),
        ({"depths": (1, 2, 0, 14, 1)}, "depths must be 5 positive integers"),
        ({"groups": 5}, "groups=5 does not divide the channels of grouped layer"),
        ({"groups": 0}, "groups must be an integer >= 1"),
        ({"groups": 2, "grouped_layers": (0, 2)}, r"grouped_layers \[0\] out of range.*stem"),
        (
            {"groups": 2, "grouped_layers": (2, 99)},
            r"grouped_layers \[99\] out of range: allowed layer indices are 1\.\.21",
        ),
        ({"num_classes": 0}, "num_classes must be an integer >= 1"),
        ({"variant": "nope"}, "unknown variant 'nope'; allowed: full, no_identity"),
        ({"variant": "residual_reorg", "depths": (1, 3, 4, 14, 1)}, "stage\\(s\\) \\[1\\].*need even depths"),
        ({"width": 2}, "unknown architecture field"),
    ],
)
def test_bad_input_names_field_and_allowed_values(kwargs, match):
    with pytest.raises(ArchError, match=match):
        create_model("a0", **kwargs)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown preset 'a9'; allowed: a0, a1, a2, b0"):
        create_model("a9")


def test_arch_config_is_frozen_and_hashable():
    arch = ArchConfig(depths=[1, 2, 4, 14, 1])
    assert arch.depths == (1, 2, 4, 14, 1)
    assert hash(arch) == hash(arch_config("a0"))
    with pytest.raises(AttributeError):
        arch.a = 2.0  # type: ignore[misc]
    assert set(PRESETS) == set(list_models())


def _authors_a0_keys(deploy: bool) -> set[str]:
    """The state-dict keys of the authors' RepVGG-A0 (their train-time and converted checkpoints), spelled out
    from their layout: stage0 is a single block, stage1..4 are sequences, head `linear`; no SE."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"linear.weight", "linear.bias"}
    blocks = ["stage0"] + [f"stage{s}.{i}" for s, n in ((1, 2), (2, 4), (3, 14), (4, 1)) for i in range(n)]
    for block in blocks:
        if deploy:
            keys |= {f"{block}.rbr_reparam.weight", f"{block}.rbr_reparam.bias"}
            continue
        for branch in ("rbr_dense", "rbr_1x1"):
            keys |= {f"{block}.{branch}.conv.weight"} | {f"{block}.{branch}.bn.{k}" for k in bn}
        first_of_stage = block == "stage0" or block.endswith(".0")
        if not first_of_stage:  # stride 1, same width: the identity BN branch exists
            keys |= {f"{block}.rbr_identity.{k}" for k in bn}
    return keys


def test_authors_key_names_load_strictly(tmp_path):
    from repvgg_search.models import load_state_dict

    train = create_model("a0")
    assert set(train.state_dict()) == _authors_a0_keys(deploy=False)
    deploy = reparameterize_model(train.eval())
    assert set(deploy.state_dict()) == _authors_a0_keys(deploy=True)
    # A DDP-saved train-time checkpoint (`module.` prefix, wrapped in `state_dict`) loads with strict matching.
    saved = {f"module.{k}": v for k, v in randomize_bn_(create_model("a0")).state_dict().items()}
    torch.save({"state_dict": saved}, tmp_path / "RepVGG-A0-train.pth")
    fresh = load_state_dict(create_model("a0"), tmp_path / "RepVGG-A0-train.pth")
    assert all(torch.equal(v, saved[f"module.{k}"]) for k, v in fresh.state_dict().items())
    # A converted checkpoint loads into the deploy form built from the same preset.
    torch.save(deploy.state_dict(), tmp_path / "RepVGG-A0-deploy.pth")
    target = reparameterize_model(create_model("a0").eval())
    load_state_dict(target, tmp_path / "RepVGG-A0-deploy.pth")
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(target(x), deploy(x))

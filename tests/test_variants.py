"""Block variants as data: the named designs are YAML files, a new design is one more, and each converts exactly
when its fields allow (or is refused with the reason)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from repvgg_search.config import CONF_DIR, register_configs
from repvgg_search.data import DataConfig, build_loaders
from repvgg_search.models import (
    VARIANTS,
    ArchError,
    BlockSpec,
    NotReparameterizableError,
    create_model,
    list_variants,
    reparameterize_model,
    variant_spec,
)
from repvgg_search.profile import equivalence_error, randomize_bn_
from repvgg_search.training import TrainConfig, build_optimizer, build_scheduler, train_one_epoch
from repvgg_search.trial import settings_from_config

GOLDEN = Path(__file__).with_name("golden") / "state_dict_keys.json"
# The README's example of a new block design: ACB's branches, BN on the 3x3 only, one BN after the addition.
USER_VARIANT = """\
# ACB's 3x3, 1x3 and 3x1 branches plus the identity; BN only on the 3x3, one BN after the addition.
name: acb_qa
description: 3x3 conv-BN + 1x3 conv + 3x1 conv + identity, summed, then one BN
branches: [3x3, 1x3, 3x1, identity]
bn: [3x3]
post_bn: true
"""


def _digest(keys) -> dict:
    keys = sorted(keys)
    return {"n": len(keys), "sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()}


@pytest.mark.parametrize("name", [v for v in list_variants() if v != "qarepvgg"])
def test_state_dict_names_are_unchanged_for_the_existing_variants(name):
    golden = json.loads(GOLDEN.read_text())["variants"][name]
    model = create_model("a0", variant=name, num_classes=10)
    assert _digest(model.state_dict()) == golden["train"]
    if "deploy" in golden:
        assert _digest(reparameterize_model(model.eval()).state_dict()) == golden["deploy"]


def test_every_named_variant_is_its_yaml_file():
    files = sorted(p.stem for p in (CONF_DIR / "variant").glob("*.yaml"))
    assert sorted(VARIANTS) == files
    assert VARIANTS["qarepvgg"].bn == ("3x3",) and VARIANTS["qarepvgg"].post_bn
    assert VARIANTS["residual_reorg"].layout == ("rep", "residual", "residual", "residual", "rep")
    assert [v for v, s in VARIANTS.items() if not s.reparameterizable] == ["relu_in_branches"]


def test_labels_name_what_changed():
    assert variant_spec("full").label == "full"
    assert variant_spec({"name": "full", "post_bn": True}).label == "full+post_bn=true"
    assert variant_spec({"name": "qarepvgg", "bn": ["3x3", "1x1"]}).label == "qarepvgg+bn=[3x3,1x1]"
    spec = variant_spec({"name": "mine", "branches": ["3x3", "1x3"], "bn": []})
    assert spec.label == "mine" and not spec.registered


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"branches": ["3x3", "5x5"]}, r"variant.branches: \['5x5'\] unknown; allowed: 3x3, 1x1, 1x3, 3x1, identity"),
        ({"branches": ["identity"], "bn": []}, "has no conv branch"),
        ({"branches": ["3x3"], "bn": ["3x3", "1x1"]}, r"variant.bn names \['1x1'\], which are not in variant.branches"),
        ({"kernel": "fancy"}, "variant.kernel='fancy' is unknown; allowed: plain, dirac, trivial"),
        ({"branches": ["1x1"], "bn": [], "kernel": "dirac"}, "has no 3x3"),
        ({"layout": ["rep"] * 4}, "must name the block of each of the 5 stages"),
        ({"post_bn": "yes"}, "variant.post_bn must be true or false"),
        ({"name": "fulll"}, "unknown variant 'fulll'; allowed: full"),
        ({"colour": "red"}, r"unknown variant field\(s\) \['colour'\]"),
    ],
)
def test_bad_block_designs_name_the_field(fields, match):
    with pytest.raises(ArchError, match=match):
        variant_spec({"name": "mine", **fields} if "name" not in fields else fields)


def test_a_design_with_relu_in_its_branches_is_refused_with_the_reason():
    spec = variant_spec({"name": "qarepvgg", "relu_in_branches": True})
    model = create_model("a0", variant=spec, num_classes=10)
    with pytest.raises(NotReparameterizableError, match="qarepvgg\\+relu_in_branches=true.*ReLU inside the branches"):
        reparameterize_model(model)


def _compose(*overrides: str, conf: Path | None = None):
    """The trial config; with `conf`, a user's own config folder is searched too (hydra.searchpath)."""
    register_configs()
    extra = [f"hydra.searchpath=[file://{conf}]"] if conf else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*extra, *overrides])


@pytest.mark.slow
def test_a_new_block_design_is_one_yaml_file(tmp_path):
    """A user's YAML in their own config folder: composes, builds, trains a step, converts exactly."""
    (tmp_path / "variant").mkdir()
    (tmp_path / "variant" / "acb_qa.yaml").write_text(USER_VARIANT)
    cfg = _compose("variant=acb_qa", "model.depths=[1,2,2,2,1]", "model.a=0.25", conf=tmp_path)
    settings = settings_from_config(cfg)
    spec = settings.arch.variant
    assert (spec.name, spec.branches, spec.bn, spec.post_bn) == (
        "acb_qa",
        ("3x3", "1x3", "3x1", "identity"),
        ("3x3",),
        True,
    )
    model = create_model("a0", variant=spec, num_classes=10, depths=(1, 2, 2, 2, 1), a=0.25)
    block = model.stage1[1]  # stride 1, same width: every branch exists
    assert [type(b).__name__ for b in block.branches()] == ["Sequential", "Sequential", "Sequential", "Identity"]
    assert hasattr(block.rbr_dense, "bn") and not hasattr(block.rbr_1x3, "bn") and hasattr(block, "bn")
    _train_one_step(model)
    model = randomize_bn_(model.double(), torch.Generator().manual_seed(0)).eval()
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    assert equivalence_error(model, reparameterize_model(model), x)["max_rel_error"] <= 1e-10


def _train_one_step(model: torch.nn.Module) -> None:
    train = TrainConfig(epochs=1)
    loader, _, _ = build_loaders(DataConfig(batch_size=32), device=torch.device("cpu"), seed=0)
    optimizer = build_optimizer(model, train, 32)
    before = [p.detach().clone() for p in model.parameters()]
    loader = [next(iter(loader))]
    train_one_epoch(model, _Once(loader), optimizer, build_scheduler(optimizer, train, 1), cfg=train,
                    device="cpu", epoch=0, seed=0)  # fmt: skip
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


class _Once(list):
    """One batch, with the loader interface train_one_epoch expects."""

    def set_epoch(self, epoch: int) -> None:
        pass


def test_variant_fields_are_command_line_overrides():
    cfg = _compose("variant=full", "variant.post_bn=true", "variant.bn=[3x3]")
    spec = settings_from_config(cfg).arch.variant
    assert spec == BlockSpec(name="full", bn=("3x3",), post_bn=True) and spec.label == "full+bn=[3x3],post_bn=true"
    assert spec.structure() == VARIANTS["qarepvgg"].structure()


def test_a_registered_stage_block_kind_can_be_named_in_a_layout():
    """`register_stage_block` is the extension point for a new kind of stage block: once registered, a layout may
    name it, and the model builds and converts (here: a kind that builds the same blocks as `rep`)."""
    from repvgg_search.models.repvgg import STAGE_BUILDERS, register_stage_block
    from repvgg_search.models.variants import STAGE_BLOCKS

    with pytest.raises(ArchError, match="allowed: rep, residual"):
        BlockSpec(name="mine", layout=("rep", "rep", "rep", "mine_kind", "rep"))
    try:
        register_stage_block("mine_kind")(STAGE_BUILDERS["rep"])
        spec = BlockSpec(name="mine", layout=("rep", "rep", "rep", "mine_kind", "rep"))
        model = create_model("a0", variant=spec, num_classes=10, a=0.25, b=0.25).eval()
        randomize_bn_(model, torch.Generator().manual_seed(0))
        x = torch.randn(2, 3, 32, 32)
        assert equivalence_error(model, reparameterize_model(model), x)["max_rel_error"] <= 1e-5
    finally:
        STAGE_BUILDERS.pop("mine_kind", None)
        if "mine_kind" in STAGE_BLOCKS:
            STAGE_BLOCKS.remove("mine_kind")

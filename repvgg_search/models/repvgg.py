"""One generic builder for every architecture, plus the walk that converts a model to its deploy form."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .arch import ArchConfig
from .blocks import RepBlock, ResidualBlock
from .errors import NotReparameterizableError
from .variants import STAGE_BLOCKS

# Stage block kind (variant.layout) -> builder of one stage: (arch, its layers, their groups) -> blocks.
StageBuilder = Callable[[ArchConfig, list[tuple[int, int, int]], list[int]], list[nn.Module]]
STAGE_BUILDERS: dict[str, StageBuilder] = {}


def register_stage_block(kind: str) -> Callable[[StageBuilder], StageBuilder]:
    """Register the builder of a stage block kind: from then on `variant.layout` may name it."""

    def add(builder: StageBuilder) -> StageBuilder:
        STAGE_BUILDERS[kind] = builder
        if kind not in STAGE_BLOCKS:
            STAGE_BLOCKS.append(kind)
        return builder

    return add


@register_stage_block("rep")
def _rep_stage(arch: ArchConfig, layers: list[tuple[int, int, int]], groups: list[int]) -> list[nn.Module]:
    """One multi-branch block per layer, built from the variant's record."""
    return [RepBlock(cin, cout, stride, g, arch.variant, arch.use_se) for (cin, cout, stride), g in zip(layers, groups)]


@register_stage_block("residual")
def _residual_stage(arch: ArchConfig, layers: list[tuple[int, int, int]], groups: list[int]) -> list[nn.Module]:
    """2-layer residual blocks (the stage's depth is even: `BlockSpec.check_depths`)."""
    return [ResidualBlock(*layers[i], (groups[i], groups[i + 1]), arch.use_se) for i in range(0, len(layers) - 1, 2)]


class RepVGG(nn.Module):
    """A RepVGG network: five stages (stride 2 at the first layer of each), global average pool, linear head.

    `stage0` is a single block when the stem has one layer (the authors' layout), a Sequential otherwise.
    """

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch
        self.deploy = False
        blocks = _build_blocks(arch)
        for s, stage_blocks in enumerate(blocks):
            stage = stage_blocks[0] if s == 0 and len(stage_blocks) == 1 else nn.Sequential(*stage_blocks)
            self.add_module(f"stage{s}", stage)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(arch.widths[-1], arch.num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        for s in range(5):
            x = getattr(self, f"stage{s}")(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.gap(self.forward_features(x)).flatten(1))


def _build_blocks(arch: ArchConfig) -> list[list[nn.Module]]:
    layers, groups = arch.layer_channels(), arch.layer_groups()
    stages, i = [], 0
    for depth, kind in zip(arch.depths, arch.variant.layout):
        stages.append(STAGE_BUILDERS[kind](arch, layers[i : i + depth], groups[i : i + depth]))
        i += depth
    return stages


def build_model(arch: ArchConfig, seed: int | None = None) -> RepVGG:
    """The train-form model of `arch`; with `seed`, initialized so that seed s gives the same initial weights to
    every module that two architectures share (same path and shape), whatever else they hold (`paired_init_`)."""
    model = RepVGG(arch)
    return model if seed is None else paired_init_(model, seed)


def paired_init_(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialize every module that has its own initializer from a generator seeded by (seed, module path).

    Trials of different block variants with the same seed are then paired: `full` and `no_identity` start from the
    same 3x3, 1x1 and classifier weights; modules only one of them has (ACB's 1x3, a residual block's convs) get
    their own. BN, DiracNet's alpha/beta and the identity are deterministic anyway.
    """
    state = torch.random.get_rng_state()
    try:
        for name, module in model.named_modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and any(True for _ in module.parameters(recurse=False)):
                digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
                torch.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
                reset()
    finally:
        torch.random.set_rng_state(state)
    return model


def reparameterize_model(model: nn.Module) -> nn.Module:
    """A new deploy-form copy of `model` (eval mode); `model` itself is left untouched.

    Every block that knows how to fuse itself is replaced by its deploy form; other modules are copied.
    Raises `NotReparameterizableError` for variants with no deploy form.
    """
    arch = getattr(model, "arch", None)
    if not isinstance(arch, ArchConfig):
        raise NotReparameterizableError(
            f"reparameterize_model takes a model built by this package (create_model / build_model), got "
            f"{type(model).__name__}"
        )
    if not arch.reparameterizable:
        raise NotReparameterizableError(
            f"variant {arch.variant.label!r} cannot be re-parameterized: {arch.variant.why_not_reparameterizable}; "
            f"measure it in train form"
        )
    if getattr(model, "deploy", False):
        return copy.deepcopy(model).eval()
    deployed = _convert(model)
    deployed.deploy = True
    return deployed.eval()


def _convert(module: nn.Module) -> nn.Module:
    if hasattr(module, "reparameterize"):
        if not module.reparameterizable:
            raise NotReparameterizableError(f"{type(module).__name__} cannot be re-parameterized")
        return module.reparameterize()
    if not module._modules:
        return copy.deepcopy(module)
    # Shallow-copy the container, then convert its children: no train-form weight is copied only to be replaced.
    new = copy.copy(module)
    new._parameters = {
        k: None if p is None else nn.Parameter(p.detach().clone()) for k, p in module._parameters.items()
    }
    new._buffers = {k: None if b is None else b.clone() for k, b in module._buffers.items()}
    new._modules = {name: None if child is None else _convert(child) for name, child in module._modules.items()}
    return new


def output_error(reference: Tensor | np.ndarray, other: Tensor | np.ndarray) -> dict[str, float]:
    """How far `other` is from `reference` (e.g. a deploy form's or an exported model's logits from the train form's):
    `max_abs_error` = max|reference - other| and `max_rel_error` = that over max|reference|, in float64. The one
    measure of the conversion gate, the equivalence checks and every export check."""
    ref, out = (
        np.asarray(v.detach().cpu().double() if isinstance(v, Tensor) else v, np.float64) for v in (reference, other)
    )
    abs_err = float(np.abs(ref - out).max()) if ref.size else 0.0
    return {
        "max_abs_error": abs_err,
        "max_rel_error": abs_err / max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-30),
    }


@torch.no_grad()
def equivalence_error(train_model: nn.Module, deploy_model: nn.Module, x: Tensor) -> dict[str, float]:
    """`output_error` of the two forms' outputs on `x`, both in eval mode (the train form's mode is restored)."""
    was_training = train_model.training
    train_model.eval()
    y_train, y_deploy = train_model(x), deploy_model.eval()(x)
    train_model.train(was_training)
    return output_error(y_train, y_deploy)


def randomize_bn_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (for equivalence checks)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            shape = m.running_mean.shape
            kw = {"generator": generator, "dtype": m.running_mean.dtype}
            m.running_mean.copy_(torch.rand(shape, **kw) - 0.5)
            m.running_var.copy_(torch.rand(shape, **kw) * 1.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(shape, **kw) + 0.5)
                m.bias.data.copy_(torch.rand(shape, **kw) - 0.5)
    return model

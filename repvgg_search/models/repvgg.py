"""One generic builder for every architecture, plus the walk that converts a model to its deploy form."""

from __future__ import annotations

import copy

from torch import Tensor, nn

from .arch import ArchConfig
from .blocks import RepBlock, ResidualBlock
from .variants import VARIANTS


class NotReparameterizableError(ValueError):
    """The model's variant has no deploy form (e.g. `relu_in_branches`)."""


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
    stages: list[list[nn.Module]] = []
    i = 0
    for s, depth in enumerate(arch.depths):
        stage: list[nn.Module] = []
        if arch.variant == "residual_reorg" and s in (1, 2, 3):
            for _ in range(depth // 2):
                cin, cout, stride = layers[i]
                stage.append(ResidualBlock(cin, cout, stride, (groups[i], groups[i + 1]), arch.use_se))
                i += 2
        else:
            # residual_reorg keeps single plain conv-BN-ReLU layers in stages 0 and 4.
            variant = "no_branches" if arch.variant == "residual_reorg" else arch.variant
            for _ in range(depth):
                cin, cout, stride = layers[i]
                stage.append(RepBlock(cin, cout, stride, groups[i], variant, arch.use_se))
                i += 1
        stages.append(stage)
    return stages


def build_model(arch: ArchConfig) -> RepVGG:
    """The train-form model of `arch`."""
    return RepVGG(arch)


def reparameterize_model(model: nn.Module) -> nn.Module:
    """A new deploy-form copy of `model` (eval mode); `model` itself is left untouched.

    Every block that knows how to fuse itself is replaced by its deploy form; other modules are copied.
    Raises `NotReparameterizableError` for variants with no deploy form.
    """
    arch = getattr(model, "arch", None)
    if arch is not None and not VARIANTS[arch.variant].reparameterizable:
        raise NotReparameterizableError(
            f"variant {arch.variant!r} cannot be re-parameterized: {VARIANTS[arch.variant].definition}; "
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

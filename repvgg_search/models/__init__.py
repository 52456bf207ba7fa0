"""RepVGG generator: presets, block variants, the builder and structural re-parameterization."""

from __future__ import annotations

from torch import nn

from .arch import PRESETS, ArchConfig, arch_config, default_grouped_layers, list_models
from .checkpoint import load_state_dict
from .errors import ArchError, NotReparameterizableError
from .repvgg import (
    STAGE_BUILDERS,
    RepVGG,
    build_model,
    equivalence_error,
    output_error,
    paired_init_,
    randomize_bn_,
    register_stage_block,
    reparameterize_model,
)
from .variants import VARIANTS, BlockSpec, list_variants, variant_spec

__all__ = [
    "PRESETS",
    "STAGE_BUILDERS",
    "VARIANTS",
    "ArchConfig",
    "ArchError",
    "BlockSpec",
    "NotReparameterizableError",
    "RepVGG",
    "arch_config",
    "build_model",
    "create_model",
    "default_grouped_layers",
    "equivalence_error",
    "list_models",
    "list_variants",
    "load_state_dict",
    "output_error",
    "paired_init_",
    "randomize_bn_",
    "register_stage_block",
    "reparameterize_model",
    "variant_spec",
]


def create_model(
    name: str, *, variant: str | dict | BlockSpec = "full", num_classes: int = 1000, **overrides
) -> nn.Module:
    """Build preset `name` in train form; `variant` is a named variant, a block design's fields or a `BlockSpec`;
    `overrides` replace fields of the preset (see `ArchConfig`)."""
    return build_model(arch_config(name, variant=variant, num_classes=num_classes, **overrides))

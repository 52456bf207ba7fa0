"""RepVGG generator: presets, block variants, the builder and structural re-parameterization."""

from __future__ import annotations

from torch import nn

from .arch import PRESETS, ArchConfig, ArchError, arch_config, default_grouped_layers, list_models
from .checkpoint import load_state_dict
from .repvgg import NotReparameterizableError, RepVGG, build_model, reparameterize_model
from .variants import VARIANTS, Variant, list_variants

__all__ = [
    "PRESETS",
    "VARIANTS",
    "ArchConfig",
    "ArchError",
    "NotReparameterizableError",
    "RepVGG",
    "Variant",
    "arch_config",
    "build_model",
    "create_model",
    "default_grouped_layers",
    "list_models",
    "list_variants",
    "load_state_dict",
    "reparameterize_model",
]


def create_model(name: str, *, variant: str = "full", num_classes: int = 1000, **overrides) -> nn.Module:
    """Build preset `name` in train form; `overrides` replace fields of the preset (see `ArchConfig`)."""
    return build_model(arch_config(name, variant=variant, num_classes=num_classes, **overrides))

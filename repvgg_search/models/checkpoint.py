"""Loading state dicts, including the authors' released train-time and deploy checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop a DDP-style prefix from every key that has it."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def load_state_dict(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], strict: bool = True):
    """Load a state dict (or a checkpoint file, read with `weights_only=True`) into `model`.

    Accepts the authors' key names, a `module.` prefix (DDP), and files whose weights sit under a `state_dict`
    or `model` key. Returns `model`.
    """
    if not isinstance(source, Mapping):
        source = torch.load(Path(source), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if key in source and isinstance(source[key], Mapping):
            source = source[key]
            break
    model.load_state_dict(strip_prefix(source), strict=strict)
    return model

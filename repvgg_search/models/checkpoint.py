"""Loading state dicts, including the authors' released train-time and deploy checkpoints."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import BadInputError


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop a DDP-style prefix from every key that has it."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def load_state_dict(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], strict: bool = True):
    """Load a state dict (or a checkpoint file, read with `weights_only=True`) into `model`.

    Accepts the authors' key names, a `module.` prefix (DDP), and files whose weights sit under a `state_dict`
    or `model` key. Returns `model`. A file that is missing, not a weights file (torn, random bytes, a pickle that
    would run code) or does not fit the model is a BadInputError naming the file and what is wrong.
    """
    where = "state dict" if isinstance(source, Mapping) else f"checkpoint {source}"
    state = source if isinstance(source, Mapping) else _read(Path(source))
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BadInputError(f"{where} holds no weights (a mapping of names to tensors expected)")
    state = strip_prefix(state)
    _check_fits(model, state, where, strict)
    model.load_state_dict(state, strict=strict)
    return model


def _read(path: Path) -> Mapping:
    if not path.exists():
        raise BadInputError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise BadInputError(f"checkpoint {path} is a directory, not a weights file")
    if path.stat().st_size == 0:
        raise BadInputError(f"checkpoint {path} is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BadInputError(
            f"checkpoint {path} is not a plain weights file (foreign or random bytes, or objects beyond tensors and "
            "plain values): refused; files are read with weights_only=True, so a pickle that would run code never is"
        ) from None
    except Exception as exc:  # truncated, random bytes, another format: whatever torch raises
        raise BadInputError(f"checkpoint {path} cannot be read as a weights file ({type(exc).__name__})") from None
    if not isinstance(state, Mapping):
        raise BadInputError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], where: str, strict: bool) -> None:
    """Refuse weights of another architecture before loading anything: which keys and shapes do not match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state] if strict else []
    unexpected = [k for k in state if k not in own] if strict else []
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        arch = getattr(model, "arch", None)
        what = f" ({arch.variant.label}, widths {list(arch.widths)})" if arch is not None else ""
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[0]}, file vs model)" if shapes else ""]  # fmt: skip
        raise BadInputError(f"{where} does not fit this model{what}: " + "; ".join(p for p in parts if p))

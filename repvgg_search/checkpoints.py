"""Model checkpoints of a trial: saved atomically (tensors and plain values only), loaded with `weights_only=True`,
with the previous one kept until the next save so that a torn latest file has a fallback."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import files


def previous(path: Path) -> Path:
    """Where the checkpoint before `path` is kept while a new one is written (last.pt -> last.prev.pt)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict, keep_previous: bool = True) -> None:
    """Atomically save a checkpoint (tensors and plain Python values only, so it loads with weights_only); with
    `keep_previous` the one it replaces stays as `previous(path)` until the next save, so a torn or corrupted latest
    has a fallback (what a resume needs; final weights written once need none)."""
    files.atomic_write(
        Path(path), lambda f: torch.save(state, f), keep_previous=previous(Path(path)) if keep_previous else None
    )


def load_checkpoint(path: Path) -> dict | None:
    """A checkpoint written by `save_checkpoint`, read with `weights_only=True`, or None when absent."""
    path = Path(path)
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


CHECKPOINT_KEYS = ("trial_id", "epochs_done", "model")


def load_usable_checkpoint(path: Path, log: Callable[[str], None], move_aside: bool = True) -> dict | None:
    """The newest checkpoint that loads and holds what a resume needs: `path`, else its previous one (an epoch
    redone). A file that cannot be used is moved aside (`<name>.unusable-<time>`) with a message naming it."""
    for candidate in (Path(path), previous(Path(path))):
        if not candidate.exists():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
                raise ValueError(
                    f"not a trial checkpoint (keys {sorted(state)[:5] if isinstance(state, dict) else type(state).__name__})"
                )
            return state
        except Exception as exc:  # torn, truncated, random bytes, a foreign pickle: never trusted, never lost
            aside = candidate.with_name(f"{candidate.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
            if move_aside:  # one process moves it (rank 0 of a multi-process trial); the others skip it
                os.replace(candidate, aside)
            log(f"checkpoint {candidate} cannot be used ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                f"moved to {aside.name}")  # fmt: skip
    return None


def checkpoint_owner(path: Path) -> str | None:
    """The trial id a checkpoint belongs to, or None when there is none or it cannot be read."""
    for candidate in (Path(path), previous(Path(path))):
        try:
            state = load_checkpoint(candidate)
        except Exception:  # an unreadable checkpoint says nothing about its owner
            continue
        if isinstance(state, dict) and state.get("trial_id"):
            return state["trial_id"]
    return None

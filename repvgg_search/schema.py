"""The trial record (`result.json`): its schema version, statuses, MAC convention, and the header every record
starts with. The trial runner, the search's never-trained candidates and the analysis examples all build on it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .errors import BadInputError

if TYPE_CHECKING:  # analysis reads records without importing torch
    from .models import ArchConfig

SCHEMA_VERSION = 1
# running: in progress (or its process died: see the sweep's job states); the rest are final for that run.
STATUSES = ("completed", "failed", "interrupted", "cancelled", "running", "infeasible", "pruned", "diverged")
# wandb run states accepted wherever a status is asked for (analysis filters).
STATE_ALIASES = {"finished": "completed", "crashed": "failed", "killed": "interrupted"}
MAC_CONVENTION = "fvcore MACs (1 multiply-add = 1; conv, linear, BN and pooling counted; ReLU and adds not)"


def normalize_state(state: str) -> str:
    """A record status from a status or a wandb run state; `BadInputError` naming the allowed ones otherwise."""
    s = STATE_ALIASES.get(state.lower(), state.lower())
    if s not in STATUSES:
        raise BadInputError(f"unknown state {state!r}; allowed: {', '.join(STATUSES + tuple(STATE_ALIASES))}")
    return s


def arch_record(preset: str, arch: ArchConfig) -> dict[str, Any]:
    """The record's `arch` block: the effective architecture with its widths and what its variant allows."""
    fields = {f.name: getattr(arch, f.name) for f in dataclasses.fields(arch) if f.name != "variant"}
    return {
        "preset": preset,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
        "variant": arch.variant.label,
        "block": arch.variant.structure(),
        "widths": list(arch.widths),
        "reparameterizable": arch.reparameterizable,
        "plain": arch.plain,
    }


def record_header(
    *,
    trial_id: str,
    status: str,
    group: str | None,
    arch: dict[str, Any],
    seed: int,
    config: dict[str, Any],
) -> dict[str, Any]:
    """The first keys of every trial record; `arch` is an `arch_record(...)`."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not a record status; statuses: {', '.join(STATUSES)}")
    return {
        "schema_version": SCHEMA_VERSION,
        "trial_id": trial_id,
        "status": status,
        "group": group,
        "tags": [arch["preset"], arch["variant"]],
        "arch": arch,
        "seed": seed,
        "config": config,
    }


def lookup(record: Any, keys: tuple[str, ...]) -> Any:
    """`record[k0][k1]...`, or None where a key is missing or a level is not a dict."""
    for k in keys:
        record = record.get(k) if isinstance(record, dict) else None
    return record

"""The trial record (`result.json`) whole: its type, and writing, reading and upgrading it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import files
from ..files import RecordError
from ..typed import OMIT_NULL, TRANSIENT, parse, to_json
from .blocks import (
    ArchBlock,
    Complexity,
    Conversion,
    DataWaitBlock,
    Environment,
    Export,
    Metrics,
    PerImage,
    Quant,
    Search,
    SpeedFigure,
    Timings,
    Weights,
)
from .status import Status

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: the same blocks untyped, `search.kind` "trained" for completed


@dataclass(slots=True, kw_only=True)
class TrialRecord:
    """A trial's `result.json`. The blocks a run did not reach are null (or, for the optional ones, absent)."""

    schema_version: int = SCHEMA_VERSION
    trial_id: str
    status: Status
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    arch: ArchBlock | None = None
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the resolved trial config
    metrics: Metrics | None = field(default=None, metadata=OMIT_NULL)
    resumes: list[int] | None = field(default=None, metadata=OMIT_NULL)  # epochs done at each resume
    conversion: Conversion | None = field(default=None, metadata=OMIT_NULL)
    complexity: Complexity | None = field(default=None, metadata=OMIT_NULL)
    speed: SpeedFigure | None = field(default=None, metadata=OMIT_NULL)
    quant: Quant | None = field(default=None, metadata=OMIT_NULL)
    weights: Weights | None = field(default=None, metadata=OMIT_NULL)
    search: Search | None = field(default=None, metadata=OMIT_NULL)
    export: Export | None = field(default=None, metadata=OMIT_NULL)
    per_image: PerImage | None = field(default=None, metadata=OMIT_NULL)
    data_wait: DataWaitBlock | None = field(default=None, metadata=OMIT_NULL)  # absent in records before issue 22
    diverged_epoch: int | None = field(default=None, metadata=OMIT_NULL)
    epochs_done: int | None = field(
        default=None, metadata=OMIT_NULL
    )  # an unfinished run: epochs finished before it stopped
    timings: Timings | None = None
    git_commit: str | None = None
    versions: dict[str, str | None] | None = None
    environment: Environment | None = None
    wandb_run: str | None = None
    error: str | None = None
    # Where a reader found it (set by analysis loaders; never written to the file).
    origin: dict[str, Any] | None = field(default=None, metadata=TRANSIENT)

    @classmethod
    def header(cls, *, trial_id: str, status: Status, group: str | None, arch: ArchBlock, seed: int,
               config: dict[str, Any]) -> TrialRecord:  # fmt: skip
        """The keys every record starts with; tags are the preset and the variant's label."""
        return cls(trial_id=trial_id, status=Status.parse(status), group=group, tags=[arch.preset, arch.variant],
                   arch=arch, seed=seed, config=config)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The record as the plain JSON object `result.json` holds."""
        return to_json(self)


# -- reading and writing --------------------------------------------------------------------------------------------
def write_record(path: Path, record: TrialRecord) -> TrialRecord:
    """Check `record` against the schema (a value of the wrong type is refused naming its field) and write it
    atomically; returns it."""
    if not isinstance(record, TrialRecord):
        raise TypeError(f"write_record takes a TrialRecord, got {type(record).__name__}: build one with the schema")
    data = record.to_json()
    try:
        parse(TrialRecord, data, str(path))  # the types, checked before anything is written
    except RecordError as exc:  # a writer's bug, not the user's input
        raise TypeError(f"not a valid trial record: {exc}") from None
    files.write_json(path, data)
    return record


def read_record(path: Path) -> TrialRecord | None:
    """The record in `path` (None when there is none); RecordError naming the file and the field that does not fit."""
    data = files.read_json(path)
    return None if data is None else parse_record(data, where=str(path))


def parse_record(data: Any, *, where: str = "record", extra: str = "forbid") -> TrialRecord:
    """A typed record from a JSON object, upgraded from an older schema version; `extra="ignore"` drops top-level
    keys that are not record fields (a wandb run summary holds some of its own)."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: a trial record is a JSON object, not {type(data).__name__}")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise RecordError(
            f"{where}: schema_version {version!r} is not one this version reads ({', '.join(map(str, READABLE_VERSIONS))})"
        )
    data = upgrade(data)
    if extra == "ignore":
        names = {f.name for f in dataclasses.fields(TrialRecord)}
        data = {k: v for k, v in data.items() if k in names}
    return parse(TrialRecord, data, where)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A record of an older schema version as the current one (the same file on disk is never rewritten)."""
    if data.get("schema_version") == 1:
        data = {**data, "schema_version": SCHEMA_VERSION}
        search = data.get("search")
        if isinstance(search, dict) and isinstance(search.get("kind"), str):
            data["search"] = {**search, "kind": Status.parse(search["kind"]).value}  # "trained" -> "completed"
    return data

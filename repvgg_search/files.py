"""Files of a trial or sweep folder, written so that a reader never sees a torn one: atomic JSON, text and CSV,
appended and synced JSON lines, the trial's `config.yaml`, and the file names every layer uses. Torch-free: what a
record holds is `schema.py`'s; model weights are `checkpoints.py`'s."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import BadInputError

if TYPE_CHECKING:
    import pandas as pd

RESULT = "result.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoints/last.pt"
DEPLOY_WEIGHTS = "deploy.pt"
EXPORT_DIR = "export"  # exported and quantized models (ONNX, .pt2)


def atomic_write(path: Path, write, keep_previous: Path | None = None) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a partial file. With
    `keep_previous`, the file being replaced is first renamed there (a crash between the two renames leaves it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; records are meant to be read by others
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise naming(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def naming(exc: OSError, path: Path) -> OSError:
    """The same OS error with the record's path in it (a failed write() names no file)."""
    return exc if exc.filename else type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def write_json(path: Path, data: Any) -> None:
    """Atomically write `data` as indented JSON (non-finite floats become null)."""
    atomic_write(Path(path), lambda f: f.write((json.dumps(_finite(data), indent=1) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    """Atomically write `text` (UTF-8): a summary or table a reader may open while a driver rewrites it."""
    atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_figure(fig: Any, path: Path, **savefig: Any) -> None:
    """Atomically save a matplotlib figure (its format from the suffix): a full disk leaves no torn or empty file."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", **savefig))


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """Atomically write `df` as CSV without its index."""
    write_text(path, df.to_csv(index=False))


# libyaml when present: writing a thousand trial configs should take a moment, not seconds.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def write_config(folder: Path, config: dict[str, Any], overwrite: bool = False) -> Path:
    """A trial's resolved config as `<folder>/config.yaml` (atomically): written before anything runs, by whoever
    plans or runs the trial; an existing one is kept unless `overwrite` (the trial itself rewrites it)."""
    path = Path(folder) / CONFIG
    if overwrite or not path.exists():
        write_text(path, yaml.dump(config, Dumper=_DUMPER, sort_keys=False, allow_unicode=True))
    return path


def read_config(folder: Path) -> dict[str, Any]:
    """The trial config written by `write_config` ({} when there is none)."""
    path = Path(folder) / CONFIG
    return yaml.load(path.read_text(), Loader=_LOADER) if path.exists() else {}


class RecordError(BadInputError):
    """A record file exists but cannot be read (torn, edited, or not ours); the message names the file."""


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it does not exist; RecordError naming the file when it is not JSON."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path} is not valid JSON ({exc}); move it aside (or choose another folder)") from None


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line (flushed and synced: a crash loses at most the line being written)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(_finite(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise naming(exc, path) from exc


def read_jsonl(path: Path) -> list[dict]:
    """All complete JSON lines of `path` ([] when absent); a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def truncate_jsonl(path: Path, keep) -> None:
    """Rewrite `path` keeping only the rows for which `keep(row)` is true (used when resuming)."""
    rows = [r for r in read_jsonl(path) if keep(r)]
    atomic_write(Path(path), lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value

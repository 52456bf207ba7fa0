"""Structured records in a trial folder: atomic JSON and checkpoints, JSON lines, provenance."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import BadInputError
from .schema import lookup  # noqa: F401 (records.lookup: the one nested lookup, torch-free in schema)

if TYPE_CHECKING:
    import pandas as pd

RESULT = "result.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoints/last.pt"
DEPLOY_WEIGHTS = "deploy.pt"
EXPORT_DIR = "export"  # exported and quantized models (ONNX, .pt2)


def _atomic(path: Path, write, keep_previous: Path | None = None) -> None:
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
        raise _naming(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same OS error with the record's path in it (a failed write() names no file)."""
    return exc if exc.filename else type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def write_json(path: Path, data: Any) -> None:
    """Atomically write `data` as indented JSON (non-finite floats become null)."""
    _atomic(Path(path), lambda f: f.write((json.dumps(_finite(data), indent=1) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    """Atomically write `text` (UTF-8): a summary or table a reader may open while a driver rewrites it."""
    _atomic(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """Atomically write `df` as CSV without its index."""
    write_text(path, df.to_csv(index=False))


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


def previous(path: Path) -> Path:
    """Where the checkpoint before `path` is kept while a new one is written (last.pt -> last.prev.pt)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict, keep_previous: bool = True) -> None:
    """Atomically save a checkpoint (tensors and plain Python values only, so it loads with weights_only); with
    `keep_previous` the one it replaces stays as `previous(path)` until the next save, so a torn or corrupted latest
    has a fallback (what a resume needs; final weights written once need none)."""
    _atomic(Path(path), lambda f: torch.save(state, f), keep_previous=previous(Path(path)) if keep_previous else None)


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


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line (flushed and synced: a crash loses at most the line being written)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(_finite(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _naming(exc, path) from exc


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
    _atomic(Path(path), lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def git_commit(repo: Path | None = None) -> str | None:
    """The commit of the code that ran (with `+dirty` when the tree had changes), or None outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():  # an installed package: no commit of ours to report
        return None
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries that shape results."""
    names = ["torch", "torchvision", "numpy", "hydra-core", "omegaconf", "fvcore", "wandb", "submitit", "optuna"]
    out: dict[str, str | None] = {"python": platform.python_version(), "repvgg-search": _version("repvgg-search")}
    out.update({n: _version(n) for n in names})
    out["cuda"] = torch.version.cuda
    return out


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

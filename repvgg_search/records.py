"""Structured records in a trial folder: atomic JSON and checkpoints, JSON lines, provenance."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RESULT = "result.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoints/last.pt"
DEPLOY_WEIGHTS = "deploy.pt"


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; records are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write `data` as indented JSON (non-finite floats become null)."""
    _atomic(Path(path), lambda f: f.write((json.dumps(_finite(data), indent=1) + "\n").encode()))


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomically save a checkpoint (tensors and plain Python values only, so it loads with weights_only)."""
    _atomic(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict | None:
    """A checkpoint written by `save_checkpoint`, read with `weights_only=True`, or None when absent."""
    path = Path(path)
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line (flushed and synced: a crash loses at most the line being written)."""
    with open(path, "a") as f:
        f.write(json.dumps(_finite(row)) + "\n")
        f.flush()
        os.fsync(f.fileno())


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


def lookup(record: Any, keys: tuple[str, ...]) -> Any:
    """`record[k0][k1]...`, or None where a key is missing or a level is not a dict."""
    for k in keys:
        record = record.get(k) if isinstance(record, dict) else None
    return record


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

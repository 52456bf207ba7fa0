"""Trial records from wandb: offline run folders through `wandb leet inspect`, projects through the public API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..schema import Status
from ..tracking import has_credentials

OFFLINE_RUN_RE = re.compile(r"^offline-run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9_-]+)$")
# wandb 0.31's default server, and the W&B API it forwards to (`wandb login` may have stored either).


class SourceError(BadInputError):
    """A source that cannot be read at all; the message says what was expected instead."""


def offline_run_id(run_dir: Path) -> str | None:
    """The run id encoded in an offline run folder's name (wandb's `offline-run-<date>_<time>-<id>`)."""
    m = OFFLINE_RUN_RE.match(run_dir.name)
    return m.group("id") if m else None


def wandb_cli() -> str:
    """Path of the `wandb` command of this environment (next to the interpreter first, then PATH)."""
    beside = Path(sys.executable).with_name("wandb")
    if beside.exists():
        return str(beside)
    found = shutil.which("wandb")
    if found is None:
        raise SourceError("the `wandb` command is not installed; it is needed to read wandb offline runs")
    return found


def inspect_offline_run(run_dir: Path, timeout_s: float = 120.0) -> dict[str, Any]:
    """wandb's own summary of one offline run (`wandb leet inspect --summary --json`), as a dict."""
    # Offline and without error reporting, wandb-core sends no telemetry anywhere.
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false"}
    cmd = [wandb_cli(), "leet", "inspect", "--summary", "--json", str(run_dir)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, encoding="utf-8", timeout=timeout_s, env=env, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SourceError(f"wandb leet inspect failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(proc.stdout)


def record_from_inspect(info: dict[str, Any], where: str) -> dict[str, Any]:
    """A trial record from a run's inspect summary: run summary = result without config; config = run config."""
    rec = {k: v for k, v in (info.get("summary") or {}).items() if not k.startswith("_")}
    rec.setdefault("trial_id", info.get("run_id"))
    rec.setdefault("tags", info.get("tags") or [])
    rec["config"] = info.get("config") or {}
    rec["_origin"] = {"kind": "wandb offline", "where": where, "wandb_state": info.get("state")}
    return rec


def read_offline_runs(run_dirs: list[Path]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Read offline runs in parallel (each read is a short subprocess); return (records, skipped)."""
    records, skipped = [], []
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_read_one, run_dirs))
    for run_dir, (rec, why) in zip(run_dirs, results):
        if rec is None:
            skipped.append((str(run_dir), why))
        else:
            records.append(rec)
    return records, skipped


def _read_one(run_dir: Path) -> tuple[dict | None, str]:
    try:
        return record_from_inspect(inspect_offline_run(run_dir), str(run_dir)), ""
    except (SourceError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        return None, f"wandb offline run unreadable: {e}"


def server_filters(group: str | None, tags: list[str] | None, state: str | None) -> dict[str, Any]:
    """MongoDB-style filters for `Api.runs`: run group, every tag, and the record status in the summary."""
    conds: list[dict[str, Any]] = []
    if group:
        conds.append({"group": group})
    conds.extend({"tags": {"$in": [t]}} for t in tags or [])
    if state:
        conds.append({"summary_metrics.status": Status.parse(state).value})
    if not conds:
        return {}
    return conds[0] if len(conds) == 1 else {"$and": conds}


def parse_project(spec: str) -> str:
    """`ENTITY/PROJECT` from the part after `wandb:`; raise SourceError for anything else."""
    parts = spec.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise SourceError(f"wandb source must look like wandb:ENTITY/PROJECT, got wandb:{spec}")
    return "/".join(parts)


def read_project(
    spec: str, *, group: str | None = None, tags: list[str] | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """Records of a wandb project's runs through the public API, filtered on the server."""
    path = parse_project(spec)
    if not has_credentials():
        # Checked before importing the API so that nothing is contacted and nothing prompts.
        raise SourceError(
            f"wandb:{path} needs wandb credentials: set WANDB_API_KEY or run `wandb login` "
            "(writes ~/.netrc); nothing was contacted"
        )
    import wandb

    try:
        runs = wandb.Api(timeout=60).runs(path, filters=server_filters(group, tags, state), per_page=200, lazy=False)
        return [record_from_api_run(run, path) for run in runs]
    except SourceError:
        raise
    except Exception as e:  # the API raises many types (network, auth, not found); report them as one kind
        raise SourceError(f"wandb API could not list runs of {path}: {type(e).__name__}: {e}") from e


def record_from_api_run(run: Any, path: str) -> dict[str, Any]:
    """A trial record from a `wandb.apis.public.Run` (summary = result without config)."""
    rec = {k: v for k, v in dict(run.summary_metrics).items() if not k.startswith("_")}
    rec.setdefault("trial_id", run.id)
    rec.setdefault("group", run.group)
    rec.setdefault("tags", list(run.tags or []))
    rec["config"] = dict(run.config)
    rec["_origin"] = {"kind": "wandb online", "where": f"wandb:{path}/{run.id}", "wandb_state": run.state}
    return rec

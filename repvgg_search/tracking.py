"""The wandb mirror of a trial: one run per trial, the same keys as the local records. Torch-free: the analysis
reads its credentials check."""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import BadInputError

MODES = ("offline", "online", "disabled")


@dataclass
class TrackingConfig:
    """The wandb mirror of a trial's records (the local records in the trial folder are always written)."""

    mode: str = "offline"  # offline (no account, no network) | online (needs credentials) | disabled
    project: str = "repvgg-search"  # wandb project
    entity: str | None = None  # wandb entity (user or team); null = the account's default
    group: str | None = None  # wandb group; sweeps and searches set it to their name
    tags: list[str] = field(default_factory=list)  # extra tags (preset and variant are always added)
    name: str | None = None  # run name; null = <preset>-<variant>-s<seed> (sweeps add the axes that vary)
    console: bool = True  # capture the trial's console output (the run's Logs tab)
    system_metrics: bool = True  # CPU/GPU/memory metrics (the run's System tab)


_log = logging.getLogger(__name__)


class TrackingError(BadInputError):
    """A tracking setting is invalid, or online tracking has no credentials."""


def validate_tracking(cfg: TrackingConfig) -> None:
    """Refuse an unknown mode, and online mode without wandb credentials, before any training starts."""
    if cfg.mode not in MODES:
        raise TrackingError(f"tracking.mode={cfg.mode!r} is unknown; allowed: {', '.join(MODES)}")
    if cfg.mode == "online" and not has_credentials():
        raise TrackingError(
            "tracking.mode=online but no wandb credentials were found (WANDB_API_KEY or a netrc entry from "
            "`wandb login`); log in, or use tracking.mode=offline (sync later with `wandb sync`)"
        )


# Hosts whose netrc entry `wandb login` writes, when WANDB_BASE_URL does not name another.
DEFAULT_HOSTS = ["api.forge.coreweave.com", "api.wandb.ai"]


def has_credentials() -> bool:
    """Whether wandb credentials exist locally (API key variable, identity token file, or a netrc entry)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base = os.environ.get("WANDB_BASE_URL")
    hosts = [urlsplit(base).hostname or ""] if base else DEFAULT_HOSTS
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        entries = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return False
    return any(entries.authenticators(h) is not None for h in hosts)


def run_id(trial_id: str, trial_dir: Path) -> str:
    """A trial's wandb run id: its trial id and a hash of its folder, so the same config trained in two folders
    makes two runs, and a resumed trial (same folder) continues its own."""
    where = hashlib.sha256(str(Path(trial_dir).resolve()).encode()).hexdigest()[:8]
    return f"{trial_id}-{where}"


def run_settings(cfg: TrackingConfig) -> Any:
    """Console capture and system metrics as `tracking.console` and `tracking.system_metrics` say."""
    import wandb

    return wandb.Settings(console="auto" if cfg.console else "off", x_disable_stats=not cfg.system_metrics)


class Tracker:
    """A wandb run mirroring one trial (or nothing when tracking is disabled or this is not rank 0)."""

    def __init__(
        self,
        cfg: TrackingConfig,
        *,
        trial_id: str,
        trial_dir: Path,
        config: dict[str, Any],
        tags: list[str],
        name: str,
        enabled: bool = True,
    ) -> None:
        self.run = None
        if cfg.mode == "disabled" or not enabled:
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group or "trials",
            job_type="trial",
            id=run_id(trial_id, trial_dir),
            name=cfg.name or name,
            tags=sorted(set(tags) | set(cfg.tags)),
            config=config,
            dir=str(trial_dir),
            mode=cfg.mode,
            resume="allow",  # the same folder resumed is the same run; another folder is another run
            settings=run_settings(cfg),
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.run.summary.update({"trial_id": trial_id, "trial_dir": str(Path(trial_dir).resolve())})

    @property
    def run_dir(self) -> str | None:
        """The wandb run's folder (offline runs: wandb/offline-run-...), or None."""
        return None if self.run is None else str(Path(self.run.dir).parent)

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(row)

    def summarize(self, result: Any) -> None:
        """Put the result record (a `schema.TrialRecord`, less its config, which is the run's config) into the run
        summary: the same keys as result.json."""
        if self.run is not None:
            self.run.summary.update({k: v for k, v in result.to_json().items() if k != "config"})

    def finish(self, exit_code: int) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def log_sweep_summary(
    cfg: TrackingConfig, *, name: str, folder: Path, config: dict[str, Any], tables: dict[str, Any], summary: dict
) -> str | None:
    """One wandb run per sweep (job type `sweep-summary`, the sweep's group): its definition as the config, its
    result tables as wandb Tables, its verdicts in the summary. Returns the run's folder (None when disabled)."""
    if cfg.mode == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=cfg.project, entity=cfg.entity, group=name, job_type="sweep-summary", id=run_id(f"{name}-summary", folder),
        name=f"{name} (summary)", config=config, dir=str(Path(folder).resolve()), mode=cfg.mode, resume="allow",
        settings=wandb.Settings(console="off", x_disable_stats=True),  # a short summary: nothing to watch
    )  # fmt: skip
    plain = {k: df.astype(object).where(df.notna(), None) for k, df in tables.items() if df is not None and len(df)}
    run.log({key: wandb.Table(dataframe=df) for key, df in plain.items()})  # missing values as null, not pd.NA
    run.summary.update(summary)
    run_dir = str(Path(run.dir).parent)
    run.finish()
    return run_dir

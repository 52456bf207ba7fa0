"""`python -m repvgg_search.train` (console script `repvgg-train`): one trial in its folder (`output_dir=PATH` moves
it)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..config import register_configs
from ..entry import hydra_entry
from ..schema import Status, TrialRecord
from . import (
    EXIT_BUSY,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    LOG,
    TrialBusy,
    TrialInterrupted,
    TrialSettings,
    claim_folder,
    run_trial,
    settings_from_config,
)
from .runner import check_memory, one_line

register_configs()
_log = logging.getLogger("repvgg_search.train")


def trial_folder(cfg: DictConfig, settings: TrialSettings) -> Path:
    """`output_dir`, else a `hydra.run.dir` given on the command line, else a folder named after the trial.

    The default name holds the trial id, so the same command (same config) always lands in the same folder and
    resumes there: outputs/trials/<preset>-<variant>-s<seed>-<trial id>.
    """
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if any(o.startswith("hydra.run.dir=") for o in HydraConfig.get().overrides.hydra):
        return Path(HydraConfig.get().runtime.output_dir)
    name = f"{settings.display_name}-{settings.trial_id}"
    return Path("outputs") / "trials" / name


def prepare(cfg: DictConfig) -> tuple[TrialSettings, Path]:
    """Validate the config and the output folder (BadInputError before any training or any folder is made)."""
    settings = settings_from_config(cfg)
    check_memory(settings)  # before the folder (and its log) exists
    trial_dir = trial_folder(cfg, settings)
    claim_folder(trial_dir, settings)
    return settings, trial_dir


def _summary(result: TrialRecord) -> str:
    m, c, sp = result.metrics, result.complexity, result.speed
    deploy = "n/a (not re-parameterizable)" if m.deploy_top1 is None else f"{m.deploy_top1:.2f}%"
    return (
        f"trial {result.trial_id}: top1 {m.top1:.2f}%, deploy top1 {deploy}; "
        f"deploy {c.deploy.params / 1e6:.2f} M params, {c.deploy.macs / 1e9:.3f} GMACs at 224; "
        f"{sp.images_per_s:.0f} images/s (protocol {sp.protocol}: {sp.form} form, batch {sp.batch_size}, "
        f"{'x'.join(map(str, sp.input_size))}, {sp.dtype}, spread {sp.spread:.2f}, {sp.device_name}, "
        f"{sp.source})"
    )


@hydra_entry("train")
def main(cfg: DictConfig) -> None:
    """Exit status: 0 done (or already done), 2 bad input (before any training), 3 interrupted, 4 diverged,
    5 another process trains this trial now, 1 failed (one line here; the traceback in the trial's log)."""
    settings, trial_dir = prepare(cfg)
    _log.info("trial %s (%s/%s) in %s", settings.trial_id, settings.preset, settings.arch.variant.label, trial_dir)
    try:
        result = run_trial(settings, trial_dir, wait=False)
    except TrialInterrupted as exc:
        print(f"interrupted ({exc}); rerun the same command to resume in {trial_dir} from its last finished epoch",
              file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_INTERRUPTED)
    except TrialBusy as exc:
        print(f"error: {exc}: that process trains this trial now; nothing started (wait for it, or stop it)",
              file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_BUSY)
    except (OSError, MemoryError, torch.OutOfMemoryError) as exc:
        print(f"error: {one_line(exc)} (recorded in {trial_dir / 'result.json'}; traceback in {trial_dir / LOG})",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
    _report(result, trial_dir)


def _report(result: TrialRecord, trial_dir: Path) -> None:
    if result.metrics is None:  # ranks other than 0 of a multi-process trial record nothing
        return
    if result.status is not Status.COMPLETED:  # a failed conversion gate, a diverged training: the record says which
        print(f"error: {result.error} (status {result.status.value}, recorded in {trial_dir / 'result.json'})",
              file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_DIVERGED if result.status is Status.DIVERGED else 1)
    print(_summary(result))
    print(json.dumps({"trial_id": result.trial_id, "status": result.status.value}))


if __name__ == "__main__":
    main()

"""One trial: its settings (`settings`: typed, validated, identified) and its run (`runner`: train, evaluate,
convert, check, profile, record; resumable, and a submitit Checkpointable)."""

from .artifact import TrialModel, from_trial
from .folder import LOG, TrialBusy, TrialFolderError, claim_folder, trains_now
from .group import TrialGroup
from .runner import EXIT_BUSY, EXIT_DIVERGED, EXIT_INTERRUPTED, TrialInterrupted, TrialRunner, run_trial
from .settings import (
    NOT_IN_ID,
    TrialSettings,
    settings_from_config,
    settings_from_typed,
    trial_id,
    typed_config,
    validate,
)

__all__ = [
    "EXIT_BUSY",
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "LOG",
    "NOT_IN_ID",
    "TrialBusy",
    "TrialFolderError",
    "TrialGroup",
    "TrialInterrupted",
    "TrialModel",
    "TrialRunner",
    "TrialSettings",
    "claim_folder",
    "from_trial",
    "run_trial",
    "settings_from_config",
    "settings_from_typed",
    "trains_now",
    "trial_id",
    "typed_config",
    "validate",
]

"""One trial: its settings (`settings`: typed, validated, identified) and its run (`runner`: train, evaluate,
convert, check, profile, record; resumable, and a submitit Checkpointable)."""

from .group import TrialGroup
from .runner import (
    EXIT_INTERRUPTED,
    LOG,
    TrialFolderError,
    TrialInterrupted,
    TrialRunner,
    claim_folder,
    run_trial,
)
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
    "EXIT_INTERRUPTED",
    "LOG",
    "NOT_IN_ID",
    "TrialFolderError",
    "TrialGroup",
    "TrialInterrupted",
    "TrialRunner",
    "TrialSettings",
    "claim_folder",
    "run_trial",
    "settings_from_config",
    "settings_from_typed",
    "trial_id",
    "typed_config",
    "validate",
]

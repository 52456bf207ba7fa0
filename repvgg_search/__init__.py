"""RepVGG architecture search and ablation harness.

`repvgg_search.from_trial(path)` loads a finished trial's deploy form with its architecture and record.
"""

from typing import Any

__all__ = ["from_trial"]


def __getattr__(name: str) -> Any:  # lazy: `import repvgg_search` stays cheap for the command lines
    if name == "from_trial":
        from .trial.artifact import from_trial

        return from_trial
    raise AttributeError(f"module 'repvgg_search' has no attribute {name!r}")

"""`python -m repvgg_search.train`: one trial (the trial package's command, `trial/cli.py`)."""

from .trial.cli import main, prepare, trial_folder

__all__ = ["main", "prepare", "trial_folder"]

if __name__ == "__main__":
    main()

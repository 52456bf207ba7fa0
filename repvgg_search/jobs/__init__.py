"""The job layer shared by grid sweeps and searches: launchers (local, SLURM, debug), the job pool, progress."""

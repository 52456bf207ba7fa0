"""Helpers shared by the tests: requiring a component (skip locally, fail in CI)."""

from __future__ import annotations

import os
import subprocess

import pytest

# .ci/run sets REPVGG_REQUIRE_ALL=1: there a skipped test means a component CI should have started is missing.
REQUIRE_ALL = os.environ.get("REPVGG_REQUIRE_ALL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a component a test needs is not available."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required component missing (REPVGG_REQUIRE_ALL=1): {reason}", pytrace=False)
    pytest.skip(reason)


def slurm_up() -> bool:
    """Whether a SLURM controller answers (scripts/slurm_up.sh starts one)."""
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def require_gpu(count: int = 1) -> None:
    """Skip unless `count` CUDA devices are visible (the one skip CI allows, for `gpu` tests without a GPU)."""
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < count:
        pytest.skip(f"needs {count} CUDA device(s); {visible} visible")

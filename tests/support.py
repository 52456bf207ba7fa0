"""Helpers shared by the tests: requiring a component (skip locally, fail in CI)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


def held_epochs_env(tmp_path: Path) -> dict[str, str]:
    """The environment of trial processes whose epochs `hold_epochs(tmp_path)` can hold: their own device locks."""
    return {**os.environ, "REPVGG_LOCK_DIR": str(tmp_path / "device-locks")}


@contextlib.contextmanager
def hold_epochs(tmp_path: Path) -> Iterator[None]:
    """Hold the CPU's device lock as a speed measurement does: the epoch in progress of every trial started with
    `held_epochs_env(tmp_path)` ends, and none starts a new one until this exits. A test that needs a trial still
    training while something else happens holds it here instead of racing its remaining epochs."""
    import torch

    from repvgg_search.devices import DeviceLock

    (tmp_path / "device-locks").mkdir(exist_ok=True)
    with DeviceLock(torch.device("cpu"), tmp_path / "device-locks").exclusive():
        yield

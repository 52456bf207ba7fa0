"""Helpers shared by the tests: the tiny-trial overrides, running a command, waiting, requiring a component."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]
_T = TypeVar("_T")

# -- the tiny trial -------------------------------------------------------------------------------------------------
# The smallest meaningful trial, which every test that trains starts from: RepVGG-A0's layout at a quarter of its
# width (stage widths 16, 16, 32, 64, 128; 0.68 M parameters in train form, 0.61 M deployed, 10 classes) on the
# bundled digits (1438 training and 359 validation images at 32 px), one epoch, wandb off, and a complete record: its
# speed is the `cpu` protocol (batch 16 at 224 px, float32, 5 rounds) cut to 2 timed batches a round, named
# `cpu+iters=2`. Its cost, `python -m repvgg_search.train *TINY_TRIAL output_dir=...` timed twice, alternated with
# QUICK_TRIAL in one run, on the 2-core development machine while other sessions ran (load 2.4 to 3.5; torch's
# default of 2 threads): 33 and 84 s wall a trial (process start included), of which training 20 and 51 s and
# the profile stage (complexity and speed) 2 and 19 s. Extend it (later overrides win) rather than copying it.
TINY_TRIAL = ["model.a=0.25", "model.b=0.25", "train.epochs=1", "speed.iters=2", "tracking.mode=disabled"]
# The cheapest trial, for tests where speed is not what they check and where other processes train beside it: one
# thread, and speed at the trial's own 32 px in one round (`trial_size+iters=2,rounds=1`). In the same run: 12 and
# 23 s wall a trial (training 3 and 4 s), 3.3 times less than TINY_TRIAL on average.
QUICK_SPEED = ["speed=trial_size", "speed.rounds=1"]  # speed at the trial's own 32 px in one round
QUICK_TRIAL = [*TINY_TRIAL, "threads=1", *QUICK_SPEED]
# A width search of tiny trials: one block per stage, a and b searched over {0.25, 0.5} (four pairs; the sampled
# values replace TINY_TRIAL's quarter width).
TINY_SEARCH = [
    *TINY_TRIAL, "model.depths=[1,1,1,1,1]", "speed.warmup=1",
    "search.space.a={low:0.25,high:0.5,step:0.25}", "search.space.b={low:0.25,high:0.5,step:0.25}",
]  # fmt: skip
# 128 training and 64 validation random images instead of digits: where the mechanics are under test, not accuracy.
SYNTHETIC_DATA = ["data=synthetic", "data.synthetic_train_size=128", "data.synthetic_val_size=64"]
# A search's workers poll and beat often, and a dead worker's trial is stale after 3 s (the defaults suit hours).
FAST_SEARCH = ["sweep.poll_s=0.3", "search.heartbeat_interval=1", "search.grace_period=3"]


# -- running a command line and waiting on it -----------------------------------------------------------------------
def cli_command(module: str, *args: str | os.PathLike) -> list[str]:
    """The command line `python -m module args...` of this interpreter (for `subprocess.Popen`)."""
    return [sys.executable, "-m", module, *map(str, args)]


def environ(**changes: str) -> dict[str, str]:
    """This process's environment with `changes` (e.g. `environ(WANDB_MODE="offline")`), for `run_cli(env=...)`."""
    return {**os.environ, **changes}


def run_cli(
    module: str,
    *args: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args...` to its end: in `cwd` (the repository root by default, so that `-m` imports
    this checkout's package), with `env` as its whole environment (this process's by default), output captured as
    text, killed after `timeout` seconds (subprocess.TimeoutExpired). The caller checks the exit status."""
    return subprocess.run(
        cli_command(module, *args),
        cwd=REPO if cwd is None else cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class CliServer:
    """Command lines for tests that run many short ones (each refused in a second): `run(module, *args, cwd=...)`
    answers like `run_cli`, but from a child forked off one warm interpreter (`tests/cli_server.py`), which has
    imported `warm` once instead of at every start (3.5 s a command on the development machine). The child runs
    the module as `python -m` would; a test that checks how a real process starts uses `run_cli`."""

    def __init__(self, warm: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "cli_server.py"), *warm],
            cwd=REPO,
            env=None if env is None else dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._read(300, "the fork server to import its modules")

    def _read(self, timeout: float, what: str) -> str:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            pytest.fail(f"no answer from the fork server after {timeout} s waiting for {what}")
        return line

    def run(
        self, module: str, *args: str | os.PathLike, cwd: str | os.PathLike, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        request = {"module": module, "args": [str(a) for a in args], "cwd": str(cwd)}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._read(timeout, f"python -m {module} {' '.join(request['args'])}"))
        return subprocess.CompletedProcess(cli_command(module, *args), reply["rc"], reply["stdout"], reply["stderr"])

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()


def wait_for(predicate: Callable[[], _T], timeout: float, what: str, interval: float = 0.2) -> _T:
    """Call `predicate` every `interval` seconds until it returns something true, and return that; fail the test
    with `what` in the message after `timeout` seconds. A predicate may itself fail the test (a process that
    exited early) to end the wait at once."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
    return found


# -- components a test needs ----------------------------------------------------------------------------------------
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
    return environ(REPVGG_LOCK_DIR=str(tmp_path / "device-locks"))


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

"""Sweep driver overhead: time from the command to the first trial starting, and to plan a 1,000-trial dry run.

Run: python benchmarks/sweep_overhead.py        Targets (issue 4): <= 10 s and <= 10 s.
"First trial starting" = its result.json says `running`: the trial's own process has imported everything, built
its data and model, and begun training (local launcher, the ablation sweep on the embedded defaults).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CMD = [sys.executable, "-m", "repvgg_search.sweep", "+sweep=ablation", "tracking.mode=disabled"]


def first_trial_start(folder: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CMD, f"sweep.dir={folder}"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while time.perf_counter() - t0 < 120:
            for result in folder.glob("trials/*/result.json"):
                if json.loads(result.read_text() or "{}").get("status") == "running":
                    return time.perf_counter() - t0
            time.sleep(0.05)
        raise TimeoutError("no trial started within 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the driver cancels its trial jobs on SIGTERM
        proc.wait(timeout=60)


def dry_run_1000(folder: Path) -> tuple[float, int]:
    t0 = time.perf_counter()  # 11 variants x 91 seeds = 1,001 trials
    subprocess.run([*CMD, "sweep.seeds=91", f"sweep.dir={folder}", "sweep.dry_run=true"], cwd=REPO,
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    elapsed = time.perf_counter() - t0
    return elapsed, len(json.loads((folder / "sweep.json").read_text())["trial_ids"])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = first_trial_start(Path(tmp) / "first")
        plan, n = dry_run_1000(Path(tmp) / "plan")
    print(f"command -> first trial running: {start:.2f} s  (target <= 10 s; ratio {start / 10:.2f})")
    print(
        f"dry run of {n} trials (validate, write configs, print plan): {plan:.2f} s  (target <= 10 s; ratio {plan / 10:.2f})"
    )
    print(f"machine: {os.cpu_count()} cores; both times include Python start-up and imports (torch, hydra)")


if __name__ == "__main__":
    main()

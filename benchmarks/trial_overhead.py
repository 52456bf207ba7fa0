"""The fixed cost of a trial (start-up, imports, data, model build, wandb init, conversion, profiling) as a fraction
of a 60 s trial.

Run: python benchmarks/trial_overhead.py [--epochs 1]      Target (issue 3): <= 15 % of 60 s.
It runs the default trial (a0 on digits, wandb offline) for one epoch through the real command line and splits
its wall time with the trial's own timings: fixed = wall time - training time (the epochs themselves).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trial"
        cmd = [sys.executable, "-m", "repvgg_search.train", f"train.epochs={args.epochs}", f"output_dir={out}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        result = json.loads((out / "result.json").read_text())
    t = result["timings"]
    fixed = wall - t["train_s"]
    startup = wall - t["total_s"]
    print(
        f"trial a0/digits, {args.epochs} epoch(s), wandb offline, {result['speed']['device_name']} "
        f"({result['speed']['threads']} threads)"
    )
    print(f"  wall time {wall:.2f} s; training {t['train_s']:.2f} s")
    print(
        f"  start-up and imports {startup:.2f} s, set-up (data, model, wandb init) {t['setup_s']:.2f} s, "
        f"final eval {t.get('eval_s', 0):.2f} s, conversion + check {t.get('convert_s', 0):.2f} s, "
        f"profiling {t.get('profile_s', 0):.2f} s"
    )
    print(f"fixed cost {fixed:.2f} s = {100 * fixed / 60:.1f} % of a 60 s trial  (target <= 15 %)")


if __name__ == "__main__":
    main()

"""Rank correlation of a trial's top1 at the ASHA rungs with its final top1, under two learning-rate schedules.

For a small population of widths (model.a x model.b, groups 1, seed 0, digits at 32 px, the proxy recipe), it runs
the ordinary trial command (`python -m repvgg_search.train ...`) and reads each trial's metrics.jsonl:

- continued: one cosine schedule over `--epochs` (what a promoted trial resuming its checkpoint gets): the top1
  at rung r is the val top1 of epoch r of the full run, which is exactly what the trial would show had it paused
  there (pausing changes nothing before it).
- budgeted: a complete short schedule per rung ("Budgeted Training", Li et al., ICLR 2020: the learning rate decays
  to zero at the end of the budget): a separate trial with train.epochs=r, its final val top1.

The final top1 is the continued run's last epoch (what a full-fidelity trial records). Correlations: Kendall's
tau-b and Spearman's rho (scipy.stats) over the population; ties in top1 (359 validation images: steps of 0.28
points) count as ties.

    python benchmarks/rung_correlation.py [--epochs 9] [--min-epochs 1] [--eta 3] [--jobs 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scipy import stats

from repvgg_search.search.asha import rung_levels

A_VALUES = (0.25, 0.5, 0.75, 1.0)
B_VALUES = (0.5, 1.5)
# Only the training matters here: a short speed figure at the trial's own size and a small gate keep the fixed
# cost of each trial low (neither is part of the trial id).
CHEAP = ["speed=trial_size", "speed.warmup=0", "speed.iters=1", "speed.rounds=1", "speed.retries=0",
         "gate.images=64", "tracking.mode=disabled", "keep_checkpoint=none", "threads=1"]  # fmt: skip


def run_trial(a: float, b: float, epochs: int, out: Path) -> list[dict]:
    """One trial through the trial command; its metrics.jsonl rows."""
    folder = out / f"a{a:g}-b{b:g}-e{epochs}"
    cmd = [sys.executable, "-m", "repvgg_search.train", f"model.a={a}", f"model.b={b}", f"train.epochs={epochs}",
           "seed=0", f"output_dir={folder}", *CHEAP]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def top1_at(rows: list[dict], epoch: int) -> float:
    return next(float(r["val_top1"]) for r in rows if r["epoch"] == epoch)


def correlations(x: list[float], y: list[float]) -> tuple[float, float]:
    return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=9, help="train.epochs of the full-fidelity trial")
    p.add_argument("--min-epochs", type=int, default=1, help="search.min_epochs: the first rung")
    p.add_argument("--eta", type=int, default=3, help="search.eta")
    p.add_argument("--jobs", type=int, default=2, help="trials side by side (1 torch thread each)")
    p.add_argument("--out", type=Path, default=None, help="where the trial folders go (default: a temp folder)")
    args = p.parse_args()
    rungs = rung_levels(args.min_epochs, args.eta, args.epochs)
    out = args.out or Path(tempfile.mkdtemp(prefix="rung-corr-"))
    population = list(itertools.product(A_VALUES, B_VALUES))
    jobs = [(a, b, e) for a, b in population for e in (args.epochs, *rungs)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = dict(zip(jobs, pool.map(lambda j: run_trial(*j, out), jobs)))
    wall = time.perf_counter() - t0
    final = [top1_at(rows[(a, b, args.epochs)], args.epochs) for a, b in population]
    print(f"population: model.a in {A_VALUES} x model.b in {B_VALUES} (a0 depths, groups 1, seed 0), digits 32 px, "
          f"proxy recipe, train.epochs={args.epochs}; rungs {rungs} (min_epochs {args.min_epochs}, eta {args.eta}); "
          f"{len(jobs)} trials in {wall:.0f} s, {args.jobs} side by side, 1 thread each; folders in {out}")  # fmt: skip
    print("  a     b    final  " + "  ".join(f"cont@{r:<3d} budg@{r:<3d}" for r in rungs))
    for (a, b), f in zip(population, final):
        cells = [f"{top1_at(rows[(a, b, args.epochs)], r):8.2f} {top1_at(rows[(a, b, r)], r):8.2f}" for r in rungs]
        print(f"  {a:<5g} {b:<4g} {f:6.2f}  " + "  ".join(cells))
    summary = []
    for r in rungs:
        cont = correlations([top1_at(rows[(a, b, args.epochs)], r) for a, b in population], final)
        budg = correlations([top1_at(rows[(a, b, r)], r) for a, b in population], final)
        print(f"rung {r}: continued schedule tau {cont[0]:.2f} rho {cont[1]:.2f}; "
              f"budgeted schedule tau {budg[0]:.2f} rho {budg[1]:.2f} (vs final top1, n={len(population)})")  # fmt: skip
        summary.append(f"rung {r} continued {cont[0]:.2f} budgeted {budg[0]:.2f}")
    print(f"rung correlation (Kendall tau with final top1): {'; '.join(summary)}")


if __name__ == "__main__":
    main()

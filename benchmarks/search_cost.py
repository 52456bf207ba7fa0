"""What a front costs: a full-fidelity and an ASHA width search of the same space, on digits, at equal epochs.

For each search seed, two (three with --plain) real searches (`python -m repvgg_search.sweep +sweep=width_search`, local workers, a
journal file each) over one space: RepVGG with depths [1, 1, 2, 4, 1] (9 layers), model.a in {0.25, .., 1.0},
model.b in {0.5, .., 2.0} (16 candidates, groups 1), objectives (top1, images_per_s), TPE, the proxy recipe with
train.epochs=9, digits at 32 px, one thread per trial, two trials side by side:

- asha: search.fidelity=asha, min_epochs 1, eta 3 (rungs 1 and 3, then 9), search.n_trials=12 candidates (27 with
  --space wide; 12 x 3 = 36 epochs expected with budgeted rung runs, `search.asha.epochs_per_candidate`; asynchronous
  promotion spends more: a candidate in a rung's top 1/eta when it arrives stays promoted after later arrivals
  push it out, and a closed rung promotes its best));
- full: run after it, search.n_trials = the epochs the asha search spent / 9, rounded up (at least the nominal
  budget below, at most the space's size), so both searches have the same epoch budget (with --plain, the larger
  of the two ASHA searches' spends, so that each is compared with full's front at its own total).

Both searches of a seed share one speed folder (a symlink), so a candidate's images/s is one figure in both: only
accuracy and the search itself differ. Each search's hypervolume is computed after every finished run, in the
order the runs finished (the last epoch's line in metrics.jsonl), against the epochs trained so far: the front of
the full-fidelity results only (a rung run is not a result), objectives (top1 %, images/s divided by the fastest
candidate's), reference point (10 %, chance on 10 classes; 0). Then

- R = hypervolume of asha's final front / of full's front at the same epochs (asha's total);
- Q = epochs asha needed to reach that full-fidelity hypervolume / epochs the full search needed to reach it (inf
  when asha never did);
- K = Kendall's tau of a candidate's rung-1 top1 (the asha searches' first-rung runs) with its final top1 (a
  9-epoch run of either search), over the distinct candidates that have both (trials are seeded alike: seed 0).

Each seed's line also reads both curves at ASHA's nominal budget in whole full-fidelity runs (36 epochs for 12
candidates at rungs 1, 3, 9; 72 at rungs 3, 9; 81 for the wide space's 27: what this script reported before full's
budget followed asha's spend), which is also the full search's least budget. R and Q are the medians over the seeds.
Q has a floor whatever the ranking rule: ASHA's first full-fidelity result needs a candidate in the top floor(n / 3)
of rung 3, so 3 candidates at rung 3, so 9 at rung 1: 9 x 1 + 3 x 3 + 9 = 27 epochs; or, through a closed rung, all
12 candidates started and one promoted twice: 12 + 3 + 9 = 24. So Q <= 0.5 needs a full search that took 48 epochs
or more to reach its front. `--plain` also runs the ASHA search with plain Pareto rungs (search.top1_tolerance=0)
beside the default epsilon-dominance ones, with the same speed folder, against the same full search. Last line:
`search cost: hypervolume asha/full at equal epochs R, epochs to full's hypervolume Q, rank correlation of rung-1
and final top1 K`.

`--space deep` searches the ablation's deep proxy instead (`model=d2se model.use_se=false`: 48 layers, a in
{0.125, .., 0.5}, b in {0.25, .., 1.0}, 16 candidates), where a short run might rank candidates differently.

`--space wide` searches the shallow layout over a space far larger than the budget: a in {0.25, 0.375, .., 1.0},
b in {0.5, 0.75, .., 2.0}, groups in {1, 2, 4} (147 candidates), with 27 ASHA candidates (eta^3: 27 at rung 1, 9 at
rung 3, 3 at rung 9 nominally); the full search then trains about a tenth of the space. `--space deep-wide` is
the deep proxy over as large a space: a in {0.125, 0.1875, .., 0.5}, b in {0.25, 0.375, .., 1.0}, groups in
{1, 2, 4} (147 candidates, 27 ASHA candidates).

`--min-epochs 3` starts the ladder at 3 epochs (rungs 3 and 9): fewer, better-ranked first-rung runs (K is then
the 3-epoch top1's correlation with the final one), at 3 epochs a candidate instead of 1.

    python benchmarks/search_cost.py [--seeds 3] [--out DIR] [--space shallow|deep|wide|deep-wide] [--plain] [--min-epochs 1|3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scipy import stats

from repvgg_search.search.asha import epochs_per_candidate, rung_levels

SPACES = {
    "shallow": ["model.depths=[1,1,2,4,1]", "search.space.a={low:0.25,high:1.0,step:0.25}",
                "search.space.b={low:0.5,high:2.0,step:0.5}", "search.space.groups=[1]"],
    # the ablation's deep proxy (conf/sweep/ablation_deep.yaml: D2se layout, 48 layers, no SE) around its widths
    "deep": ["model=d2se", "model.use_se=false", "search.space.a={low:0.125,high:0.5,step:0.125}",
             "search.space.b={low:0.25,high:1.0,step:0.25}", "search.space.groups=[1]"],
    # the shallow layout over a space far larger than the budget: finer a and b, and groups (7 x 7 x 3)
    "wide": ["model.depths=[1,1,2,4,1]", "search.space.a={low:0.25,high:1.0,step:0.125}",
             "search.space.b={low:0.5,high:2.0,step:0.25}", "search.space.groups=[1,2,4]"],
    # the deep proxy over as large a space: a and b at half the steps, and groups (7 x 7 x 3)
    "deep-wide": ["model=d2se", "model.use_se=false", "search.space.a={low:0.125,high:0.5,step:0.0625}",
                  "search.space.b={low:0.25,high:1.0,step:0.125}", "search.space.groups=[1,2,4]"],
}  # fmt: skip
SPACE_SIZE = {"shallow": 16, "deep": 16, "wide": 147, "deep-wide": 147}
# ASHA's candidates (search.n_trials) per space: 12 in the 16-candidate spaces, 27 (= eta^3) in the wide ones
CANDIDATES = {"shallow": 12, "deep": 12, "wide": 27, "deep-wide": 27}
BASE = ["train.epochs=9", "threads=1", "tracking.mode=disabled", "keep_checkpoint=none", "gate.images=64",
        "launcher.max_parallel=2", "sweep.poll_s=0.5", "search.objectives=[top1,images_per_s]"]  # fmt: skip
EPOCHS, ETA, REF_TOP1 = 9, 3, 10.0
# and search.n_trials from the space (CANDIDATES), search.min_epochs from --min-epochs
ASHA = ["search.fidelity=asha", f"search.eta={ETA}"]
# --plain: the same ASHA search ranking its rungs by plain Pareto dominance (search.top1_tolerance=0), side by side
PLAIN = [*ASHA, "search.top1_tolerance=0"]


def run_search(folder: Path, speed: Path, seed: int, overrides: list[str], space: str = "shallow") -> float:
    folder.mkdir(parents=True)
    (folder / "speed").symlink_to(speed, target_is_directory=True)  # one speed figure per architecture
    cmd = [sys.executable, "-m", "repvgg_search.sweep", "+sweep=width_search", f"sweep.dir={folder}",
           f"search.seed={seed}", *SPACES[space], *BASE, *overrides]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def runs(folder: Path) -> list[dict]:
    """Every trained run: its epochs, end time, top1, speed, and whether it is a full-fidelity result."""
    out = []
    for result in folder.glob("trials/*/result.json"):
        r = json.loads(result.read_text())
        metrics = result.with_name("metrics.jsonl")
        if r.get("metrics") is None or not metrics.exists():
            continue
        search = r.get("search") or {}
        out.append({
            "candidate": search.get("candidate") or r["trial_id"],
            "epochs": r["metrics"]["epochs"],
            "end": metrics.stat().st_mtime,
            "top1": r["metrics"]["top1"],
            "speed": r["speed"]["images_per_s"],
            "final": r["status"] == "completed" and search.get("kind") == "completed" and search.get("feasible"),
        })  # fmt: skip
    return sorted(out, key=lambda x: x["end"])


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """The area two maximized objectives dominate above `ref` (exact in 2-D: a sweep over the sorted front)."""
    pts = sorted({p for p in points if p[0] > ref[0] and p[1] > ref[1]}, key=lambda p: (-p[0], -p[1]))
    area, best_y = 0.0, ref[1]
    for x, y in pts:
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return area


def curve(rows: list[dict], fastest: float) -> list[tuple[int, float]]:
    """(epochs trained so far, hypervolume of the results so far) after each run."""
    spent, front, out = 0, [], []
    for r in rows:
        spent += r["epochs"]
        if r["final"]:
            front.append((r["top1"], r["speed"] / fastest))
        out.append((spent, hypervolume(front, (REF_TOP1, 0.0))))
    return out


def at(points: list[tuple[int, float]], epochs: int) -> float:
    return max((hv for e, hv in points if e <= epochs), default=0.0)


def first(points: list[tuple[int, float]], target: float) -> int | None:
    """The epochs after which a curve first reaches `target` (None: never)."""
    return next((e for e, hv in points if hv >= target), None)


def compare(asha: list[tuple[int, float]], full: list[tuple[int, float]], nominal: int) -> tuple[float, float, str]:
    """R and Q of one ASHA search against the full-fidelity one, and the line that shows them.

    R: the ASHA search's final hypervolume over the full search's at the same epochs (ASHA's total).
    Q: the epochs ASHA needed to reach that full-fidelity hypervolume over the epochs the full search needed.
    """
    spent, final = asha[-1]
    target = at(full, spent)
    ratio = final / target if target else math.nan
    mine, theirs = first(asha, target), first(full, target)
    q = mine / theirs if mine is not None and theirs else math.inf
    line = (f"{spent} epochs, hypervolume {final:.2f} against full's {target:.2f} at {spent} epochs: R {ratio:.3f}, "
            f"Q {q:.3f} ({mine} / {theirs} epochs); at {nominal} epochs {at(asha, nominal):.2f} against "
            f"{at(full, nominal):.2f}")  # fmt: skip
    return ratio, q, line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="search seeds (search.seed=0..N-1)")
    p.add_argument("--out", type=Path, default=None, help="where the sweep folders go (default: a temp folder)")
    p.add_argument("--space", choices=sorted(SPACES), default="shallow",
                   help="shallow: depths [1, 1, 2, 4, 1]; deep: the ablation's 48-layer D2se proxy; wide, deep-wide: "
                        "either over 147 candidates")  # fmt: skip
    p.add_argument("--plain", action="store_true",
                   help="also run ASHA with search.top1_tolerance=0 (plain Pareto rungs) and print its R and Q")  # fmt: skip
    p.add_argument("--min-epochs", type=int, default=1, choices=[1, 3],
                   help="search.min_epochs: the first rung (1: rungs 1, 3, 9; 3: rungs 3, 9)")  # fmt: skip
    args = p.parse_args()
    ladder = [f"search.min_epochs={args.min_epochs}", f"search.n_trials={CANDIDATES[args.space]}"]
    # ASHA's nominal spend in whole full-fidelity runs (budgeted rung runs: 3 epochs a candidate at min_epochs 1,
    # 6 at min_epochs 3), the full search's least budget and the curves' second reading
    per_candidate = epochs_per_candidate(rung_levels(args.min_epochs, ETA, EPOCHS), EPOCHS, ETA)
    nominal = math.ceil(CANDIDATES[args.space] * per_candidate / EPOCHS)
    modes = {"asha": [*ASHA, *ladder], **({"plain": [*PLAIN, *ladder]} if args.plain else {})}
    out = args.out or Path(tempfile.mkdtemp(prefix="search-cost-"))
    print(f"space: {' '.join(SPACES[args.space])}; train.epochs={EPOCHS}, digits 32 px, proxy recipe, 1 thread a trial, "
          f"2 side by side; folders in {out}")  # fmt: skip
    results, pairs, plain = [], {}, []
    for seed in range(args.seeds):
        speed = out / f"speed-seed{seed}"
        speed.mkdir(parents=True)
        found = {}
        for mode, overrides in modes.items():
            wall = run_search(out / f"{mode}-seed{seed}", speed, seed, overrides, args.space)
            found[mode] = (runs(out / f"{mode}-seed{seed}"), wall)
        # the full-fidelity search gets the epochs the ASHA searches spent (the larger, rounded up to whole
        # candidates): each ASHA search is compared with full's front at its own total
        spent = max(sum(r["epochs"] for r in found[mode][0]) for mode in modes)
        n_full = min(SPACE_SIZE[args.space], max(nominal, math.ceil(spent / EPOCHS)))
        wall = run_search(out / f"full-seed{seed}", speed, seed, [f"search.n_trials={n_full}"], args.space)
        found["full"] = (runs(out / f"full-seed{seed}"), wall)
        fastest = max(r["speed"] for rows, _ in found.values() for r in rows)
        full = curve(found["full"][0], fastest)
        for mode in modes:
            r, q, line = compare(curve(found[mode][0], fastest), full, nominal * EPOCHS)
            (results if mode == "asha" else plain).append((r, q))
            name = "asha" if mode == "asha" else "asha, plain Pareto rungs (top1_tolerance=0)"
            print(f"seed {seed}: {name}: {len(found[mode][0])} runs, {found[mode][1]:.0f} s, {line}")
        print(f"seed {seed}: full: {len(found['full'][0])} runs, {full[-1][0]} epochs, {found['full'][1]:.0f} s, "
              f"hypervolume {full[-1][1]:.2f}")  # fmt: skip
        for r in found["asha"][0]:
            if r["epochs"] == args.min_epochs:
                pairs.setdefault(r["candidate"], {})["rung1"] = r["top1"]
        for r in [*found["full"][0], *found["asha"][0]]:
            if r["epochs"] == EPOCHS:
                pairs.setdefault(r["candidate"], {})["final"] = r["top1"]
    both = [(v["rung1"], v["final"]) for v in pairs.values() if {"rung1", "final"} <= set(v)]
    tau = float(stats.kendalltau(*zip(*both)).statistic) if len(both) >= 3 else math.nan
    r_med = statistics.median(r for r, _ in results)
    q_med = statistics.median(q for _, q in results)
    if plain:
        print(f"plain Pareto rungs: R per seed {[round(r, 3) for r, _ in plain]}, median "
              f"{statistics.median(r for r, _ in plain):.3f}; Q per seed {[round(q, 3) for _, q in plain]}")  # fmt: skip
    print(f"R per seed {[round(r, 3) for r, _ in results]}, Q per seed {[round(q, 3) for _, q in results]}; "
          f"K over {len(both)} candidates with a rung-1 and a final top1")  # fmt: skip
    print(f"search cost: hypervolume asha/full at equal epochs {r_med:.3f}, epochs to full's hypervolume {q_med:.3f}, "
          f"rank correlation of rung-1 and final top1 {tau:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

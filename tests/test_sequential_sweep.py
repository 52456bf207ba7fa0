"""Sequential seeds in a sweep: which trials each batch runs (from the records alone), seeds that fail for good
replaced by the next ones, and a real sequential sweep that stops at its budget with every comparison decided."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repvgg_search import files
from repvgg_search.analysis.sequential import SequentialDesign
from repvgg_search.schema import Status
from repvgg_search.sweep.folder import PlannedTrial
from repvgg_search.sweep.sequential import SequentialPlan

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("full", "no_1x1", "no_branches")


def _plan(max_seeds: int = 12, schedule=(3, 5, 8, 12)) -> tuple[SequentialPlan, dict[tuple[str, int], str]]:
    trials = [PlannedTrial(f"{v}-{s}", {}, {"variant": v, "seed": s}) for v in VARIANTS for s in range(max_seeds)]
    plan = SequentialPlan(trials, SequentialDesign(schedule=schedule, max_seeds=max_seeds), "full")
    return plan, {(v, s): f"{v}-{s}" for v in VARIANTS for s in range(max_seeds)}


class Records:
    """A fake sweep folder's records: status and top1 by trial id (what the driver reads)."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self.lost: set[str] = set()

    def status(self, tid: str) -> Status:
        return Status.COMPLETED if tid in self.done else Status.FAILED if tid in self.lost else Status.PLANNED

    def top1(self, tid: str) -> float | None:
        return self.done.get(tid)

    def run(self, tids: list[str], effect: dict[str, float], spread: dict[str, float] | None = None) -> None:
        for t in tids:
            variant, seed = t.rsplit("-", 1)
            if t not in self.lost:  # a trial that failed for good stays failed
                scale = (spread or {}).get(variant, 0.3)
                noise = np.random.default_rng([int(seed), len(variant)]).normal(0.0, scale)  # seeded per trial
                self.done[t] = 95.0 + effect.get(variant, 0.0) + noise


def _drive(plan: SequentialPlan, records: Records, effect: dict[str, float], spread=None) -> list[list[str]]:
    batches = []
    while True:
        comparisons = plan.state(records.status, records.top1)
        todo = [t for t in plan.wanted(comparisons, records.status) if records.status(t) is Status.PLANNED]
        if not todo:
            return batches
        batches.append(sorted(todo))
        records.run(todo, effect, spread)


def test_the_first_batch_is_every_variant_at_the_first_look():
    plan, tid = _plan()
    records = Records()
    comparisons = plan.state(records.status, records.top1)
    assert {c.variant for c in comparisons} == {"no_1x1", "no_branches"} and all(c.open for c in comparisons)
    assert sorted(plan.wanted(comparisons, records.status)) == sorted(tid[v, s] for v in VARIANTS for s in range(3))


def test_settled_comparisons_get_no_more_seeds():
    """A 6-point loss is settled before the budget; a noisy null difference keeps asking for seeds."""
    plan, tid = _plan(max_seeds=24)
    records = Records()
    batches = _drive(plan, records, {"no_branches": -6.0}, spread={"no_1x1": 1.2})
    final = {c.variant: c.state for c in plan.state(records.status, records.top1)}
    assert final["no_branches"]["verdict"] == "worse" and final["no_branches"]["n"] < 24  # before the budget
    assert final["no_1x1"]["verdict"] in ("equivalent", "undecided")
    used = {v: sum(tid[v, s] in records.done for s in range(24)) for v in VARIANTS}
    assert used["no_branches"] == final["no_branches"]["n"]  # no seed run for it once it was settled
    assert used["full"] == max(used.values()) and batches[0] == sorted(tid[v, s] for v in VARIANTS for s in range(3))


def test_a_seed_lost_for_good_is_replaced_by_the_next():
    plan, tid = _plan()
    records = Records()
    records.lost.add(tid["no_1x1", 1])  # failed after its retries
    comparisons = plan.state(records.status, records.top1)
    wanted = set(plan.wanted(comparisons, records.status))
    assert {tid["no_1x1", s] for s in (0, 2, 3)} <= wanted and tid["no_1x1", 1] not in wanted
    assert {tid["full", s] for s in (0, 1, 2, 3)} <= wanted  # seed 1 of full still pairs with no_branches


def test_a_restarted_driver_finds_the_same_next_batch():
    plan, _ = _plan()
    records = Records()
    first = plan.wanted(plan.state(records.status, records.top1), records.status)
    records.run(first, {})
    again, _ = _plan()  # a new driver process: nothing but the records
    assert plan.wanted(plan.state(records.status, records.top1), records.status) == again.wanted(
        again.state(records.status, records.top1), records.status
    )


def test_the_budget_running_out_is_reported():
    plan, tid = _plan(max_seeds=5, schedule=(3, 5))
    records = Records()
    records.lost.update(tid["no_1x1", s] for s in (3, 4))  # two seeds can never pair: 3 pairs at most
    _drive(plan, records, {})
    comparisons = plan.state(records.status, records.top1)
    assert [c.variant for c in plan.exhausted(comparisons, records.status)] in ([], ["no_1x1"])


@pytest.mark.slow
def test_a_sequential_sweep_runs_its_batches_and_decides_every_comparison(tmp_path: Path):
    """Two variants, looks at 2 and 3 pairs: 2 seeds cannot decide anything (the exact test's smallest p is 0.5).
    Without the futility stop (which would see that 3 seeds cannot either, and stop at 2) a third seed is run for
    both, then the budget is spent: `undecided`, with the per-image test beside."""
    folder = tmp_path / "seq"
    args = [sys.executable, "-m", "repvgg_search.sweep", "+sweep=ablation", "sweep.sequential=true",
            "sweep.seeds=null", "sweep.seed_schedule=[2,3]", "sweep.futility=0", "++sweep.axes={variant:[full,no_branches]}",
            f"sweep.dir={folder}", "model.a=0.25", "model.b=0.25", "model.depths=[1,1,1,1,1]", "train.epochs=1",
            "speed.iters=2", "speed.warmup=1", "tracking.mode=disabled", "sweep.poll_s=0.5"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "next batch 4 trials" in proc.stdout and "next batch 2 trials" in proc.stdout
    jobs = files.read_jsonl(folder / "jobs.jsonl")
    assert len(jobs) == 6  # seeds 0, 1 of both, then seed 2 of both; seeds are never run twice
    comparisons = pd.read_csv(folder / "comparisons.csv")
    row = comparisons.set_index("variant").loc["no_branches"]
    assert row["verdict"] == "undecided" and row["n_pairs"] == 3
    assert row["image_seeds"] == 3 and 0 <= row["image_p"] <= 1
    summary = (folder / "summary.md").read_text()
    assert "Per-image paired test" in summary and "Jordan, ICLR 2024" in summary
    assert "Seeds used: 6 trials trained of the 6" in summary and "indistinguishable" not in summary
    for tid in {j["trial_id"] for j in jobs}:
        assert (folder / "trials" / tid / "val_correct.bits").exists()
    status = subprocess.run([*args[:3], f"sweep.dir={folder}", "sweep.action=status"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env=env)  # fmt: skip
    assert status.returncode == 0 and "no_branches" in status.stdout and "3 pairs" in status.stdout
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "next batch 0 trials" in again.stdout
    assert len(files.read_jsonl(folder / "jobs.jsonl")) == 6  # a rerun finds every comparison decided


def test_a_null_comparison_that_cannot_be_decided_stops_at_the_first_look():
    """Looks at 2 and 3 pairs, no effect: the futility stop closes it at 2 pairs (`undecided`) instead of spending
    the third seed on a foregone conclusion."""
    plan, tid = _plan(max_seeds=3, schedule=(2, 3))
    records = Records()
    _drive(plan, records, {"no_branches": -3.0})
    final = {c.variant: c.state for c in plan.state(records.status, records.top1)}
    assert final["no_1x1"]["verdict"] == "undecided" and final["no_1x1"]["n"] == 2
    assert tid["no_1x1", 2] not in records.done


def test_another_design_in_the_same_folder_is_refused(tmp_path: Path):
    """The same trials with another margin would reach other verdicts: the folder refuses it and keeps its record."""
    from repvgg_search.sweep.folder import SweepFolder, SweepFolderError

    folder = SweepFolder(tmp_path / "seq")
    ids = ["a", "b"]
    design = {"margin": 0.5, "schedule": (3, 5, 8)}  # a tuple, as dataclasses.asdict gives it; JSON stores a list
    assert folder.claim("ablation", "grid", ids, identity=design) is False
    before = (tmp_path / "seq" / "sweep.json").read_bytes()
    assert folder.claim("ablation", "grid", ids, identity=design) is True  # same design: resumes
    with pytest.raises(SweepFolderError, match="holds another definition.*its design"):
        folder.claim("ablation", "grid", ids, identity={**design, "margin": 1.0})
    assert (tmp_path / "seq" / "sweep.json").read_bytes() == before

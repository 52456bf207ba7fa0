"""The report on records and wandb offline runs written by real (tiny) trials of a real sweep."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from support import QUICK_TRIAL, run_cli

from repvgg_search.analysis.ablation import ablation_tables
from repvgg_search.analysis.load import load_records
from repvgg_search.analysis.tables import metric_table

VARIANTS = ["full", "no_branches", "relu_in_branches"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """Three variants x two seeds of a quarter-width a0, one epoch each, speed at the trial's 32 px, wandb offline."""
    folder = tmp_path_factory.mktemp("real") / "ablation"
    proc = run_cli("repvgg_search.sweep", "+sweep=ablation", f"sweep.dir={folder}",
                   f"++sweep.axes={{variant:[{','.join(VARIANTS)}]}}", "sweep.seeds=2", *QUICK_TRIAL,
                   "tracking.mode=offline", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return folder


def test_sweep_folder_report_has_the_trials_tables_and_fronts(sweep_dir: Path, tmp_path: Path):
    out = tmp_path / "report"
    proc = run_cli("repvgg_search.analysis.report", sweep_dir, "-o", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (out / "report.md").read_text()
    results = pd.read_csv(sweep_dir / "results.csv")
    assert len(results) == 6 and set(results["status"]) == {"completed"}
    for tid in results["trial_id"]:
        assert tid in (out / "report.html").read_text()  # every trial is a point (its config on hover)
    assert "Table 6" in md and "Table 7" in md and "relu_in_branches" in md
    assert list(out.glob("*.png")), "no figures written"


def test_offline_runs_alone_give_the_same_records(sweep_dir: Path, tmp_path: Path):
    """A folder holding only the trials' wandb offline runs (no result.json) is read with wandb's own reader."""
    runs = tmp_path / "runs"
    for run in sweep_dir.glob("trials/*/wandb/offline-run-*"):
        shutil.copytree(run, runs / run.name)
    from_wandb = load_records(runs)
    from_files = load_records(sweep_dir)
    assert len(from_wandb.records) == len(from_files.records) == 6
    a = metric_table(from_wandb.records).set_index("trial_id").sort_index()
    b = metric_table(from_files.records).set_index("trial_id").sort_index()
    for col in ("variant", "seed", "top1", "deploy_top1", "deploy_macs", "images_per_s", "device"):
        pd.testing.assert_series_equal(a[col], b[col], check_dtype=False, obj=col)


def test_ablation_tables_from_real_trials(sweep_dir: Path):
    df = metric_table(load_records(sweep_dir).records)
    tables = ablation_tables(df)
    t6 = tables["table6"].set_index("variant")
    assert t6.loc["full", "n"] == 2 and t6.loc["no_branches", "n"] == 2
    results = pd.read_csv(sweep_dir / "results.csv")
    full = results[results.variant == "full"]["top1"]
    assert t6.loc["full", "top1 mean"] == pytest.approx(full.mean(), abs=0.01)
    record = json.loads(next(sweep_dir.glob("trials/*/result.json")).read_text())
    assert record["group"] == "ablation" and record["wandb_run"]


def test_sweep_statistics_pair_seeds_against_full(sweep_dir: Path):
    """results.csv carries each trial's paired difference; comparisons.csv and summary.md the verdicts."""
    results = pd.read_csv(sweep_dir / "results.csv")
    full = results[results.variant == "full"].set_index("seed")["top1"]
    for row in results.itertuples():
        assert row.paired_diff == pytest.approx(row.top1 - full[row.seed])
    comparisons = pd.read_csv(sweep_dir / "comparisons.csv").set_index("variant")
    assert set(comparisons.index) == {"no_branches", "relu_in_branches"} and (comparisons["n_pairs"] == 2).all()
    assert set(comparisons["verdict"]) <= {"better", "worse", "indistinguishable"}
    diffs = results[results.variant == "no_branches"].set_index("seed")["top1"] - full
    assert comparisons.loc["no_branches", "mean_diff"] == pytest.approx(diffs.mean())
    groups = pd.read_csv(sweep_dir / "groups.csv")
    assert set(groups["value"]) == set(VARIANTS) and (groups["n"] == 2).all() and groups["ci_low"].notna().all()
    summary = (sweep_dir / "summary.md").read_text()
    assert "paired by seed" in summary and "Holm" in summary and "verdict" in summary


def test_the_sweep_summary_run_holds_its_tables(sweep_dir: Path):
    (run,) = sweep_dir.glob("wandb/offline-run-*-summary-*")
    exe = Path(sys.executable).with_name("wandb")
    out = subprocess.run([exe, "leet", "inspect", "--json", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "comparisons" in out.stdout and "groups" in out.stdout and "results" in out.stdout
    summary = subprocess.run([exe, "leet", "inspect", "--summary", "--json", str(run)], capture_output=True, text=True)
    assert "verdict/no_branches" in summary.stdout

"""Sweeps through a real single-node SLURM cluster (scripts/slurm_up.sh): job arrays, cancel, requeue + resume."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from support import QUICK_SPEED, REPO, TINY_TRIAL, cli_command, environ, require, run_cli, slurm_up, wait_for

from repvgg_search import files

# One CPU per job, so that the 2-CPU test node runs two trials at once; speed timed at the trial's own 32 px in one
# round (what these tests check is the cluster's part). Each test sets its own train.epochs.
SLURM_SWEEP = [*TINY_TRIAL, *QUICK_SPEED, "launcher=slurm", "launcher.cpus_per_task=1", "sweep.seeds=1"]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _cluster():
    require(slurm_up(), "no reachable SLURM cluster (run scripts/slurm_up.sh as root)")


def sweep_args(folder: Path, *overrides: str) -> list[str]:
    return ["+sweep=ablation", f"sweep.dir={folder}", *SLURM_SWEEP, *overrides]


def start(folder: Path, *overrides: str) -> subprocess.Popen:
    log = open(folder.parent / f"{folder.name}.driver.log", "w")  # noqa: SIM115
    return subprocess.Popen(cli_command("repvgg_search.sweep", *sweep_args(folder, *overrides)), cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip


def first_job(folder: Path) -> tuple[str, str]:
    row = files.read_jsonl(folder / "jobs.jsonl")[0]
    return row["trial_id"], row["job_id"]


def sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def pending_reason(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True)
    state, _, reason = out.stdout.strip().partition(" ")
    return reason if state == "PENDING" else ""


def test_ablation_sweep_as_a_job_array(tmp_path):
    folder = tmp_path / "array"
    proc = run_cli("repvgg_search.sweep", *sweep_args(folder, "sweep.axes={variant:[full,no_1x1]}", "train.epochs=1"),
                   timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = files.read_jsonl(folder / "jobs.jsonl")
    array_ids = {j["job_id"].split("_")[0] for j in jobs}
    assert len(jobs) == 2 and len(array_ids) == 1 and all("_" in j["job_id"] for j in jobs)  # one array
    df = pd.read_csv(folder / "results.csv")
    assert df["status"].tolist() == ["completed", "completed"]
    wait_for(lambda: sacct_state(jobs[0]["job_id"]) == "COMPLETED", 30, "sacct to report COMPLETED", interval=0.5)


def test_several_trials_share_one_array_task(tmp_path):
    """launcher.trials_per_task=2: three trials in two array tasks, the first two side by side in one task."""
    folder = tmp_path / "packed"
    args = sweep_args(folder, "sweep.axes={variant:[full,no_1x1,no_branches]}", "train.epochs=1",
                      "launcher.trials_per_task=2", "launcher.cpus_per_task=2")  # fmt: skip
    proc = run_cli("repvgg_search.sweep", *args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = files.read_jsonl(folder / "jobs.jsonl")
    assert len(jobs) == 3 and jobs[0]["job_id"] == jobs[1]["job_id"] != jobs[2]["job_id"]
    assert pd.read_csv(folder / "results.csv")["status"].tolist() == ["completed"] * 3
    packed = [json.loads((folder / "trials" / j["trial_id"] / "result.json").read_text()) for j in jobs[:2]]
    assert all(r["config"]["threads"] == 1 for r in packed)  # the task's 2 cores shared evenly


def test_cancelled_job_is_recorded_as_cancelled(tmp_path):
    folder = tmp_path / "cancel"
    driver = start(folder, "sweep.axes={variant:[full]}", "train.epochs=50")
    try:
        wait_for(lambda: (folder / "jobs.jsonl").exists(), 120, "the submission", interval=0.5)
        tid, job_id = first_job(folder)
        wait_for(lambda: (folder / "trials" / tid / "metrics.jsonl").exists(), 180, "the trial to train", interval=0.5)
        subprocess.run(["scancel", job_id], check=True)
        driver.wait(timeout=180)
    finally:
        driver.kill()
    assert json.loads((folder / "trials" / tid / "result.json").read_text())["status"] == "cancelled"
    assert pd.read_csv(folder / "results.csv")["status"].tolist() == ["cancelled"]
    wait_for(lambda: sacct_state(job_id).startswith("CANCELLED"), 30, "sacct to report CANCELLED", interval=0.5)


def test_preempted_trial_is_requeued_and_resumes(tmp_path):
    """SIGUSR2 (SLURM's preemption/timeout warning) -> submitit checkpoints the TrialRunner and requeues it."""
    folder = tmp_path / "requeue"
    driver = start(folder, "sweep.axes={variant:[full]}", "train.epochs=4")
    try:
        wait_for(lambda: (folder / "jobs.jsonl").exists(), 120, "the submission", interval=0.5)
        tid, job_id = first_job(folder)
        metrics = folder / "trials" / tid / "metrics.jsonl"
        wait_for(lambda: len(files.read_jsonl(metrics)) >= 1, 180, "the first epoch", interval=0.5)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        # Slurm holds a requeued job ~120 s (reason BeginTime) before it may start again; release it now.
        wait_for(lambda: pending_reason(job_id) == "BeginTime", 60, "the job to be requeued and held", interval=0.5)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        driver.wait(timeout=300)
    finally:
        driver.kill()
    result = json.loads((folder / "trials" / tid / "result.json").read_text())
    assert result["status"] == "completed" and result["resumes"] and result["resumes"][0] >= 1
    assert [r["epoch"] for r in files.read_jsonl(metrics)] == [1, 2, 3, 4]
    log = "".join(p.read_text() for p in (folder / "jobs").glob(f"{job_id}_*log.err"))
    assert "preempted" in log and "resuming after epoch" in log


def dead_controller(folder: Path) -> dict[str, str]:
    """This cluster's slurm.conf with its controller on a port nothing listens on and a 1 s message timeout: `sinfo`
    gives up in a second (a missing slurm.conf would make it retry for 60 s, past the launcher's 20 s timeout: the
    same error, slower)."""
    lines = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text().splitlines()
    kept = [x for x in lines if not x.startswith(("SlurmctldPort=", "MessageTimeout="))]
    (folder / "slurm.conf").write_text("\n".join([*kept, "SlurmctldPort=6999", "MessageTimeout=1"]) + "\n")
    return {"SLURM_CONF": str(folder / "slurm.conf")}


@pytest.mark.parametrize(
    ("overrides", "dead", "match"),
    [
        (["launcher.partition=nope"], False, "launcher.partition='nope' is unknown; partitions: debug"),
        ([], True, "the SLURM cluster is unreachable"),
    ],
    ids=["unknown-partition", "unreachable"],
)
def test_bad_cluster_settings_are_refused_before_submission(tmp_path, overrides, dead, match):
    folder = tmp_path / "bad"
    env = environ(**(dead_controller(tmp_path) if dead else {}))
    proc = run_cli("repvgg_search.sweep", *sweep_args(folder, "sweep.axes={variant:[full]}", *overrides), env=env,
                   timeout=120)  # fmt: skip
    assert proc.returncode == 2 and match in proc.stderr, proc.stderr[-2000:]
    assert not (folder / "jobs.jsonl").exists()

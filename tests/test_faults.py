"""Faults: a killed driver rerun at once, a torn checkpoint, a pid written in a lock file, a diverging training, a
second process for a running trial. Nothing is trained twice, nothing is stuck, no unrelated process is touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from support import QUICK_TRIAL, REPO, cli_command, held_epochs_env, hold_epochs, run_cli, wait_for

from repvgg_search import files
from repvgg_search.config import CONF_DIR, register_configs
from repvgg_search.locks import FileLock
from repvgg_search.trial import TrialInterrupted, run_trial, settings_from_config
from repvgg_search.trial.folder import LOCK

pytestmark = pytest.mark.slow


def epochs_of(trial_dir: Path) -> list[int]:
    return [r["epoch"] for r in files.read_jsonl(trial_dir / files.METRICS)]


def test_a_driver_killed_and_rerun_at_once_never_trains_a_trial_twice(tmp_path):
    """kill -9 of the driver alone leaves its trial job training; the rerun's job for the same trial waits on the
    trial's lock and then reports the finished result."""
    folder, env = tmp_path / "s", held_epochs_env(tmp_path)
    args = ["+sweep=ablation", "sweep.axes={variant:[full]}", "sweep.seeds=1", f"sweep.dir={folder}", *QUICK_TRIAL,
            "train.epochs=8", "sweep.poll_s=0.2"]  # fmt: skip
    driver = subprocess.Popen(cli_command("repvgg_search.sweep", *args), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: any(epochs_of(d) for d in folder.glob("trials/*")), 120, "the trial's first epoch")
    driver.kill()  # SIGKILL: no handler runs, its job keeps training
    driver.wait()
    with hold_epochs(tmp_path), open(tmp_path / "rerun.log", "w") as log:  # the orphaned job stays mid-training
        rerun = subprocess.Popen(cli_command("repvgg_search.sweep", *args), cwd=REPO, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(lambda: "waiting for it to end" in job_logs(folder) or rerun.poll() is not None, 300,
                 "the rerun's job to find the trial in training")  # fmt: skip
    assert rerun.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    (trial,) = folder.glob("trials/*")
    assert epochs_of(trial) == list(range(1, 9)), "an epoch was trained twice (or lost)"
    assert json.loads((trial / "result.json").read_text())["status"] == "completed"
    assert len(files.read_jsonl(folder / "jobs.jsonl")) == 2  # the rerun's job adopted the result
    assert "waiting for it to end" in job_logs(folder)  # the rerun's job said why it waited


def _sigterm_mid_trial(
    tmp_path: Path, folder: Path, args: list[str], interrupted: Callable[[], bool]
) -> tuple[subprocess.Popen, Path]:
    """Start the sweep command `args` under submitit's local launcher, wait for its trial's first epoch, hold the
    next one, SIGTERM the process that provably trains the trial (the submitit job), and wait for that job to end
    with the trial recorded `interrupted`; returns the driver (still running) and the trial folder.

    The driver may start the next job, whose trial records `running`, before a poll here reads `interrupted` (a
    loaded machine): `interrupted()` is a lasting record of the interruption to accept instead."""
    env = held_epochs_env(tmp_path)
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 (closed with the test's tmp_path)
    driver = subprocess.Popen(cli_command("repvgg_search.sweep", *args), cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT)  # fmt: skip
    trial = wait_for(lambda: next((d for d in folder.glob("trials/*") if epochs_of(d)), None), 180,
                     "the trial's first epoch")  # fmt: skip
    with hold_epochs(tmp_path):  # the trial waits at its next epoch: the signal lands mid-trial for sure
        pid = wait_for(lambda: FileLock(trial / LOCK).proven_holder(), 60, "the trial's lock holder")
        os.kill(pid, signal.SIGTERM)
        _gone(pid, 120)  # the job ended: it did not train on (submitit bypassed SIGTERM before)
        wait_for(lambda: (files.read_json(trial / "result.json") or {}).get("status") == "interrupted" or interrupted(),
                 60, "the trial to record interrupted")  # fmt: skip
    return driver, trial


def _gone(pid: int, timeout: float) -> None:
    def ended() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/status").read_text().count("zombie") > 0

    wait_for(ended, timeout, f"process {pid} to end")


def test_sigterm_stops_a_grid_jobs_trial_which_the_sweep_resumes(tmp_path):
    """The same signal policy as a plain process: SIGTERM to a sweep's job stops its trial at the checkpoint
    (status interrupted, not a failure), and the driver runs it again from there: no epoch trained twice."""
    folder = tmp_path / "s"
    args = ["+sweep=ablation", "sweep.axes={variant:[full]}", "sweep.seeds=1", f"sweep.dir={folder}", *QUICK_TRIAL,
            "train.epochs=3", "sweep.poll_s=0.2"]  # fmt: skip
    # the job's log keeps what the trial raised after its status was overwritten by the resuming job's `running`
    driver, trial = _sigterm_mid_trial(
        tmp_path, folder, args, lambda: "TrialInterrupted: received SIGTERM" in job_logs(folder)
    )
    assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    result = json.loads((trial / "result.json").read_text())
    assert result["status"] == "completed" and result["resumes"], result.get("resumes")
    assert epochs_of(trial) == [1, 2, 3], "an epoch was trained twice (or lost)"
    assert len(files.read_jsonl(folder / "jobs.jsonl")) == 2  # the interrupted job, then the one that resumed


def test_sigterm_stops_a_search_workers_trial_which_the_search_resumes(tmp_path):
    """The same for a width search's worker job: its trial is told interrupted, its parameters are queued again,
    the driver starts a worker, and the retry resumes from the checkpoint."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from support import FAST_SEARCH, SYNTHETIC_DATA, TINY_SEARCH

    folder = tmp_path / "s"
    args = ["+sweep=width_search", f"sweep.dir={folder}", *TINY_SEARCH, *SYNTHETIC_DATA, *FAST_SEARCH, "threads=1",
            "train.epochs=3", "launcher.max_parallel=1", "search.n_trials=1", "tracking.mode=disabled"]  # fmt: skip

    def study_kinds() -> list:
        if not (folder / "study.journal").exists():
            return []
        study = optuna.load_study(study_name="width_search",
                                  storage=JournalStorage(JournalFileBackend(str(folder / "study.journal"))))  # fmt: skip
        return [t.user_attrs.get("kind") for t in study.get_trials()]

    driver, trial = _sigterm_mid_trial(tmp_path, folder, args, lambda: "interrupted" in study_kinds())
    assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    kinds = study_kinds()
    assert kinds[0] == "interrupted" and kinds[-1] == "completed", kinds
    result = json.loads((trial / "result.json").read_text())
    assert result["status"] == "completed" and result["resumes"], result.get("resumes")
    assert epochs_of(trial) == [1, 2, 3], "an epoch was trained twice (or lost)"


def job_logs(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*_log.err"))


def _settings(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return settings_from_config(compose("train", overrides=[*QUICK_TRIAL, "train.epochs=3", *overrides]))


def _interrupt_after(epoch: int):
    def on_epoch(done: int, row: dict) -> None:
        if done == epoch:
            raise TrialInterrupted("test")

    return on_epoch


@pytest.mark.parametrize("both", [False, True], ids=["latest torn", "both torn"])
def test_a_torn_checkpoint_falls_back_then_restarts(tmp_path, both):
    settings, folder = _settings("keep_checkpoint=all"), tmp_path / "trial"  # keeps checkpoints/ once completed
    with pytest.raises(TrialInterrupted):
        run_trial(settings, folder, progress=False, on_epoch=_interrupt_after(2))  # 2 epochs done
    (folder / "checkpoints" / "last.pt").write_bytes(os.urandom(3000))
    if both:
        (folder / "checkpoints" / "last.prev.pt").write_bytes(b"\x80\x02truncated")
    result = run_trial(settings, folder, progress=False)
    assert result.status.value == "completed" and epochs_of(folder) == [1, 2, 3]
    assert result.resumes == ([] if both else [1])  # from the previous checkpoint: one epoch redone
    log = (folder / "trial.log").read_text()
    assert "checkpoints/last.pt cannot be used" in log and list((folder / "checkpoints").glob("last.pt.unusable-*"))


def test_cancel_never_signals_a_pid_it_cannot_prove(tmp_path):
    folder = tmp_path / "s"
    plan = run_cli("repvgg_search.sweep", "+sweep=ablation", "sweep.seeds=1", f"sweep.dir={folder}",
                   "sweep.dry_run=true", *QUICK_TRIAL)  # fmt: skip
    assert plan.returncode == 0, plan.stderr[-2000:]
    bystander = subprocess.Popen(["sleep", "3600"])
    try:
        (folder / "driver.lock").write_text(f"{bystander.pid} {os.uname().nodename}\n")  # written, never locked
        (folder / "driver.pid").write_text(f"{bystander.pid}\n")  # what an older version left behind
        for action in ("status", "cancel"):
            out = run_cli("repvgg_search.sweep", "+sweep=ablation", f"sweep.dir={folder}", f"sweep.action={action}")
            assert out.returncode == 0, out.stderr[-2000:]
        assert bystander.poll() is None, "an unrelated process was signalled"
        status = run_cli("repvgg_search.sweep", "+sweep=ablation", f"sweep.dir={folder}", "sweep.action=status")
        assert "no driver running" in status.stdout
    finally:
        bystander.kill()


def test_a_diverging_training_is_a_result(tmp_path):
    out = tmp_path / "diverged"
    proc = run_cli("repvgg_search.train", *QUICK_TRIAL, "train.epochs=3", "train.base_lr=1e9", f"output_dir={out}",
                   timeout=300)  # fmt: skip
    assert proc.returncode == 4 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "diverged" and result["diverged_epoch"] == 1 and "diverged in epoch 1" in result["error"]
    assert "speed" not in result and (out / "checkpoints" / "last.pt").exists()


def test_a_second_process_never_trains_beside_the_first(tmp_path):
    out, env = tmp_path / "busy", held_epochs_env(tmp_path)
    first = subprocess.Popen(cli_command("repvgg_search.train", *QUICK_TRIAL, "train.epochs=6", f"output_dir={out}"),
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: bool(epochs_of(out)), 120, "the first process's first epoch")
        with hold_epochs(tmp_path):  # the first process stays mid-training while the second one starts
            second = run_cli("repvgg_search.train", *QUICK_TRIAL, "train.epochs=6", f"output_dir={out}", env=env,
                             timeout=120)  # fmt: skip
        assert second.returncode == 5 and "trains this trial now" in second.stderr, second.stderr[-1500:]
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
    assert epochs_of(out) == list(range(1, 7))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) for a real ENOSPC")
def test_a_full_disk_is_named_in_one_line_and_the_traceback_kept(tmp_path):
    """/dev/full answers every write with ENOSPC, as a full disk does: the metrics file is pointed at it after the
    first epoch, so the second epoch's record cannot be written."""
    settings, folder = _settings(), tmp_path / "trial"
    metrics = folder / files.METRICS

    def fill_disk(done: int, row: dict) -> None:
        if done == 1:
            metrics.unlink()
            metrics.symlink_to("/dev/full")

    with pytest.raises(OSError):
        run_trial(settings, folder, progress=False, on_epoch=fill_disk)
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "failed"
    assert result["error"] == f"no space left on device writing {metrics} (OSError ENOSPC)"
    assert "Traceback" in (folder / "trial.log").read_text()


def test_tables_are_replaced_whole_while_read(tmp_path, monkeypatch):
    """results.csv, summary.md and pareto.csv are rewritten by every collect while users read them: a reader that
    opened the table keeps the whole previous one, and a write that fails (a full disk) leaves it in place."""
    import pandas as pd

    path = tmp_path / "results.csv"
    files.write_csv(path, pd.DataFrame({"trial_id": ["a", "b"], "top1": [0.9, 0.8]}))
    before = path.read_text()
    with open(path) as reader:  # a rewrite in place would truncate the file under this reader
        files.write_csv(path, pd.DataFrame({"trial_id": ["c"], "top1": [0.7]}))
        assert reader.read() == before
    assert pd.read_csv(path)["trial_id"].tolist() == ["c"]
    after = path.read_text()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device.*results.csv"):
        files.write_text(path, "torn")
    assert path.read_text() == after and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]

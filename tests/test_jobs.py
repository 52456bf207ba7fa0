"""The job layer: how many trials run at once and on which GPU (packing several per GPU), and trials grouped into
one job, checked without a GPU (the assignment logic) and with real submitit jobs."""

from __future__ import annotations

import pytest

from repvgg_search import progress as progress_module
from repvgg_search.jobs import launchers
from repvgg_search.jobs.launchers import GpuSlots, LauncherError, make_launcher
from repvgg_search.jobs.pool import JobLog, JobPool


def test_gpu_slots_pack_trials_on_the_least_loaded_gpus():
    slots = GpuSlots(gpus=2, per_gpu=3)
    assert slots.capacity(1) == 6 and slots.capacity(2) == 3
    taken = [slots.take(1) for _ in range(6)]
    assert sorted(g for t in taken for g in t) == [0, 0, 0, 1, 1, 1]  # 3 per GPU, alternating
    assert taken[:2] == [[0], [1]]
    with pytest.raises(RuntimeError, match="no free GPU slot"):
        slots.take(1)
    slots.give([1])
    assert slots.take(1) == [1]
    two = GpuSlots(gpus=2, per_gpu=2)
    assert two.take(2) == [0, 1] and two.take(2) == [0, 1] and two.capacity(2) == 2


def test_local_launcher_packs_trials_per_gpu(monkeypatch):
    monkeypatch.setattr(launchers, "visible_gpus", lambda: 2)
    monkeypatch.setattr(launchers, "cpu_cores", lambda: 16)
    packed = make_launcher({"name": "local", "trials_per_gpu": 4})
    assert (packed.max_parallel, packed.gpus_per_job, packed.threads) == (8, 1, 2)
    single = make_launcher({"name": "local"})
    assert (single.max_parallel, single.threads) == (2, 8)
    with pytest.raises(LauncherError, match="max_parallel=9 trials x 1 GPU.*hold 8"):
        make_launcher({"name": "local", "trials_per_gpu": 4, "max_parallel": 9})
    with pytest.raises(LauncherError, match="trials_per_gpu=0 must be >= 1"):
        make_launcher({"name": "local", "trials_per_gpu": 0})


def test_slurm_packing_refuses_multi_process_trials():
    with pytest.raises(LauncherError, match="trials_per_task=2 .* does not go with multi-process trials"):
        make_launcher({"name": "slurm", "trials_per_task": 2, "tasks_per_node": 2})


class Work:
    """A job's callable: records which keys ran together."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def __call__(self) -> list[str]:
        return self.keys


def test_the_pool_runs_several_keys_per_job_and_logs_each(tmp_path):
    launcher = make_launcher({"name": "debug"})
    log = JobLog(tmp_path / "jobs.jsonl", "trial_id")
    pool = JobPool(launcher, tmp_path / "jobs", log, poll_s=0.01, max_wait_h=0.01, retries=0, per_job=2)
    seen: list[tuple[str, str]] = []
    assert pool.run(["a", "b", "c"], Work, lambda key, job, state: seen.append((key, state)) or False)
    assert sorted(seen) == [("a", "COMPLETED"), ("b", "COMPLETED"), ("c", "COMPLETED")]
    rows = log.rows()
    assert [r["trial_id"] for r in rows] == ["a", "b", "c"] and rows[0]["job_id"] == rows[1]["job_id"] != rows[2][
        "job_id"
    ]


def test_the_pool_resubmits_within_the_retry_limit(tmp_path):
    launcher = make_launcher({"name": "debug"})
    log = JobLog(tmp_path / "jobs.jsonl", "trial_id")
    pool = JobPool(launcher, tmp_path / "jobs", log, poll_s=0.01, max_wait_h=0.01, retries=2, attempts={"b": 1})
    pool.run(["a", "b"], Work, lambda key, job, state: True)  # every end asks for a rerun
    assert pool.attempts == {"a": 3, "b": 3}  # b had one attempt from an earlier driver run


def test_progress_lines_show_elapsed_time_and_eta(capsys, monkeypatch):
    """Batch jobs (no terminal) get plain lines with the elapsed time and, once something finished, an ETA."""
    clock = iter([0.0, 30.0, 30.0, 90.0, 90.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    p = progress_module.Progress("sweep demo", total=4, live=False)
    p.show("pending 4  done 0", 0)
    p.show("pending 3  done 1", 1)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[sweep demo] pending 4  done 0  elapsed 30s",
        "[sweep demo] pending 3  done 1  elapsed 1m30s  ETA 4m30s",
    ]


def test_debug_jobs_keep_distinct_ids_within_a_run(tmp_path):
    """submitit names a debug job after its submission's id(), which CPython reuses once the object is freed: the
    launcher keeps its jobs so that the job log never gives two jobs of one run the same id."""
    launcher = make_launcher({"name": "debug"})
    log = JobLog(tmp_path / "jobs.jsonl", "trial_id")
    pool = JobPool(launcher, tmp_path / "jobs", log, poll_s=0.01, max_wait_h=0.01, retries=0)
    keys = [str(i) for i in range(8)]
    assert pool.run(keys, Work, lambda key, job, state: False)
    assert len({r["job_id"] for r in log.rows()}) == len(keys)

"""The width search on a real PostgreSQL server: exact trial counts with two workers; a killed worker's trial resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from sqlalchemy.engine import make_url
from support import FAST_SEARCH, REPO, SYNTHETIC_DATA, TINY_SEARCH, cli_command, require, run_cli, wait_for
from test_search import make_plan

from repvgg_search import files
from repvgg_search.search.driver import claim_search_folder
from repvgg_search.search.plan import prepare_study
from repvgg_search.search.study import tally

URL = os.environ.get("REPVGG_PG_URL", "postgresql+psycopg2://repvgg:repvgg@127.0.0.1:54329/repvgg_optuna")
# Tiny trials on a few random images: what is under test is the bookkeeping, not the accuracy.
SEARCH = [*TINY_SEARCH, *SYNTHETIC_DATA, *FAST_SEARCH]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def postgres_up() -> bool:
    import psycopg2

    u = make_url(URL)
    try:
        psycopg2.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, connect_timeout=3
        ).close()
    except Exception:
        return False
    return True


@pytest.fixture
def study_name():
    require(postgres_up(), f"no PostgreSQL at {make_url(URL).render_as_string()} (scripts/postgres_up.sh starts one)")
    name = f"pytest-{uuid.uuid4().hex[:10]}"
    yield name
    storage = optuna.storages.RDBStorage(URL)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:  # the test failed before creating it
        pass
    finally:
        storage.engine.dispose()


def load(name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=URL)


def test_two_workers_end_with_exactly_the_requested_trials(tmp_path, study_name):
    folder = tmp_path / "s"
    proc = run_cli("repvgg_search.sweep", "+sweep=width_search", f"sweep.dir={folder}", *SEARCH,
                   f"search.storage={URL}", f"search.study_name={study_name}", "launcher.max_parallel=2",
                   "search.n_trials=4", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "repvgg:repvgg@" not in proc.stdout + (folder / "search.json").read_text()  # password masked
    trials = load(study_name).get_trials()
    counts = tally(trials)
    assert counts["trained"] == 4 and counts["running"] == 0 and counts["waiting"] == 0
    trained = [t for t in trials if t.user_attrs.get("kind") == "completed"]
    ids = [t.user_attrs["trial_id"] for t in trained]
    assert len(set(ids)) == 4  # none duplicated
    for t in trained:  # none lost: every trained trial has its completed record, numbered as in the study
        result = files.read_json(folder / "trials" / t.user_attrs["trial_id"] / "result.json")
        assert result["status"] == "completed" and result["search"]["number"] == t.number
        assert result["search"]["values"] == pytest.approx(t.values)
    assert sorted(pd.read_csv(folder / "results.csv")["trial_id"]) == sorted(ids)
    assert {r["worker"] for r in files.read_jsonl(folder / "workers.jsonl")} == {0, 1}


def test_killed_worker_trial_is_retried_and_resumed(tmp_path, study_name):
    folder = tmp_path / "s"
    plan = make_plan(folder, *SEARCH, "train.epochs=3", "data.synthetic_train_size=512", f"search.storage={URL}",
                     f"search.study_name={study_name}", "search.n_trials=1")  # fmt: skip
    claim_search_folder(plan)
    prepare_study(plan)
    first = worker(folder, 0)
    ckpt = started(folder, first, 180)
    os.kill(first.pid, signal.SIGKILL)  # mid-trial: the checkpoint exists, the trial is not done
    first.wait(10)
    second = worker(folder, 1)
    out, err = second.communicate(timeout=240)
    assert second.returncode == 0, out[-2000:] + err[-3000:]
    trials = load(study_name).get_trials()
    assert tally(trials)["trained"] == 1
    dead, retried = trials[0], trials[-1]
    assert dead.state == optuna.trial.TrialState.FAIL and retried.user_attrs["kind"] == "completed"
    assert retried.params == dead.params and retried.user_attrs["trial_id"] == ckpt.parts[-3]
    result = files.read_json(ckpt.parents[1] / "result.json")
    assert result["status"] == "completed" and result["resumes"]  # resumed from the killed worker's checkpoint
    assert result["search"]["retry_of"] == dead.number


def worker(folder: Path, index: int) -> subprocess.Popen:
    cmd = cli_command("repvgg_search.search", folder, "--storage", URL, "--worker", str(index))
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started(folder: Path, proc: subprocess.Popen, timeout: float) -> Path:
    """The checkpoint of the trial the worker `proc` trains, once it has one; fails if the worker exits first (or
    is still without one after `timeout` s: then it is killed). Polled often: the trial is short."""

    def checkpoint() -> Path | None:
        found = next(iter(folder.glob("trials/*/checkpoints/last.pt")), None)
        if found is None and proc.poll() is not None:
            pytest.fail(f"worker exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        return found

    try:
        return wait_for(checkpoint, timeout, "the worker to start its trial", interval=0.02)
    except AssertionError:
        proc.kill()
        raise

"""The width search: bad input, exact trial counts, stale-trial retries, budgets, pruning, real searches."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from support import FAST_SEARCH, QUICK_SPEED, SYNTHETIC_DATA, TINY_SEARCH, environ, require, run_cli, slurm_up, wait_for

from repvgg_search import files
from repvgg_search.analysis.report import build_report
from repvgg_search.config import CONF_DIR
from repvgg_search.jobs.launchers import make_launcher
from repvgg_search.search.collect import search_action
from repvgg_search.search.driver import claim_search_folder
from repvgg_search.search.plan import plan_search, prepare_study
from repvgg_search.search.settings import SearchError, search_settings
from repvgg_search.search.storage import HeartbeatJournalStorage
from repvgg_search.search.study import Budget, claim_slot, propose_untried, record, search_loop, tally
from repvgg_search.search.worker import epoch_reporter, worker_loop
from repvgg_search.sweep.cli import register
from repvgg_search.sweep.folder import SweepFolder

# Fewer, random images where only the mechanics matter, one thread a trial.
SYNTH = [*SYNTHETIC_DATA, "threads=1"]


def launch_cfg(*overrides: str):
    register()  # the launch schema (test modules run alone too)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("sweep", overrides=["+sweep=width_search", *overrides])


def make_plan(folder: Path, *overrides: str):
    cfg = launch_cfg(f"sweep.dir={folder}", *overrides)
    return plan_search(cfg, SweepFolder(folder), make_launcher(cfg.launcher))


def sweep_cmd(*overrides: str) -> subprocess.CompletedProcess:
    """The width search's command line, run to its end."""
    return run_cli("repvgg_search.sweep", "+sweep=width_search", *overrides, env=environ(WANDB_MODE="offline"),
                   timeout=300)  # fmt: skip


def journal_study(path: Path, **kwargs) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(path)))
    if kwargs:  # heartbeats, and retries of stale trials, as the search's storage has them
        storage = HeartbeatJournalStorage(str(path), callback=RetryHeartbeatStaleTrialCallback(max_retry=1), **kwargs)
    return optuna.create_study(storage=storage, study_name="t", load_if_exists=True)


# -- settings and bad input ------------------------------------------------------------------------------------
def test_width_search_file_validates():
    cfg = launch_cfg()
    s = search_settings(cfg.search)
    assert cfg.sweep.kind == "search" and s.objectives == ["top1", "images_per_s"] and s.sampler == "tpe"
    assert s.space.groups == [1, 2, 4] and s.storage is None and s.n_trials >= 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": {"a": {"low": 2.0, "high": 1.0}}}, "inverted bounds, low=2.0 > high=1.0"),
        ({"space": {"b": {"low": 1.0, "high": 1.0, "step": None}}}, "empty range"),
        ({"space": {"groups": []}}, "search.space.groups is empty"),
        ({"space": {"depths": {3: []}}}, "search.space.depths.3"),
        ({"space": {"depths": {7: [1, 2]}}}, "stage 7 does not exist"),
        ({"space": {"a": {"low": 0.5, "high": 1.2, "step": 0.25}}}, "not a multiple of step"),
        ({"objectives": ["top1", "flops"]}, "'flops' is unknown; allowed: top1, images_per_s"),
        ({"objectives": []}, "search.objectives is empty"),
        ({"sampler": "cmaes"}, "search.sampler='cmaes' is unknown; allowed: tpe, nsgaii, random, grid"),
        ({"pruner": "median"}, "needs objectives: [top1]"),
        ({"constraints": {"max_gmacs": -1}}, "max_gmacs=-1"),
        ({"n_trials": 10_000}, "the space holds only"),
        ({"space": {"a": {"low": 0.5, "high": 1.5, "step": None}}, "sampler": "grid"}, "sampler=grid needs a step"),
        ({"smapler": "tpe"}, "search: unknown key(s) ['smapler']; allowed: space, objectives"),
        ({"constraints": {"max_macs": 1}}, "search.constraints: unknown key(s) ['max_macs']; allowed: max_gmacs"),
    ],
)
def test_bad_settings_are_refused(change, message):
    with pytest.raises(SearchError) as err:
        search_settings(change)
    assert message in str(err.value)


def test_budget_no_candidate_meets_is_refused_before_anything(tmp_path):
    with pytest.raises(SearchError) as err:
        make_plan(tmp_path / "s", *TINY_SEARCH, "search.constraints.max_gmacs=0.001")
    msg = str(err.value)
    assert "max_gmacs=0.001 cannot be met" in msg and "GMACs" in msg and "a=0.25, b=0.25" in msg
    assert not (tmp_path / "s").exists()


def test_bad_sampler_options_are_refused(tmp_path):
    with pytest.raises(SearchError, match="sampler_options=.*do not fit sampler=nsgaii"):
        make_plan(tmp_path / "s", *TINY_SEARCH, "search.sampler=nsgaii", "++search.sampler_options={bogus:1}")


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg2://u:secret@127.0.0.1:1/db", "nosuchdb://x/y"],
    ids=["closed-port", "unknown-scheme"],
)
def test_unreachable_storage_is_refused_before_any_worker(tmp_path, url):
    with pytest.raises(SearchError) as err:
        make_plan(tmp_path / "s", *TINY_SEARCH, f"search.storage={url}")
    assert "cannot be used" in str(err.value) and "secret" not in str(err.value)
    assert not (tmp_path / "s").exists()


def test_another_definition_in_the_folder_is_refused(tmp_path):
    plan = make_plan(tmp_path / "s", *TINY_SEARCH)
    claim_search_folder(plan)
    prepare_study(plan)
    other = make_plan(tmp_path / "s", *TINY_SEARCH, "search.objectives=[top1,latency_ms]")
    with pytest.raises(SearchError, match="holds another search definition"):
        claim_search_folder(other)
    other.folder = str(tmp_path / "elsewhere")  # same study storage, other definition
    with pytest.raises(SearchError, match="made by another search definition"):
        prepare_study(other)


# -- the loop: exact counts, no barrier, stale trials ------------------------------------------------------------
def test_concurrent_workers_end_with_exactly_n_trained_trials(tmp_path):
    """Threads with their own storage handles (as processes have) race for the last slots; uneven durations."""
    path, n = tmp_path / "j", 10
    journal_study(path)

    def evaluate(study, trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if x > 0.8:  # "over budget": recorded without a slot
            return record(study, trial, "infeasible", [0.0])
        if not claim_slot(study, trial, n):
            return record(study, trial, "surplus", state=TrialState.FAIL)
        time.sleep(random.uniform(0.0, 0.05))
        return record(study, trial, "trained", [x])

    def worker(seed: int) -> None:
        study = optuna.load_study(
            study_name="t", storage=JournalStorage(JournalFileBackend(str(path))),
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )  # fmt: skip
        search_loop(study, Budget(n, n, 1000), evaluate, poll_s=0.01)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = tally(journal_study(path).get_trials())
    assert counts["trained"] == n and counts["running"] == 0 and counts["waiting"] == 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
def test_stale_trial_is_failed_and_retried_with_its_parameters(tmp_path):
    path = tmp_path / "j"
    dead = journal_study(path, heartbeat_interval=1, grace_period=1)
    orphan = dead.ask()
    orphan.suggest_float("x", 0.0, 1.0)  # its worker "dies" here: no heartbeat, no tell
    seen = []

    def evaluate(study, trial):
        seen.append(trial.suggest_float("x", 0.0, 1.0))
        return record(study, trial, "trained", [seen[-1]])

    live = journal_study(path, heartbeat_interval=1, grace_period=1)
    search_loop(live, Budget(1, 1, 10), evaluate, poll_s=0.1)
    trials = live.get_trials()
    assert len(trials) == 2 and trials[0].state == TrialState.FAIL and trials[1].state == TrialState.COMPLETE
    assert seen == [orphan.params["x"]]  # the retry got the dead worker's parameters, and nothing else ran


def test_pruning_reporter_stops_a_poor_trial():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, 0))
    for _ in range(3):
        t = study.ask()
        for epoch in range(3):
            t.report(90.0, epoch + 1)
        study.tell(t, 90.0)
    on_epoch = epoch_reporter(study.ask())
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        on_epoch(1, {"val_top1": 10.0})


def test_propose_untried_enqueues_a_candidate_no_trial_has_proposed():
    grid = {"a": [0.25, 0.5], "b": [0.25, 0.5]}
    study = optuna.create_study(directions=["maximize", "maximize"])
    for a, b in [(0.25, 0.25), (0.25, 0.5), (0.5, 0.25)]:
        study.enqueue_trial({"a": a, "b": b})
        t = study.ask()
        t.suggest_float("a", 0.25, 0.5, step=0.25), t.suggest_float("b", 0.25, 0.5, step=0.25)
        study.tell(t, [1.0, 1.0])
    assert propose_untried(study, grid, seed=0) == {"a": 0.5, "b": 0.5}  # the only one left
    assert propose_untried(study, grid, seed=0) is None  # it waits already: not twice
    t = study.ask()
    assert (t.suggest_float("a", 0.25, 0.5, step=0.25), t.suggest_float("b", 0.25, 0.5, step=0.25)) == (0.5, 0.5)
    study.tell(t, [1.0, 1.0])
    assert propose_untried(study, grid, seed=0) is None  # the space is exhausted


def _worker_study(plan) -> optuna.Study:
    return optuna.load_study(study_name=plan.study_name, storage=JournalStorage(JournalFileBackend(plan.storage)))


@pytest.mark.slow
def test_a_small_space_is_searched_to_its_last_candidate(tmp_path):
    """TPE re-proposes known points of a 4-candidate space (97 repeats before this was fixed); each repeat is
    followed by an untried candidate, so n_trials = the whole space is reached with few skips."""
    plan = make_plan(tmp_path / "s", *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "launcher=debug", "train.epochs=1",
                     "search.n_trials=4", "search.space.groups=[1]")  # fmt: skip
    claim_search_folder(plan)
    prepare_study(plan)
    out = worker_loop(plan, 0)
    counts = tally(_worker_study(plan).get_trials())
    assert counts["trained"] == 4 and out["stopped"] == "the study holds its 4 trained trials", out
    assert counts["duplicate"] <= 4  # each repeat is followed by a new candidate (max_skipped is 100)


@pytest.mark.slow
def test_an_exhausted_space_stops_with_the_true_reason(tmp_path):
    """2 of the 4 candidates are over the MAC budget and n_trials=3: the search ends once all 4 were proposed and
    says so (not a blame on the sampler, nor the promise that a rerun continues)."""
    folder = tmp_path / "s"
    proc = sweep_cmd(f"sweep.dir={folder}", *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "train.epochs=1",
                     "launcher.max_parallel=1", "search.n_trials=3", "search.space.groups=[1]",
                     "search.constraints.max_gmacs=0.05")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the study holds 2 of 3 trained trials: every one of the space's 4 candidates has been proposed" in (
        proc.stdout
    )
    assert "rerun the same command" not in proc.stdout
    study = optuna.load_study(study_name="width_search",
                              storage=JournalStorage(JournalFileBackend(str(folder / "study.journal"))))  # fmt: skip
    counts = tally(study.get_trials())
    assert counts["trained"] == 2 and counts["infeasible"] >= 2 and counts["proposed"] == 4
    assert len(study.get_trials()) < 20  # it stopped at exhaustion, not after search.max_skipped (100) repeats


# -- real trials ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_over_budget_candidates_are_recorded_without_training(tmp_path):
    """max_gmacs admits only a=0.25 candidates: a=0.5 ones are recorded infeasible, trained ones count."""
    folder = tmp_path / "s"
    plan = make_plan(folder, *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "launcher=debug", "search.sampler=random",
                     "search.n_trials=2", "search.space.groups=[1]", "search.constraints.max_gmacs=0.05")  # fmt: skip
    claim_search_folder(plan)
    prepare_study(plan)
    worker_loop(plan, 0)
    study = optuna.load_study(study_name=plan.study_name, storage=JournalStorage(JournalFileBackend(plan.storage)))
    counts = tally(study.get_trials())
    assert counts["trained"] == 2
    for t in study.get_trials():
        result = files.read_json(folder / "trials" / t.user_attrs["trial_id"] / "result.json")
        if t.user_attrs["kind"] == "infeasible":
            assert t.params["a"] == 0.5 and t.constraints["gmacs"] > 0 and t.state == TrialState.COMPLETE
            assert result["status"] == "infeasible" and result["search"]["feasible"] is False
            assert not (folder / "trials" / t.user_attrs["trial_id"] / "checkpoints").exists()
        elif t.user_attrs["kind"] == "completed":
            assert t.params["a"] == 0.25 and result["status"] == "completed" and result["search"]["feasible"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("search") / "s"
    proc = sweep_cmd(f"sweep.dir={folder}", *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "tracking.mode=offline",
                     "launcher.max_parallel=2", "search.n_trials=3", *QUICK_SPEED)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (folder / "first_run.txt").write_text(proc.stdout)
    return folder


def _study(folder: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="width_search", storage=JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    )


@pytest.mark.slow
def test_search_runs_two_workers_and_writes_the_pareto_set(searched: Path):
    counts = tally(_study(searched).get_trials())
    assert counts["trained"] == 3 and counts["running"] == 0
    results = pd.read_csv(searched / "results.csv")
    pareto = pd.read_csv(searched / "pareto.csv")
    assert (results["status"] == "completed").sum() == 3
    assert 1 <= len(pareto) <= 3 and set(pareto["trial_id"]) <= set(results["trial_id"])
    assert {"a", "b", "depths", "groups", "top1", "images_per_s", "deploy_gmacs"} <= set(pareto.columns)
    assert "Pareto set" in (searched / "first_run.txt").read_text()
    for tid in results["trial_id"]:
        result = files.read_json(searched / "trials" / tid / "result.json")
        assert result["group"] == "width_search" and result["search"]["study"] == "width_search"
        assert result["search"]["kind"] == "completed" and len(result["search"]["values"]) == 2
        assert list((searched / "trials" / tid / "wandb").glob("offline-run-*"))  # its wandb run
    workers = {r["worker"] for r in files.read_jsonl(searched / "workers.jsonl")}
    assert workers == {0, 1}


@pytest.mark.slow
def test_rerun_continues_the_same_study(searched: Path):
    first = {p: p.read_text() for p in searched.glob("trials/*/result.json")}
    proc = sweep_cmd(f"sweep.dir={searched}", *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "tracking.mode=offline",
                     "launcher.max_parallel=2", "search.n_trials=4", *QUICK_SPEED)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "continuing" in proc.stdout
    assert tally(_study(searched).get_trials())["trained"] == 4
    assert all(p.read_text() == text for p, text in first.items())  # earlier trials untouched, not retrained
    assert len(pd.read_csv(searched / "results.csv")) == 4


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_workers_are_one_job_array(tmp_path):
    require(slurm_up(), "no SLURM controller answers (scripts/slurm_up.sh starts one)")
    folder = tmp_path / "s"
    proc = sweep_cmd(f"sweep.dir={folder}", *TINY_SEARCH, *SYNTH, "sweep.poll_s=1", "launcher=slurm",
                     "launcher.max_parallel=2", "launcher.cpus_per_task=1", "launcher.timeout_min=10",
                     "search.n_trials=2")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = files.read_jsonl(folder / "workers.jsonl")
    assert len(jobs) == 2 and len({j["job_id"].split("_")[0] for j in jobs}) == 1  # one array, two tasks
    assert tally(_study(folder).get_trials())["trained"] == 2


@pytest.mark.slow
def test_bad_search_input_exits_2_before_launching(tmp_path):
    proc = sweep_cmd(f"sweep.dir={tmp_path / 's'}", "search.objectives=[top1,flops]")
    assert proc.returncode == 2 and "error:" in proc.stderr and "'flops' is unknown" in proc.stderr
    assert not (tmp_path / "s").exists()
    seeds = sweep_cmd(f"sweep.dir={tmp_path / 's'}", "sweep.seeds=3")
    assert seeds.returncode == 2 and "sweep.seeds=3 applies to grid sweeps" in seeds.stderr


@pytest.mark.slow
def test_status_and_collect_work_from_the_records(searched: Path):
    """search_action (what sweep.action=status|collect should call for a search) needs no storage access."""
    (searched / "pareto.csv").unlink()
    summary = search_action(SweepFolder(searched), "collect")
    assert (searched / "pareto.csv").exists() and summary["trained"] >= 3
    status = search_action(SweepFolder(searched), "status")
    assert status["completed"] >= 3
    proc = run_cli("repvgg_search.sweep", f"sweep.dir={searched}", "sweep.action=status")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "best top1 so far:" in out and out.count("top1 ") >= 4  # a line per trial, and the best


@pytest.mark.slow
def test_optuna_dashboard_serves_the_finished_study_with_its_objective_names(searched: Path):
    """The README's dashboard command, over loopback: the study, its trials and the objectives by name."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen([str(exe), str(searched / "study.journal"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def answer() -> dict | None:
        assert server.poll() is None, "optuna-dashboard did not come up"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                return json.load(r)
        except OSError:
            return None

    try:
        (study,) = wait_for(answer, 60, "optuna-dashboard to come up", interval=0.3)["study_summaries"]
        assert study["study_name"] == "width_search" and study["directions"] == ["maximize", "maximize"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0") as r:
            detail = json.load(r)
        assert detail["objective_names"] == ["top1", "images_per_s"]  # not "Objective 0/1"
        assert len(detail["trials"]) == len(_study(searched).get_trials())
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_search_on_int8_objectives(tmp_path):
    """INT8 top1 and INT8 speed as the objectives: each candidate is quantized after training, and the study is
    told the values its record holds."""
    folder = tmp_path / "q"
    proc = sweep_cmd(f"sweep.dir={folder}", *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "launcher.max_parallel=1",
                     "search.n_trials=2", "search.objectives=[int8_top1,int8_images_per_s]", "quant.ptq=true",
                     "quant.calib_images=32", "quant.speed=trial_size")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(
        study_name="width_search", storage=JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    )
    assert study.metric_names == ["int8_top1", "int8_images_per_s"]
    trained = [t for t in study.get_trials() if t.user_attrs.get("kind") == "completed"]
    assert len(trained) == 2
    for t in trained:
        q = files.read_json(folder / "trials" / t.user_attrs["trial_id"] / "result.json")["quant"]
        assert t.values == [q["int8_top1"], q["int8_speed"]["images_per_s"]]
    md = build_report(folder, tmp_path / "report").read_text()  # the width-search section on its own objectives
    assert "INT8 top1" in md and "INT8 throughput" in md

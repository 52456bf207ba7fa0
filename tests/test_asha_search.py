"""The multi-fidelity search (search.fidelity=asha), speed before training, and the screen (search.screen), wired
into real searches: real trials, a real journal storage, two local worker processes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from support import FAST_SEARCH, QUICK_SPEED, SYNTHETIC_DATA, TINY_SEARCH
from test_search import make_plan, sweep_cmd

from repvgg_search import files
from repvgg_search.errors import BadInputError
from repvgg_search.schema import Status, read_record
from repvgg_search.search.driver import claim_search_folder
from repvgg_search.search.plan import prepare_study
from repvgg_search.search.rung_table import PROMOTES, RungTable
from repvgg_search.search.screen import SCREEN_ATTR, SCREENED, screen_order
from repvgg_search.search.study import holds_slot, tally
from repvgg_search.search.worker import worker_loop

SYNTH = [*SYNTHETIC_DATA, "threads=1"]
# Four candidates (a, b in {0.25, 0.5}, groups 1); rungs: 1 epoch, then train.epochs=3 (eta 3).
ASHA = [*TINY_SEARCH, *SYNTH, *FAST_SEARCH, "search.space.groups=[1]", "search.sampler=random", "train.epochs=3",
        "search.fidelity=asha", "search.min_epochs=1", "search.eta=3", "search.n_trials=3"]  # fmt: skip


def _study(folder: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    return optuna.load_study(study_name="width_search", storage=storage)


def _runs(folder: Path) -> list:
    """Every trained run's record in the sweep folder (candidate folders hold only their config until trained)."""
    found = (read_record(p) for p in sorted(folder.glob("trials/*/result.json")))
    return [r for r in found if r is not None and r.status is not Status.INFEASIBLE]


# -- bad input: refused before any folder exists ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search.fidelity=bohb"], "search.fidelity='bohb' is unknown; allowed: none, asha"),
        (["search.fidelity=asha", "search.eta=1"], "search.eta=1 must be an integer >= 2"),
        (["search.fidelity=asha", "train.epochs=3", "search.min_epochs=3"], "search.min_epochs=3 must be an integer"),
        (
            ["search.fidelity=asha", "search.pruner=median", "search.objectives=[top1]"],
            "use it with search.pruner=none",
        ),
        (
            ["search.fidelity=asha", "train.epochs=9", "search.objectives=[top1,int8_top1]", "quant.ptq=true"],
            "use search.fidelity=none",
        ),
        (["search.screen=1"], "search.screen=1 must be >= 2"),
        (["search.screen=8", "search.objectives=[top1,int8_top1]", "quant.ptq=true"], "drop search.screen"),
        (["speed.predictor=guess"], "speed.predictor='guess' is not allowed; allowed: measure, lut"),
        (["speed.predictor=lut", "model=d2se"], "squeeze-excitation; use speed.predictor=measure"),
    ],
)
def test_bad_fidelity_screen_and_predictor_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(BadInputError) as err:
        make_plan(tmp_path / "s", *TINY_SEARCH, *overrides)
    assert message in str(err.value)
    assert not (tmp_path / "s").exists()


def test_a_promotion_takes_no_slot_and_is_counted_apart():
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.enqueue_trial({"x": 0.5}, user_attrs={PROMOTES: "c0@1", "trial_id": "c0"})
    waiting = study.get_trials()[0]
    assert not holds_slot(waiting)
    counts = tally(study.get_trials())
    assert counts["holding"] == 0 and counts["waiting"] == 1  # a free worker asks for it; no candidate slot used


# -- a real multi-fidelity search: two worker processes ---------------------------------------------------------
@pytest.fixture(scope="module")
def asha_searched(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("asha") / "s"
    proc = sweep_cmd(f"sweep.dir={folder}", *ASHA, "launcher.max_parallel=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_asha_stops_the_rest_of_each_rung_and_trains_the_best_to_the_end(asha_searched: Path):
    study = _study(asha_searched)
    counts = tally(study.get_trials())
    assert counts["trained"] == 3 and counts["running"] == counts["waiting"] == 0  # 3 candidates started
    runs = _runs(asha_searched)
    rung1 = [r for r in runs if r.search.rung == 1]
    full = [r for r in runs if r.search.rung == 3]
    assert len(rung1) == 3 and len(full) == 1  # each candidate's 1-epoch run; one candidate to train.epochs
    assert sorted(r.status.value for r in rung1) == ["completed", "stopped_early", "stopped_early"]
    (promoted,) = [r for r in rung1 if r.status is Status.COMPLETED]
    assert promoted.search.kind is Status.PROMOTED and promoted.search.candidate == full[0].trial_id
    assert all(r.metrics.epochs == 1 and r.config["train"]["epochs"] == 1 for r in rung1)
    assert full[0].metrics.epochs == 3 and full[0].search.kind is Status.COMPLETED
    assert sum(r.metrics.epochs for r in runs) == 6  # 3 x 1 + 3, against 9 for the full-fidelity search
    table = RungTable(study).read()
    assert list(table) == [1] and {e.trial_id for e in table[1]} == {r.search.candidate for r in rung1}
    # each entry holds the validation images its top1 was measured on (search.top1_tolerance=auto's n)
    assert (
        sorted(e.images for e in table[1]) == sorted(r.metrics.val_images for r in rung1)
        and rung1[0].metrics.val_images
    )
    stopped = [t for t in study.get_trials() if t.user_attrs.get("kind") == "stopped_early"]
    assert all(t.state == TrialState.PRUNED and t.user_attrs["asha_rung"] == 1 for t in stopped)
    # A proposal of a candidate already trained is told as that candidate was (never FAIL, which samplers ignore:
    # TPE proposed one stopped candidate 120 times over in a 16-candidate space before this)
    again = [t for t in study.get_trials() if "duplicate_of" in t.user_attrs]
    assert all(t.state in (TrialState.PRUNED, TrialState.COMPLETE) for t in again)


@pytest.mark.slow
def test_asha_front_and_tables_hold_only_full_fidelity_results(asha_searched: Path):
    pareto = pd.read_csv(asha_searched / "pareto.csv")
    full = {r.trial_id for r in _runs(asha_searched) if r.search.rung == 3}
    assert set(pareto["trial_id"]) == full
    results = pd.read_csv(asha_searched / "results.csv")
    assert {"rung", "candidate"} <= set(results.columns)
    assert sorted(results["rung"].dropna().astype(int)) == [1, 1, 1, 3]


@pytest.mark.slow
def test_speed_is_measured_before_training_and_reused_after(asha_searched: Path):
    """Every run's figure is the one the worker measured before the candidate's first epoch (the same key)."""
    runs = _runs(asha_searched)
    assert all(r.speed.source == "cached" for r in runs)
    by_candidate = {}
    for r in runs:
        by_candidate.setdefault(r.search.candidate, set()).add(r.speed.key)
    assert all(len(keys) == 1 for keys in by_candidate.values())  # one figure per architecture, at every rung
    assert len(list((asha_searched / "speed").glob("*.json"))) == len(by_candidate)


@pytest.mark.slow
def test_asha_rerun_trains_nothing_again(asha_searched: Path):
    before = {p: p.read_text() for p in asha_searched.glob("trials/*/result.json")}
    proc = sweep_cmd(f"sweep.dir={asha_searched}", *ASHA, "launcher.max_parallel=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "continuing" in proc.stdout
    assert {p: p.read_text() for p in asha_searched.glob("trials/*/result.json")} == before


# -- speed before training: the latency budget ------------------------------------------------------------------
@pytest.mark.slow
def test_a_candidate_over_the_latency_budget_never_trains(tmp_path):
    folder = tmp_path / "s"
    plan = make_plan(folder, *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "launcher=debug", "search.sampler=random",
                     "search.space.groups=[1]", "search.n_trials=1", "search.max_skipped=2",
                     "search.constraints.max_latency_ms=0.001")  # fmt: skip
    claim_search_folder(plan)
    prepare_study(plan)
    done = worker_loop(plan, 0)
    assert "infeasible or already trained" in done["stopped"]
    records = [read_record(p) for p in folder.glob("trials/*/result.json")]
    assert records and all(r.status is Status.INFEASIBLE for r in records)
    for r in records:
        assert "latency_ms over budget" in r.error and r.speed.latency_ms > 0.001  # measured, never trained
        assert r.search.constraints["latency_ms"] > 0 and r.metrics is None
        assert not (folder / "trials" / r.trial_id / "checkpoints").exists()


# -- the screen: rank drawn candidates by what is known before training ------------------------------------------
def test_screen_order_puts_the_predicted_front_first():
    rows = [
        {"candidate": "big-slow", "macs": 4, "images_per_s": 1.0, "feasible": True},
        {"candidate": "small-fast", "macs": 1, "images_per_s": 4.0, "feasible": True},
        {"candidate": "dominated", "macs": 1, "images_per_s": 0.5, "feasible": True},  # smaller and slower
        {"candidate": "middle", "macs": 2, "images_per_s": 2.0, "feasible": True},
        {"candidate": "over-budget", "macs": 9, "images_per_s": 9.0, "feasible": False},
    ]
    ordered = screen_order(rows, ["top1", "images_per_s"])
    assert [r["candidate"] for r in ordered][-1] == "dominated" and len(ordered) == 4
    assert {r["candidate"] for r in ordered if r["front"] == 0} == {"big-slow", "small-fast", "middle"}
    assert [r["candidate"] for r in ordered[:2]] == ["big-slow", "small-fast"]  # the extremes (infinite crowding)


@pytest.mark.slow
def test_screen_trains_only_the_best_predicted_candidates(tmp_path):
    folder = tmp_path / "s"
    plan = make_plan(folder, *TINY_SEARCH, *SYNTH, *FAST_SEARCH, "launcher=debug", "search.space.groups=[1]",
                     "search.n_trials=2", "search.screen=16", "speed.predictor=lut", *QUICK_SPEED)  # fmt: skip
    claim_search_folder(plan)
    prepare_study(plan)
    worker_loop(plan, 0)
    study = optuna.load_study(study_name=plan.study_name, storage=JournalStorage(JournalFileBackend(plan.storage)))
    screen = pd.read_csv(folder / "screen.csv")
    summary = study.user_attrs[SCREEN_ATTR]
    assert summary["drawn"] == 16 and summary["distinct"] == len(screen) == 4 and summary["kept"] == 2
    kept = screen[screen["kept"]].sort_values("rank")
    assert list(kept["rank"]) == [0, 1]
    trained = [t for t in study.get_trials() if t.user_attrs.get("kind") == "completed"]
    assert len(trained) == 2 and sorted(t.user_attrs[SCREENED] for t in trained) == [0, 1]
    assert {(t.params["a"], t.params["b"]) for t in trained} == set(zip(kept["a"], kept["b"]))
    for t in trained:
        record = read_record(folder / "trials" / t.user_attrs["trial_id"] / files.RESULT)
        assert record.speed.source == "predicted" and Path(record.speed.table).is_dir()
        assert record.speed.overhead_ms > 0

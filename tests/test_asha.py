"""Multi-fidelity promotion: rung levels, the MO-ASHA rule on hand-worked rungs (ties, promote later), and the rung
table in a real Optuna storage shared by real worker processes (journal file; PostgreSQL marked `postgres`)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from support import require

from repvgg_search.errors import BadInputError
from repvgg_search.search.asha import (
    FidelityError,
    Ladder,
    RungEntry,
    Tolerance,
    check_fidelity,
    closed_rungs,
    continues,
    crowding_distances,
    epochs_per_candidate,
    next_level,
    next_promotion,
    nondominated_fronts,
    promotable,
    quota,
    rank,
    rung_levels,
    rung_recipe,
)
from repvgg_search.search.rung_table import (
    DUPLICATE,
    KIND,
    RUNG,
    STOPPED_EARLY,
    TRIAL_ID,
    RungTable,
    arrival_continues,
    enqueue_promotion,
    holds_promotion,
    paused,
    plan_promotion,
    promotion_target,
)
from repvgg_search.search.settings import SearchSettings
from repvgg_search.search.storage import make_storage, quiet

TESTS = Path(__file__).resolve().parent
MAX2 = ["maximize", "maximize"]  # (top1 at the rung, images/s)
LADDER = Ladder((1, 3), 9, 3, tuple(MAX2))  # min_epochs 1, eta 3, train.epochs 9
# Ask/tell workers beat themselves; optuna's warning about heartbeats outside Study.optimize does not know that.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
PG_URL = os.environ.get("REPVGG_PG_URL", "postgresql+psycopg2://repvgg:repvgg@127.0.0.1:54329/repvgg_optuna")


def e(name: str, number: int, top1: float, speed: float = 100.0, rung: int = 1) -> RungEntry:
    return RungEntry(name, number, rung, (top1, speed), {"x": number / 100})


# -- rung levels and settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("min_epochs", "eta", "epochs", "levels"),
    [(1, 3, 9, [1, 3]), (2, 3, 18, [2, 6]), (2, 3, 20, [2, 6, 18]), (1, 2, 8, [1, 2, 4]), (4, 3, 5, [4])],
)
def test_rungs_are_powers_of_eta_below_train_epochs(min_epochs, eta, epochs, levels):
    assert rung_levels(min_epochs, eta, epochs) == levels
    assert check_fidelity("asha", min_epochs, eta, epochs, ["top1", "images_per_s"]) == levels
    assert next_level(levels, levels[-1], epochs) == epochs and next_level(levels, 0, epochs) == levels[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("hyperband", 1, 3, 9, ["top1"]), "search.fidelity='hyperband' is unknown; allowed: none, asha"),
        (("asha", 1, 1, 9, ["top1"]), "search.eta=1 must be an integer >= 2"),
        (("asha", 1, 2.5, 9, ["top1"]), "search.eta=2.5 must be an integer >= 2"),
        (("asha", 0, 3, 9, ["top1"]), "search.min_epochs=0 must be an integer in [1, train.epochs=9)"),
        (("asha", 9, 3, 9, ["top1"]), "search.min_epochs=9 must be an integer in [1, train.epochs=9)"),
        (("asha", 1, 3, 9, ["images_per_s", "macs"]), "must include top1"),
        (("asha", 1, 3, 9, ["top1", "int8_top1"]), "['int8_top1'] are measured after training"),
    ],
)
def test_bad_fidelity_settings_are_refused_naming_the_key(args, message):
    with pytest.raises(FidelityError) as err:
        check_fidelity(*args)
    assert message in str(err.value) and isinstance(err.value, BadInputError)


def test_ladder_and_default_min_epochs():
    assert Ladder.of(None, 3, 18, ["top1", "macs"], ["maximize", "minimize"]) == Ladder(
        (2, 6), 18, 3, ("maximize", "minimize"), Tolerance(0, "auto")
    )
    assert Ladder.of(1, 3, 9, ["macs", "top1"], ["minimize", "maximize"], 0.5).tolerance == Tolerance(1, 0.5)
    assert Ladder.of(None, 3, 120, ["top1"], ["maximize"]).levels == (13, 39, 117)
    assert Ladder.of(None, 3, 4, ["top1"], ["maximize"]).levels == (1, 3)
    assert LADDER.next_level(0) == 1 and LADDER.next_level(1) == 3 and LADDER.next_level(3) == 9
    with pytest.raises(FidelityError, match="search.eta=0"):
        Ladder.of(None, 0, 18, ["top1"], ["maximize"])


def test_rung_recipe_and_epochs_per_candidate():
    assert rung_recipe(9, 0.5, 1) == {"epochs": 1, "warmup_epochs": 0.5}  # what rung_correlation.py measured
    assert rung_recipe(120, 5.0, 3) == {"epochs": 3, "warmup_epochs": pytest.approx(0.125)}  # 5 x 3 / 120
    assert rung_recipe(9, 0.5, 9) == {"epochs": 9, "warmup_epochs": 0.5}  # the last level is the full recipe
    # eta 3, rungs 1 and 3 of 9: budgeted 1 + 3/3 + 9/9 = 3; continued 1 + 2/3 + 6/9 = 2.33 (rung-1 budgets)
    assert epochs_per_candidate([1, 3], 9, 3) == pytest.approx(3.0)
    assert epochs_per_candidate([1, 3], 9, 3, "continued") == pytest.approx(7 / 3)
    assert epochs_per_candidate([], 9, 3) == 9  # no rungs: every candidate trains the full recipe
    with pytest.raises(FidelityError, match="search.rung_schedule='cosine' is unknown; allowed: budgeted, continued"):
        epochs_per_candidate([1], 9, 3, "cosine")


def test_fidelity_none_has_no_rungs():
    assert check_fidelity("none", None, 3, 9, ["top1", "int8_top1"]) == []


# -- the rule on hand-worked rungs ---------------------------------------------------------------------------------
def test_fronts_by_hand():
    # (top1, images/s), both maximized: A, B, C trade off; C dominates E; everything dominates D.
    points = [(90, 100), (80, 200), (85, 150), (70, 90), (80, 150)]
    assert nondominated_fronts(points, MAX2) == [[0, 1, 2], [4], [3]]
    # A minimized objective (latency, ms): at equal top1 the lower one dominates.
    assert nondominated_fronts([(90, 100), (90, 50)], ["maximize", "minimize"]) == [[1], [0]]
    assert nondominated_fronts([(90, 100), (90, 100)], MAX2) == [[0, 1]]  # equal points share a front


def test_epsilon_dominance_by_hand():
    # (top1 at rung 3, images/s) on 360 validation images: B is fastest, A and C are more accurate than B by less
    # than the noise, D is slower than B and less accurate by more than it.
    rung = [RungEntry(n, i, 3, v, {}, 360) for i, (n, v) in
            enumerate([("A", (97.5, 100.0)), ("B", (96.8, 300.0)), ("C", (97.9, 50.0)), ("D", (95.0, 280.0))])]  # fmt: skip
    names = lambda order: [x.trial_id for x in order]  # noqa: E731
    # plain Pareto: A, B, C are one front (the extremes B and C first by crowding, then A); D is dominated by B
    assert names(rank(rung, MAX2)) == ["B", "C", "A", "D"]
    tolerance = Tolerance(0)
    p = (97.5 + 96.8 + 97.9 + 95.0) / 400  # one standard error of a difference of two top1 figures at the mean
    assert tolerance.epsilon(rung) == pytest.approx(100 * math.sqrt(2 * p * (1 - p) / 360))  # 1.31 points
    # within 1.31 points top1 does not rank: B (fastest) epsilon-dominates A and C; A (faster than C) dominates C;
    # D is 1.8 points below B: B dominates it, and it trades off with A
    assert names(rank(rung, MAX2, tolerance)) == ["B", "A", "D", "C"]
    assert names(rank(rung, MAX2, Tolerance(0, 0.0))) == names(rank(rung, MAX2))  # 0 = plain dominance
    assert names(rank(rung, MAX2, Tolerance(0, 2.0))) == ["B", "A", "D", "C"]
    # eta 3, 4 entries: one continues; plain dominance would keep C's 0.4 points over A, bought with half its speed
    assert continues(rung, "B", 3, MAX2, tolerance=tolerance) and not continues(rung, "C", 3, MAX2, tolerance=tolerance)
    # no validation count (a table written before the field) or top1 alone: nothing else ranks, epsilon is not used
    old = [RungEntry(x.trial_id, x.number, 3, x.values) for x in rung]
    assert tolerance.epsilon(old) == 0 and names(rank(old, MAX2, tolerance)) == names(rank(old, MAX2))
    alone = [RungEntry(x.trial_id, x.number, 3, x.values[:1], {}, 360) for x in rung]
    assert tolerance.slack(alone) is None and names(rank(alone, ["maximize"], tolerance)) == ["C", "A", "B", "D"]
    assert RungEntry.from_json(rung[0].to_json()) == rung[0] and RungEntry.from_json(rung[0].to_json()).images == 360
    assert RungEntry.from_json({k: v for k, v in rung[0].to_json().items() if k != "images"}).images is None


def test_epsilon_dominance_sorts_every_point_into_a_front():
    # Slack on top1 only, the other objectives exact: the relation is acyclic, so the sort places every point
    # (a cycle would leave its points out of every front) and nothing in a front dominates another of it.
    import random

    from repvgg_search.search.asha import _costs, _dominates

    rng = random.Random(0)
    for _ in range(200):
        k = rng.choice([2, 3])
        points = [(rng.choice([90.0, 90.5, 91.0, 92.0, 95.0]), *(rng.choice([1.0, 2.0, 3.0]) for _ in range(k - 1)))
                  for _ in range(rng.randint(2, 12))]  # fmt: skip
        directions = ["maximize", *(rng.choice(["maximize", "minimize"]) for _ in range(k - 1))]
        slack = (rng.choice([0.0, 0.6, 1.5, 10.0]), *(0.0,) * (k - 1))
        fronts = nondominated_fronts(points, directions, slack)
        assert sorted(i for f in fronts for i in f) == list(range(len(points))), (points, slack)
        costs = _costs(points, directions)
        assert not any(_dominates(costs[i], costs[j], slack) for f in fronts for i in f for j in f)


@pytest.mark.parametrize("value", [-0.5, "high", math.inf, True])
def test_a_bad_top1_tolerance_is_refused_naming_the_key(value):
    from repvgg_search.search.settings import search_settings

    with pytest.raises(BadInputError, match=r"search.top1_tolerance=.* must be 'auto' .* or a number of top1 points"):
        search_settings({"fidelity": "asha", "top1_tolerance": value})
    assert search_settings({"top1_tolerance": 0}).top1_tolerance == 0


def test_crowding_distance_by_hand():
    # One front on a line: top1 range 15, speed range 300. P2: 6/15 + 110/300 = 0.7667; P3: 10/15 + 200/300 = 1.3333.
    front = [(95, 100), (90, 200), (89, 210), (80, 400)]
    dist = crowding_distances(front, MAX2)
    assert dist[0] == dist[3] == math.inf
    assert dist[1] == pytest.approx(6 / 15 + 110 / 300) and dist[2] == pytest.approx(10 / 15 + 200 / 300)
    assert crowding_distances([(1, 1), (2, 0)], MAX2) == [math.inf, math.inf]


def test_crowding_distance_breaks_ties_inside_a_front():
    # The 4-point front above plus 5 dominated candidates: 9 entries, quota 3. The extremes (infinite distance)
    # come first, P1 before P4 by trial number; then P3 (1.33) beats P2 (0.77) for the last place.
    front = [e("P1", 0, 95, 100), e("P2", 1, 90, 200), e("P3", 2, 89, 210), e("P4", 3, 80, 400)]
    dominated = [e(f"D{i}", 10 + i, 50 - i, 50) for i in range(5)]
    entries = front + dominated
    assert [x.trial_id for x in rank(entries, MAX2)[:4]] == ["P1", "P4", "P3", "P2"]
    assert quota(len(entries), 3) == 3
    assert continues(entries, "P3", 3, MAX2) and not continues(entries, "P2", 3, MAX2)
    # With 6 entries the quota is 2: only the extremes continue.
    assert not continues(front + dominated[:2], "P3", 3, MAX2)


def test_equal_points_are_ordered_by_trial_number():
    entries = [e("X", 5, 90, 100), e("Y", 3, 90, 100), e("Z", 1, 50, 50)]
    assert [x.trial_id for x in rank(entries, MAX2)] == ["Y", "X", "Z"]
    assert continues(entries, "Y", 3, MAX2) and not continues(entries, "X", 3, MAX2)


def test_quota_is_floor_n_over_eta_and_a_closed_rung_promotes_its_best():
    assert [quota(n, 3) for n in range(8)] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert [quota(n, 3, closed=True) for n in range(5)] == [0, 1, 1, 1, 1]
    assert closed_rungs([1, 3], [3], budget_spent=False) == frozenset()
    assert closed_rungs([1, 3], [3], budget_spent=True) == {1}
    assert closed_rungs([1, 3], [], budget_spent=True) == {1, 3}


def test_asynchronous_promotion_later_as_the_rung_fills():
    """Arrivals at rung 1 one at a time (eta 3). Each decision uses only the entries recorded so far; a candidate
    that paused is promoted later, once enough worse ones have arrived (c2 after one more, c1 after eleven)."""
    rung: list[RungEntry] = []
    stopped: set[str] = set()
    promoted: list[str] = []

    def arrive(entry: RungEntry) -> bool:
        rung.append(entry)
        go = continues(rung, entry.trial_id, 3, MAX2)
        (promoted.append if go else stopped.add)(entry.trial_id)
        return go

    def promote_later() -> list[str]:
        found = [x.trial_id for x in promotable(rung, stopped, 3, MAX2)]
        stopped.difference_update(found)
        promoted.extend(found)
        return found

    assert not arrive(e("c1", 1, 50))  # n=1, quota 0: pause
    assert not arrive(e("c2", 2, 60))  # n=2, quota 0
    assert promote_later() == []
    assert not arrive(e("c3", 3, 40))  # n=3, quota 1: c2 leads
    assert promote_later() == ["c2"]  # c2 paused at its arrival and is promoted now
    assert arrive(e("c4", 4, 70))  # n=4, quota 1: c4 leads, it continues at once
    assert not arrive(e("c5", 5, 30)) and not arrive(e("c6", 6, 20))  # n=6, quota 2: c4, c2, both moved on
    assert promote_later() == []
    # A fast candidate with a poorer top1 shares the first front with c4 (both extremes, infinite crowding
    # distance, c4 first by number): second of 7, quota 2, it continues.
    assert arrive(e("c7", 7, 45, speed=300))
    assert [x.trial_id for x in rank(rung, MAX2)[:4]] == ["c4", "c7", "c2", "c1"]  # fronts: {c4, c7}, {c2}, {c1}
    for i, top1 in enumerate([10, 5, 4, 3, 2]):  # n=12, quota 4: c1 is fourth
        assert not arrive(e(f"c{8 + i}", 8 + i, top1))
        assert promote_later() == ([] if i < 4 else ["c1"])
    assert promoted == ["c2", "c4", "c7", "c1"]
    assert stopped == {"c3", "c5", "c6", "c8", "c9", "c10", "c11", "c12"}


def test_next_promotion_takes_the_top_rung_first():
    low = [e(f"a{i}", i, 50 + i) for i in range(3)]
    high = [e(f"b{i}", 10 + i, 60 + i, rung=3) for i in range(3)]
    table = {1: low, 3: high}
    both = {"a2": 1, "b2": 3}  # each the best of its rung, paused there
    assert next_promotion(table, both, 3, MAX2).trial_id == "b2"
    assert next_promotion(table, {"a2": 1}, 3, MAX2).trial_id == "a2"  # only rung 1 has one
    assert next_promotion({1: low[:2]}, {"a0": 1, "a1": 1}, 3, MAX2) is None  # quota 0
    assert next_promotion({1: low[:2]}, {"a0": 1, "a1": 1}, 3, MAX2, closed=[1]).trial_id == "a1"


# -- the table in a real Optuna storage ----------------------------------------------------------------------------
def journal(path: Path, name: str = "asha") -> optuna.Study:
    with quiet():
        storage = make_storage(str(path), SearchSettings())  # the search's own journal storage, with heartbeats
        return optuna.create_study(storage=storage, study_name=name, directions=MAX2, load_if_exists=True)


def stop_early(study: optuna.Study, trial: optuna.Trial, candidate: str, rung: int) -> None:
    trial.set_user_attr(RUNG, rung)
    trial.set_user_attr(KIND, STOPPED_EARLY)
    study.tell(trial, state=TrialState.PRUNED)


def test_table_records_once_and_reads_back_from_another_handle(tmp_path):
    study = journal(tmp_path / "j")
    table = RungTable(study)
    first = e("c1", 0, 50.0)
    assert table.record(first) == first
    assert table.record(RungEntry("c1", 7, 1, (99.0, 1.0))) == first  # a retry reaching the rung again keeps it
    table.record(e("c2", 1, 60.0, rung=3))
    other = RungTable(journal(tmp_path / "j"))
    assert other.read() == {1: [first], 3: [e("c2", 1, 60.0, rung=3)]}
    assert other.read()[1][0].params == {"x": 0.0}


def test_paused_candidates_and_claims_of_a_later_promotion(tmp_path):
    study = journal(tmp_path / "j")
    table = RungTable(study)
    for i, top1 in enumerate([50.0, 70.0, 40.0]):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr(TRIAL_ID, f"c{i}")
        table.record(RungEntry(f"c{i}", trial.number, 1, (top1, 100.0), trial.params))
        stop_early(study, trial, f"c{i}", 1)
    rungs = table.read()
    assert paused(rungs, study.get_trials()) == {"c0": 1, "c1": 1, "c2": 1}
    best = plan_promotion(rungs, study.get_trials(), LADDER, budget_spent=False)
    assert best.trial_id == "c1"
    enqueue_promotion(study, best)
    enqueue_promotion(study, best)  # a second worker decided the same at the same moment
    assert paused(table.read(), study.get_trials()) == {"c0": 1, "c2": 1}  # queued: no longer paused
    assert plan_promotion(table.read(), study.get_trials(), LADDER, budget_spent=False) is None
    first, second = study.ask(), study.ask()  # each pops one waiting trial, lowest number first
    assert first.suggest_float("x", 0.0, 1.0) == second.suggest_float("x", 0.0, 1.0) == best.params["x"]
    assert promotion_target(study.get_trials()[first.number]) == ("c1", 1)
    assert holds_promotion(study.get_trials(), first.number) and not holds_promotion(study.get_trials(), second.number)
    second.set_user_attr(KIND, DUPLICATE)
    study.tell(second, state=TrialState.FAIL)  # the duplicate claim ends without training
    study.tell(first, state=TrialState.FAIL)  # the claim's worker dies: its retry must take over
    study.enqueue_trial(best.params, user_attrs=study.get_trials()[first.number].user_attrs)  # as the retry does
    retry = study.ask()
    assert holds_promotion(study.get_trials(), retry.number)
    retry.suggest_float("x", 0.0, 1.0)
    study.tell(retry, [80.0, 100.0])  # the promotion ran to the end: c1 is never promoted again
    assert paused(table.read(), study.get_trials()) == {"c0": 1, "c2": 1}
    # Even with the rung closed, its quota (1 of 3) is taken by c1: nothing else is promoted.
    assert plan_promotion(table.read(), study.get_trials(), LADDER, budget_spent=True) is None


WORKER = """
import sys; sys.path.insert(0, {tests!r})
from test_asha import sim_worker
sim_worker({storage!r}, {name!r}, {n}, {log!r}, {seed})
"""


def launch_workers(storage: str, name: str, n: int, logs: list[Path]) -> list[subprocess.Popen]:
    procs = []
    for i, log in enumerate(logs):
        code = WORKER.format(tests=str(TESTS), storage=storage, name=name, n=n, log=str(log), seed=i)
        procs.append(subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True))
    return procs


def check_concurrent_search(storage: str, name: str, tmp_path: Path, n: int = 18, workers: int = 4) -> None:
    """Real processes run the whole protocol (ask, claim, record, decide, promote later) on one study."""
    with quiet():
        optuna.create_study(storage=make_storage(storage, SearchSettings()), study_name=name, directions=MAX2)
    logs = [tmp_path / f"w{i}.jsonl" for i in range(workers)]
    procs = launch_workers(storage, name, n, logs)
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    events = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    with quiet():
        study = optuna.load_study(study_name=name, storage=make_storage(storage, SearchSettings()))
    trials, table = study.get_trials(), RungTable(study).read()
    arrivals = [(x["candidate"], x["rung"]) for x in events if x["event"] == "arrive"]
    segments = [(x["candidate"], x["start"]) for x in events if x["event"] == "train"]
    assert len(arrivals) == len(set(arrivals)), "a candidate reached a rung twice: a promotion trained twice"
    assert len(segments) == len(set(segments))
    assert set(arrivals) == {(x.trial_id, r) for r, es in table.items() for x in es}, "an entry was lost"
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert plan_promotion(table, trials, LADDER, budget_spent=True) is None
    assert len(table[1]) == n and sum(t.user_attrs.get(KIND) == "trained" for t in trials) >= 1
    for rung, entries in table.items():  # at rest every candidate in its rung's top 1/eta moved on
        higher = {c for c, r in arrivals if r > rung} | {x["candidate"] for x in events if x["event"] == "complete"}
        top = rank(entries, MAX2)[: quota(len(entries), 3, closed=True)]
        assert {x.trial_id for x in top} <= higher, (rung, [x.trial_id for x in top])


@pytest.mark.slow
def test_concurrent_workers_share_the_rung_table_in_a_journal_file(tmp_path):
    check_concurrent_search(str(tmp_path / "study.journal"), "asha", tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_workers_share_the_rung_table_in_postgresql(tmp_path):
    from test_search_postgres import postgres_up

    require(postgres_up(), f"no PostgreSQL at {PG_URL} (scripts/postgres_up.sh starts one)")
    name = f"pytest-asha-{uuid.uuid4().hex[:10]}"
    try:
        check_concurrent_search(PG_URL, name, tmp_path, n=12, workers=3)
    finally:
        storage = optuna.storages.RDBStorage(PG_URL)
        try:
            optuna.delete_study(study_name=name, storage=storage)
        finally:
            storage.engine.dispose()


@pytest.mark.slow
def test_a_killed_workers_promotion_is_retried_once(tmp_path):
    """A worker is killed (SIGKILL) while it trains a promotion; its trial goes stale, the heartbeat callback queues
    a retry that inherits the claim, and the candidate is not paused meanwhile (it is not promoted twice)."""
    path = tmp_path / "study.journal"
    settings = SearchSettings(heartbeat_interval=1, grace_period=2)
    with quiet():
        study = optuna.create_study(storage=make_storage(str(path), settings), study_name="asha", directions=MAX2)
    table = RungTable(study)
    for i in range(3):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
        trial.set_user_attr(TRIAL_ID, f"c{i}")
        table.record(RungEntry(f"c{i}", trial.number, 1, (50.0 + i, 100.0), trial.params))
        stop_early(study, trial, f"c{i}", 1)
    enqueue_promotion(study, plan_promotion(table.read(), study.get_trials(), LADDER, False))
    code = (
        "import optuna, time; from repvgg_search.search.storage import make_storage, quiet;"
        "from repvgg_search.search.settings import SearchSettings;"
        f"s = optuna.load_study(study_name='asha', storage=make_storage({str(path)!r}, "
        "SearchSettings(heartbeat_interval=1, grace_period=2)));"
        "t = s.ask(); s._storage.record_heartbeat(t._trial_id); print(t.number, flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    number = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert paused(table.read(), study.get_trials()) == {"c0": 1, "c1": 1}  # c2 is being (was) trained
    time.sleep(3)
    with quiet():
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[number].state == TrialState.FAIL
    retry = study.ask()
    assert promotion_target(study.get_trials()[retry.number]) == ("c2", 1)
    assert holds_promotion(study.get_trials(), retry.number)
    assert plan_promotion(table.read(), study.get_trials(), LADDER, False) is None


# -- the simulated worker the concurrency tests run in their own processes ---------------------------------------
def _top1(x: float, rung: int) -> float:
    return 100 * (1 - math.exp(-rung * (0.1 + x))) - 10 * x * x


def _speed(x: float) -> float:
    return 1000 * (1.2 - x)


def sim_worker(storage: str, name: str, n: int, log: str, seed: int) -> None:
    """A stand-in search worker: the whole ASHA protocol, with "training" a short sleep per epoch."""
    with quiet():
        study = optuna.load_study(
            study_name=name, storage=make_storage(storage, SearchSettings()),
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )  # fmt: skip
    table, deadline = RungTable(study), time.time() + 200
    with open(log, "a") as out:
        while time.time() < deadline:
            trials = study.get_trials(deepcopy=False)
            spent = _budget_spent(trials, n)
            promo = plan_promotion(table.read(), trials, LADDER, spent)
            if promo is not None:
                enqueue_promotion(study, promo)
            elif spent:
                if not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
                    return
                time.sleep(0.02)
                continue
            with quiet():
                trial = study.ask()
            _sim_evaluate(study, table, trial, n, out)
    raise TimeoutError(f"the simulated search did not finish; at the deadline:\n{_sim_state(study, table, n)}")


def _budget_spent(trials, n) -> bool:
    """Whether n candidates have started (every trial that is not a promotion starts one, surplus ones included)."""
    return sum(promotion_target(t) is None for t in trials) >= n


def _sim_state(study, table, n) -> str:
    """What a stuck simulated search looked like: every trial, the rung table and the promotion it would plan."""
    trials, rungs = study.get_trials(deepcopy=False), table.read()
    spent = _budget_spent(trials, n)
    lines = [f"{t.number} {t.state.name} {t.user_attrs}" for t in trials]
    entries = {r: [(e.trial_id, e.number) for e in es] for r, es in rungs.items()}
    return "\n".join(
        [*lines, f"table {entries}", f"spent {spent}, plan {plan_promotion(rungs, trials, LADDER, spent)}"]
    )


def _sim_evaluate(study, table, trial, n, out) -> None:
    x = trial.suggest_float("x", 0.0, 1.0)
    trials = study.get_trials(deepcopy=False)
    target = promotion_target(trials[trial.number])
    if target is None:
        fresh = sorted(t.number for t in trials if promotion_target(t) is None)
        if fresh.index(trial.number) >= n:
            trial.set_user_attr(KIND, "surplus")
            return study.tell(trial, state=TrialState.FAIL)
        candidate, start = f"c{trial.number:04d}", 0
        trial.set_user_attr(TRIAL_ID, candidate)
    elif not holds_promotion(trials, trial.number):
        trial.set_user_attr(KIND, DUPLICATE)
        return study.tell(trial, state=TrialState.FAIL)
    else:
        candidate, start = target
    out.write(json.dumps({"event": "train", "candidate": candidate, "start": start}) + "\n")
    for rung in [r for r in LADDER.levels if r > start]:
        time.sleep(0.003 * rung)
        entry = RungEntry(candidate, trial.number, rung, (_top1(x, rung), _speed(x)), {"x": x})
        out.write(json.dumps({"event": "arrive", "candidate": candidate, "rung": rung}) + "\n")
        out.flush()
        now = study.get_trials(deepcopy=False)
        spent = _budget_spent(now, n)
        if not arrival_continues(table, entry, now, LADDER, spent):
            return stop_early(study, trial, candidate, rung)
    trial.set_user_attr(KIND, "trained")
    study.tell(trial, [_top1(x, LADDER.epochs), _speed(x)])
    out.write(json.dumps({"event": "complete", "candidate": candidate}) + "\n")

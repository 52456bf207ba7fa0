"""Faults and inputs of issue 23: a torn study journal, an edited sweep definition, malformed records, work refused
before it starts (real files, real Optuna journals, real processes)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from support import FAST_SEARCH, SYNTHETIC_DATA, TINY_SEARCH, environ, run_cli

from repvgg_search.search.settings import SearchError, SearchSettings
from repvgg_search.search.storage import make_storage
from repvgg_search.search.study import tally


def _lines(path: Path) -> list[dict]:
    """Every record of a journal file, each a whole JSON line (fails on a torn one)."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "the journal ends inside a record"
    return [json.loads(line) for line in raw.splitlines()]


def _journal_with_trials(path: Path, n: int) -> None:
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(path))), study_name="t")
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)},
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 9)},
                                                  value=float(i)))  # fmt: skip


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_torn_last_journal_record_is_dropped_and_the_next_append_is_whole(tmp_path, caplog):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 2)
    whole = len(_lines(path))
    path.write_bytes(path.read_bytes()[:-7])  # the last record cut short, as a kill or a full disk leaves it
    storage = make_storage(str(path), SearchSettings())
    assert "dropped a torn last record" in caplog.text and str(path) in caplog.text
    study = optuna.load_study(study_name="t", storage=storage)
    study.add_trial(optuna.trial.create_trial(params={"x": 5.0},
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 9)},
                                              value=5.0))  # fmt: skip
    records = _lines(path)  # no record was appended onto the torn one
    assert len(records) > whole - 1
    reread = optuna.load_study(study_name="t", storage=JournalStorage(JournalFileBackend(str(path))))
    assert [t.params["x"] for t in reread.get_trials() if t.state.is_finished()][-1] == 5.0


def test_a_journal_torn_before_its_last_record_is_refused_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 4)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) > 3
    path.write_bytes(b"".join([*lines[:2], lines[2][:5] + b"\n", *lines[3:]]))
    before = path.read_bytes()
    with pytest.raises(SearchError) as err:
        make_storage(str(path), SearchSettings())
    assert str(path) in str(err.value) and "record 3" in str(err.value) and "truncate -s" in str(err.value)
    assert path.read_bytes() == before  # refused, untouched


@pytest.mark.slow
def test_a_search_whose_journal_was_torn_continues_after_dropping_the_torn_record(tmp_path):
    folder = tmp_path / "s"
    common = [f"sweep.dir={folder}", *TINY_SEARCH, *SYNTHETIC_DATA, "threads=1", *FAST_SEARCH, "launcher=debug"]
    first = run_cli("repvgg_search.sweep", "+sweep=width_search", *common, "search.n_trials=1",
                    env=environ(WANDB_MODE="offline"), timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    journal = folder / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-9])
    rerun = run_cli("repvgg_search.sweep", "+sweep=width_search", *common, "search.n_trials=2",
                    env=environ(WANDB_MODE="offline"), timeout=600)  # fmt: skip
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "Traceback" not in out, out[-3000:]
    assert "dropped a torn last record" in out
    _lines(journal)  # every record whole
    study = optuna.load_study(study_name="width_search", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert tally(study.get_trials())["trained"] == 2


def _dry_run(folder: Path, *extra: str):
    return run_cli("repvgg_search.sweep", "+sweep=ablation", "sweep.axes={variant:[full,no_1x1]}", "sweep.seeds=2",
                   f"sweep.dir={folder}", "sweep.dry_run=true", *extra, timeout=300)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda d: {**d, "trial_ids": d["trial_ids"][:-1]},
            "3 trials there, 4 here, 3 in common; only there: none; only here",
        ),
        (lambda d: {**d, "name": "renamed"}, "name 'renamed' there, 'ablation' here"),
        (lambda d: {**d, "trial_ids": [*d["trial_ids"][:-1], "0123456789abcdef"]}, "only there: 0123456789abcdef"),
    ],
    ids=["a trial id removed", "renamed", "a trial id replaced"],
)
def test_an_edited_sweep_definition_is_refused_naming_the_difference(tmp_path, edit, named):
    folder = tmp_path / "s"
    first = _dry_run(folder)
    assert first.returncode == 0, first.stderr[-2000:]
    path = folder / "sweep.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    edited = path.read_bytes()
    rerun = _dry_run(folder)
    assert rerun.returncode == 2 and "Traceback" not in rerun.stderr, rerun.stderr[-2000:]
    assert "holds another definition" in rerun.stderr and named in rerun.stderr, rerun.stderr[-2000:]
    assert path.read_bytes() == edited  # refused before anything is rewritten


GOLDEN_RECORD = Path(__file__).parent / "golden" / "v1" / "trial_quant" / "result.json"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: {**d, "schema_version": 99}, "schema_version 99"),
        (lambda d: {**d, "metrics": {**d["metrics"], "top1": "abc"}}, "metrics.top1"),
        (lambda d: {k: v for k, v in d.items() if k != "arch"}, "field 'arch' is missing"),
        (lambda d: {k: v for k, v in d.items() if k != "metrics"}, "field 'metrics' is missing"),
        (lambda d: {**d, "config": {k: v for k, v in d["config"].items() if k != "model"}}, "'config.model'"),
        (lambda d: {**d, "config": "x"}, "config"),
    ],
    ids=["unknown schema_version", "non-numeric top1", "no arch", "no metrics", "no config.model", "config a string"],
)
def test_from_trial_refuses_a_malformed_record_naming_the_file_and_the_field(tmp_path, edit, field):
    from repvgg_search import from_trial
    from repvgg_search.errors import BadInputError

    (tmp_path / "result.json").write_text(json.dumps(edit(json.loads(GOLDEN_RECORD.read_text()))))
    with pytest.raises(BadInputError) as err:
        from_trial(tmp_path)
    assert str(tmp_path / "result.json") in str(err.value) and field in str(err.value)

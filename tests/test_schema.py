"""The typed trial record: every writer goes through it, a misspelt key or a value of the wrong type is refused,
one status vocabulary, and records of schema version 1 (tests/golden/v1, written by version 1) still load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from repvgg_search import files
from repvgg_search.analysis.load import load_records
from repvgg_search.analysis.pareto import search_candidate
from repvgg_search.analysis.tables import metric_table
from repvgg_search.schema import (
    COLUMNS,
    OBJECTIVES,
    SCHEMA_VERSION,
    WRITTEN,
    Metrics,
    RecordError,
    SpeedFigure,
    Status,
    TrialRecord,
    check_path,
    lookup,
    parse,
    parse_record,
    read_record,
    write_record,
)

GOLDEN = Path(__file__).with_name("golden") / "v1"
V1_RESULTS = sorted(GOLDEN.rglob("result.json"))


def test_the_golden_folder_holds_version_1_records():
    assert len(V1_RESULTS) == 6
    assert {json.loads(p.read_text())["schema_version"] for p in V1_RESULTS} == {1}


@pytest.mark.parametrize("path", V1_RESULTS, ids=lambda p: str(p.relative_to(GOLDEN).parent))
def test_version_1_records_load_as_version_2(path: Path):
    raw = json.loads(path.read_text())
    record = read_record(path)
    assert record.schema_version == SCHEMA_VERSION and record.trial_id == raw["trial_id"]
    assert record.status is Status(raw["status"])
    if raw.get("search"):  # the only renamed value: a search's "trained" outcome is `completed`
        expected = Status.COMPLETED if raw["search"]["kind"] == "trained" else Status(raw["search"]["kind"])
        assert record.search.kind is expected
    again = parse_record(record.to_json())  # and the upgraded record round-trips through its own JSON
    assert again.to_json() == record.to_json()
    for key, value in raw.items():  # every value version 1 wrote is read back as it was (blocks gain null fields)
        if key not in ("schema_version", "search"):
            assert _subset(value, record.to_json()[key]), key


def _subset(old, new) -> bool:
    if isinstance(old, dict):
        return isinstance(new, dict) and all(_subset(v, new.get(k)) for k, v in old.items())
    return old == new


def test_a_version_1_folder_reads_whole_in_the_analysis():
    loaded = load_records(GOLDEN)
    assert not loaded.skipped and len(loaded.records) == len(V1_RESULTS)
    table = metric_table(loaded.records).set_index("trial_id")
    for path in V1_RESULTS:
        raw = json.loads(path.read_text())
        row = table.loc[raw["trial_id"]]
        assert row["status"] == raw["status"] and row["variant"] == raw["arch"]["variant"]
        top1 = (raw.get("metrics") or {}).get("top1")
        assert (row["top1"] == top1) if top1 is not None else row.isna()["top1"]
    quant = table.loc[json.loads((GOLDEN / "trial_quant" / "result.json").read_text())["trial_id"]]
    assert quant["int8_top1"] > 0 and quant["quant_drop"] == pytest.approx(
        json.loads((GOLDEN / "trial_quant" / "result.json").read_text())["quant"]["drop"]
    )
    searched = [r for r in loaded.records if r.search is not None]
    assert sum(search_candidate(r) for r in searched) == 2  # the two trained candidates; the infeasible one not


def test_version_1_speed_figures_load():
    for path in GOLDEN.rglob("speed/*.json"):
        figure = parse(SpeedFigure, files.read_json(path), str(path))
        assert figure.images_per_s > 0 and figure.protocol


# -- writers go through the schema ---------------------------------------------------------------------------------
def _record() -> TrialRecord:
    return TrialRecord(trial_id="abc", status=Status.COMPLETED, metrics=Metrics(top1=97.0, epochs=6))


def test_a_misspelt_key_is_refused_when_the_record_is_built():
    with pytest.raises(TypeError, match="metrcs"):
        TrialRecord(trial_id="abc", status=Status.COMPLETED, metrcs=Metrics())
    with pytest.raises(TypeError, match="top_1"):
        Metrics(top_1=97.0)
    record = _record()
    with pytest.raises(AttributeError, match="metrcs"):
        record.metrcs = Metrics()  # slots: no attribute can be invented on a record or a block
    with pytest.raises(AttributeError, match="top_1"):
        record.metrics.top_1 = 1.0


def test_a_value_of_the_wrong_type_is_refused_before_anything_is_written(tmp_path: Path):
    record = _record()
    record.metrics.top1 = "high"
    with pytest.raises(TypeError, match=r"metrics\.top1: expected float, got str"):
        write_record(tmp_path / "result.json", record)
    assert not (tmp_path / "result.json").exists()
    with pytest.raises(TypeError, match="takes a TrialRecord"):
        write_record(tmp_path / "result.json", {"trial_id": "abc", "status": "completed"})


def test_reading_names_the_file_and_the_field(tmp_path: Path):
    path = tmp_path / "result.json"
    data = write_record(path, _record()).to_json()
    data["metrics"]["top_1"] = 97.0
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{path}\.metrics\.top_1: not a field of Metrics; fields: deploy_top1"):
        read_record(path)
    data["metrics"].pop("top_1")
    data["schema_version"] = 9
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{path}: schema_version 9 is not one this version reads \(1, 2\)"):
        read_record(path)


def test_optional_blocks_are_left_out_while_null():
    data = _record().to_json()
    assert "quant" not in data and "search" not in data and "origin" not in data
    assert data["metrics"]["deploy_top1"] is None and data["error"] is None


def test_every_declared_path_is_a_field_of_the_record():
    for name, path in COLUMNS.items():
        assert check_path(path) == path, name
    for name, (_, path, _) in OBJECTIVES.items():
        assert check_path(path) == path, name
    with pytest.raises(KeyError, match="metrics.top_1 is not a field of the trial record"):
        check_path(("metrics", "top_1"))
    assert lookup(_record(), COLUMNS["top1"]) == 97.0 and lookup(_record(), COLUMNS["images_per_s"]) is None


# -- one status vocabulary -----------------------------------------------------------------------------------------
def test_statuses_parse_from_every_name_in_use():
    assert Status.parse("Completed") is Status.COMPLETED
    assert Status.parse("finished") is Status.COMPLETED and Status.parse("crashed") is Status.FAILED  # wandb
    assert Status.parse("trained") is Status.COMPLETED  # schema version 1's search outcome
    with pytest.raises(ValueError, match="unknown state 'done'; allowed: completed, failed, interrupted"):
        Status.parse("done")


def test_what_each_status_means():
    assert {s for s in Status if s.terminal} == {
        Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.INFEASIBLE, Status.DIVERGED, Status.PRUNED,
        Status.STOPPED_EARLY,
    }  # fmt: skip
    rung_runs = {Status.STOPPED_EARLY, Status.PROMOTED}  # a multi-fidelity search's finished short runs
    assert {s for s in Status if s.is_result} == {Status.COMPLETED, Status.INFEASIBLE, Status.DIVERGED, *rung_runs}
    assert {s for s in Status if s.trained} == {Status.COMPLETED, Status.PRUNED, Status.DIVERGED, *rung_runs}
    assert Status.STOPPED_EARLY.optuna_state == "PRUNED" and Status.STOPPED_EARLY in WRITTEN
    assert Status.PROMOTED not in WRITTEN  # only a search block's kind: the run's own status is completed
    assert Status.PLANNED not in WRITTEN and Status.STOPPED not in WRITTEN and Status.RUNNING in WRITTEN
    assert json.dumps({"s": Status.RUNNING}) == '{"s": "running"}'


def test_a_record_of_every_written_status_writes_and_reads(tmp_path: Path):
    for status in WRITTEN:
        path = tmp_path / f"{status.value}.json"
        write_record(path, dataclasses.replace(_record(), status=status))
        assert read_record(path).status is status

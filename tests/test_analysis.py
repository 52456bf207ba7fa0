"""Reports from real wandb offline runs and result.json records: loading, fronts, tables, CLI, browser, bad input."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from analysis_fixtures import (
    ABLATION,
    ABLATION_GROUP,
    WANDB_ONLY,
    WIDTH,
    WIDTH_FRONT,
    WIDTH_GROUP,
    WIDTH_HV,
    WIDTH_HV_REF,
    ablation_records,
    build_sweeps,
    trial_id,
    width_search_records,
)
from support import run_cli

from repvgg_search.analysis.ablation import ablation_markdown, ablation_tables
from repvgg_search.analysis.examples import MAC_CONVENTION, example_record
from repvgg_search.analysis.fronts import build_fronts, left_out_table, setup_warnings
from repvgg_search.analysis.load import SourceError, load_records
from repvgg_search.analysis.pareto import hypervolume, hypervolume_progress
from repvgg_search.analysis.report import ReportError, build_report
from repvgg_search.analysis.tables import metric_table
from repvgg_search.analysis.wandb_source import has_credentials

CHROMIUM = Path("/usr/bin/chromium")
UNVERIFIED_TOP1 = ("75.69", "73.97", "73.51", "73.58")  # the shared file's unverified recollections
MIRRORED_KEYS = ("status", "group", "tags", "seed", "arch", "metrics", "complexity", "speed", "conversion", "search")


# ---------------------------------------------------------------- fixtures: real wandb offline runs (~8 s)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_sweeps(tmp_path_factory.mktemp("sweeps"))


@pytest.fixture(scope="module")
def loaded(sweeps: dict[str, Path]):
    return load_records(sweeps["ablation"].parent)


@pytest.fixture(scope="module")
def df(loaded) -> pd.DataFrame:
    return metric_table(loaded.records)


@pytest.fixture(scope="module")
def cli_report(sweeps: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report")
    proc = run_cli("repvgg_search.analysis.report", sweeps["ablation"].parent, "-o", out, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


@pytest.mark.slow
def test_error_edfs_per_variant_and_per_search(cli_report: tuple[Path, str]) -> None:
    out, _ = cli_report
    md = (out / "report.md").read_text()
    assert "## Error EDFs" in md and (out / "edf_ablation.png").exists() and (out / "edf_search.png").exists()
    assert "a0 / full (n=2)" in md  # each curve says how many trials stand behind it
    html = (out / "report.html").read_text()
    assert "Error EDF of variants over their seeds" in html


def test_edf_curves_are_sorted_errors_of_populations_with_two_or_more() -> None:
    from repvgg_search.analysis.edf import edf_curves, edf_table

    df = pd.DataFrame({"status": ["completed"] * 4 + ["failed"], "top1": [90.0, 80.0, 95.0, 70.0, None],
                       "variant": ["a", "a", "a", "b", "a"]})  # fmt: skip
    curves = edf_curves(df, ["variant"])
    assert list(curves) == ["a"] and curves["a"].tolist() == [5.0, 10.0, 20.0]  # b has one trial: no curve
    table = edf_table(curves)
    assert table.loc[0, "n"] == 3 and table.loc[0, "median error"] == 10.0


def test_two_sources_in_one_report(sweeps: dict[str, Path], tmp_path: Path) -> None:
    """A width search compared with another search's population: both in one report, curves per source."""
    other = tmp_path / "other_search"
    shutil.copytree(sweeps["width"], other)
    for result in other.glob("trials/*/result.json"):  # the other population: 3 points worse everywhere
        rec = json.loads(result.read_text())
        rec["trial_id"] = "x" + rec["trial_id"][1:]
        if rec.get("metrics", {}).get("top1") is not None:
            rec["metrics"]["top1"] -= 3.0
        result.write_text(json.dumps(rec))
    md = build_report([sweeps["width"], other], tmp_path / "out").read_text()
    assert f"{sweeps['width'].name} / " in md and "other_search / " in md
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert set(trials["source"]) == {sweeps["width"].name, "other_search"}


def _originals() -> dict[str, dict]:
    return {r["trial_id"]: r for r in ablation_records() + width_search_records()}


# ---------------------------------------------------------------- loading


@pytest.mark.slow
def test_sweep_folder_merges_local_records_and_wandb_runs(loaded) -> None:
    assert len(loaded.records) == len(_originals())
    origins = pd.Series([r.origin["kind"] for r in loaded.records]).value_counts().to_dict()
    assert origins == {"result.json": len(_originals()) - 1, "wandb offline": 1}
    assert any("local result.json" in n and "preferred" in n for n in loaded.notes)
    assert {s["kind"] for s in loaded.sweeps} == {"ablation", "width_search"}
    # The trial whose result.json is missing came back through wandb's reader with the same content.
    tid = trial_id(ABLATION_GROUP, *WANDB_ONLY)
    rec = next(r for r in loaded.records if r.trial_id == tid)
    assert rec.origin["kind"] == "wandb offline"
    for key in MIRRORED_KEYS:
        assert rec.to_json().get(key) == _originals()[tid].get(key), key


@pytest.mark.slow
def test_folder_of_offline_runs_only(sweeps: dict[str, Path], tmp_path: Path) -> None:
    for trial in (sweeps["width"] / "trials").iterdir():
        shutil.copytree(trial / "wandb", tmp_path / trial.name / "wandb")
    res = load_records(tmp_path)
    assert len(res.records) == len(WIDTH) and not res.skipped
    for rec in res.records:
        original = _originals()[rec.trial_id]
        assert rec.origin["kind"] == "wandb offline"
        assert rec.config == original["config"]
        for key in MIRRORED_KEYS:
            assert rec.to_json().get(key) == original.get(key), key
    macs = next(f for f in build_fronts(metric_table(res.records)) if f.axis.column == "deploy_macs")
    assert set(macs.points.loc[macs.points.pareto, "search_number"]) == WIDTH_FRONT


def test_filters(tmp_path: Path) -> None:
    root = _write(tmp_path, ablation_records() + width_search_records())
    assert len(load_records(root, group=WIDTH_GROUP).records) == len(WIDTH)
    assert len(load_records(root, tags=["a0", "full"]).records) == 3  # two seeds and the failed trial
    failed = load_records(root, state="crashed")  # wandb's name for a run that failed
    assert {r.status.value for r in failed.records} == {"failed"} and len(failed.records) == 2
    assert failed.filtered_out == len(_originals()) - 2


# ---------------------------------------------------------------- fronts, hypervolume, tables


@pytest.mark.slow
def test_width_search_fronts_exclude_dominated_points(df: pd.DataFrame) -> None:
    width = df[df["group"] == WIDTH_GROUP]
    fronts = {f.axis.column: f for f in build_fronts(width)}
    for column in ("deploy_macs", "images_per_s", "latency_ms", "deploy_params"):
        pts = fronts[column].points
        assert set(pts.loc[pts.pareto, "search_number"]) == WIDTH_FRONT, column
        assert {2, 7, 8} <= set(pts.loc[~pts.pareto, "search_number"]), "dominated points are kept, unmarked"
    macs = fronts["deploy_macs"].points
    assert hypervolume(macs[["x", "y"]].to_numpy(), WIDTH_HV_REF, (False, True)) == pytest.approx(WIDTH_HV)


@pytest.mark.slow
def test_search_progress(df: pd.DataFrame) -> None:
    width = df[df["group"] == WIDTH_GROUP].assign(gmacs=lambda d: d["deploy_macs"] * 1e-9)
    prog = hypervolume_progress(width, "gmacs", "top1", ref=WIDTH_HV_REF)
    # By hand: #0 5.1; #1 +2.8; #3 front (0.3,93),(0.6,95),(1.0,96.5) = 9.4; #5 adds 0.1.
    assert prog["hypervolume"].tolist() == pytest.approx([5.1, 7.9, 7.9, 9.4, 9.4, 9.5, 9.5, 9.5, 9.5])


@pytest.mark.slow
def test_speeds_from_two_devices_are_never_mixed(df: pd.DataFrame) -> None:
    speed = [f for f in build_fronts(df) if f.axis.per_setup]
    assert len(speed) == 4  # throughput and latency, for each of the two setups
    for f in speed:
        assert f.points["speed_setup"].nunique() == 1
        assert f.points["device"].iloc[0] in f.setup
    warnings = setup_warnings(df)
    assert any("2 measurement setups" in w for w in warnings)
    assert any("not re-parameterizable" in w and "relu_in_branches" in w for w in warnings)


@pytest.mark.slow
def test_left_out_trials_are_counted(df: pd.DataFrame) -> None:
    left = left_out_table(df)
    for front in ("top1 vs throughput", "top1 vs deploy MACs"):
        rows = left[left["front"] == front].set_index("reason")["trials"].to_dict()
        assert rows == {"status failed": 2, "status infeasible": 1}


@pytest.mark.slow
def test_ablation_tables_match_records(df: pd.DataFrame) -> None:
    tables = ablation_tables(df)
    t6, t7 = tables["table6"], tables["table7"]
    assert set(t6["preset"]) == {"a0"} and set(t7["preset"]) == {"a0"}, "width-search trials are not ablations"
    assert t6["variant"].tolist() == ["full", "no_identity", "no_1x1", "no_branches"]
    for row in pd.concat([t6, t7]).to_dict("records"):
        top1s = ABLATION[row["variant"]][0]
        assert row["n"] == 2 and row["top1 mean"] == pytest.approx(statistics.mean(top1s))
        assert row["top1 std"] == pytest.approx(statistics.stdev(top1s))
    by = t7.set_index("variant")
    assert by.loc["full", "left out"] == 1  # the failed seed
    assert by.loc["relu_in_branches", "form"] == "train"
    assert (by.loc["full", "reference top1"], by.loc["full", "reference source"]) == (75.14, "paper-text")
    assert by.loc["identity_no_bn", "reference source"] == "third-party"
    assert by.loc["residual_reorg", "reference source"] == "derived"
    for unverified in ("relu_in_branches", "diracnet", "trivial", "acb"):
        assert pd.isna(by.loc[unverified, "reference top1"]), unverified


@pytest.mark.slow
def test_metric_table_flags_train_form_and_keeps_raw_units(df: pd.DataFrame) -> None:
    relu = df[(df["variant"] == "relu_in_branches") & (df["status"] == "completed")]
    assert set(relu["form"]) == {"train"} and relu["deploy_top1"].isna().all()
    full = df[(df["variant"] == "full") & (df["status"] == "completed")].iloc[0]
    assert full["deploy_macs"] == 1_361_513_728 and full["macs_input"] == "3x224x224"


# ---------------------------------------------------------------- the CLI end to end, and the HTML in a browser


@pytest.mark.slow
def test_cli_end_to_end(cli_report: tuple[Path, str]) -> None:
    out, stdout = cli_report
    assert "report.md" in stdout and "status failed" in stdout and "status infeasible" in stdout
    for name in ("report.md", "report.html", "trials.csv", "figure1_paper.png", "search_progress_1.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(list(out.glob("front_*.png"))) == 6  # 2 speed axes x 2 setups + MACs + params
    md = (out / "report.md").read_text()
    for heading in ("## Left out", "## Pareto fronts", "## Ablations", "## Width search", "Figure 1"):
        assert heading in md
    assert f"GMACs; {MAC_CONVENTION}" in md and "reference point" in md
    assert "2 measurement setups" in md
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert not any(n in text for n in UNVERIFIED_TOP1), "unverified numbers must never be shown"
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", html), "the page must not load anything"


def _chromium_dom(page: Path, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    # Any attempt to reach the network fails fast: the page must render from the file alone.
    flags += [f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr"]
    flags += ["--v=0", "--virtual-time-budget=20000", "--dump-dom", page.as_uri()]
    return subprocess.run([str(CHROMIUM), *flags], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt chromium)")
def test_html_report_renders_in_headless_chromium(cli_report: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = cli_report
    proc = _chromium_dom(out / "report.html", tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"the page logged to the console: {console}"
    dom = proc.stdout
    plot_ids = re.findall(r'id="(plot-\d+)"', (out / "report.html").read_text())
    assert len(plot_ids) >= 8
    for pid in plot_ids:
        div = re.search(rf'<div id="{pid}"[^>]*class="([^"]*)"', dom) or re.search(
            rf'<div class="([^"]*)"[^>]*id="{pid}"', dom
        )
        assert div and "js-plotly-plot" in div.group(1), f"{pid} was not rendered by plotly"
    assert dom.count('class="main-svg"') >= 2 * len(plot_ids)
    assert dom.count('class="point"') > 50, "scatter points were drawn"


# ---------------------------------------------------------------- bad input (no wandb runs needed)


def _write(root: Path, records: list[dict]) -> Path:
    for rec in records:
        d = root / "trials" / str(rec.get("trial_id", "x"))
        d.mkdir(parents=True, exist_ok=True)
        (d / "result.json").write_text(json.dumps(rec))
    return root


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no result.json files or wandb offline runs"):
        load_records(tmp_path)


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source not found.*wandb:ENTITY/PROJECT"):
        load_records(tmp_path / "nope")


def test_unknown_state(tmp_path: Path) -> None:
    _write(tmp_path, [example_record("t1")])
    with pytest.raises(SourceError, match="unknown state 'done'; allowed: completed"):
        load_records(tmp_path, state="done")


@pytest.mark.parametrize("state", ["cancelled", "pruned", "infeasible"])
def test_every_record_status_is_a_filter(tmp_path: Path, state: str) -> None:
    _write(tmp_path, [example_record("t1"), example_record("t2", status=state, top1=None)])
    assert [r.trial_id for r in load_records(tmp_path, state=state).records] == ["t2"]


def test_wandb_path_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wandb

    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("wandb.Api must not be contacted without credentials")

    monkeypatch.setattr(wandb, "Api", must_not_be_called)
    with pytest.raises(SourceError, match="needs wandb credentials.*nothing was contacted"):
        load_records("wandb:someone/repvgg")
    with pytest.raises(SourceError, match="wandb:ENTITY/PROJECT"):
        load_records("wandb:only-a-project")


def test_credentials_found_in_netrc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not has_credentials()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert has_credentials()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a key for another server does not count
    assert not has_credentials()


def test_mixed_schema_versions_are_left_out_and_reported(tmp_path: Path) -> None:
    v3 = example_record("v3trial") | {"schema_version": 3}
    unversioned = {k: v for k, v in example_record("noversion").items() if k != "schema_version"}
    misfit = example_record("misfit")
    misfit["metrics"]["top1"] = "high"  # a field of the wrong type: left out, the field named
    _write(tmp_path / "src", [example_record("ok1"), example_record("ok2", top1=90.0), v3, unversioned, misfit])
    (tmp_path / "src" / "trials" / "broken").mkdir()
    (tmp_path / "src" / "trials" / "broken" / "result.json").write_text("{not json")
    (tmp_path / "src" / "sweep.json").write_text(json.dumps({"name": "old", "kind": "grid", "schema_version": 3}))
    res = load_records(tmp_path / "src")
    assert any("sweep 'old' has sweep.json schema_version 3" in n for n in res.notes)
    assert sorted(r.trial_id for r in res.records) == ["ok1", "ok2"]
    why = sorted(w for _, w in res.skipped)
    assert len(why) == 4
    assert any("schema_version 3: this analysis reads 1, 2" in w for w in why)
    assert any("no schema_version" in w for w in why) and any("unreadable JSON" in w for w in why)
    assert any("metrics.top1: expected float, got str 'high'" in w for w in why)
    md = build_report(tmp_path / "src", tmp_path / "out").read_text()
    assert "4 record(s) could not be used at all" in md and "schema_version 3" in md


def test_ablation_markdown_for_the_sweep_summary() -> None:
    text = ablation_markdown(metric_table(ablation_records()))
    assert (
        text.startswith("Table 6")
        and "Table 7" in text
        and "| full | yes | yes | 2 | 97.40 | 0.28 | 94.86 .. 99.94 |" in text
    )
    assert "| no_1x1 | yes | no | 2 | 96.90 |" in text and "| indistinguishable | 6 |" in text  # seeds for ±0.5
    assert ablation_markdown(metric_table(width_search_records())) == ""


def test_report_without_speeds_or_finished_candidates(tmp_path: Path) -> None:
    search = {"study": "s", "number": 0, "values": None, "feasible": False, "state": "PRUNED"}
    records = [
        example_record("nospeed", images_per_s=None),
        example_record("infeasible", status="infeasible", search=search),
    ]
    md = build_report(_write(tmp_path, records), tmp_path / "out").read_text()
    assert "no speed measurements in this source" in md and "no progress curve" in md
    assert "| top1 vs throughput | no images_per_s | 1 |" in md


def test_only_unusable_records(tmp_path: Path) -> None:
    _write(tmp_path, [example_record("a") | {"schema_version": 3}])
    with pytest.raises(ReportError, match="no usable trial records.*schema_version 3"):
        build_report(tmp_path, tmp_path / "out")


def test_duplicate_trial_prefers_completed_record(tmp_path: Path) -> None:
    _write(tmp_path / "a", [example_record("same", status="failed", top1=None)])
    _write(tmp_path / "b", [example_record("same")])
    res = load_records(tmp_path)
    assert len(res.records) == 1 and res.records[0].status.value == "completed"
    assert any("duplicate" in n for n in res.notes)


def test_cli_reports_bad_source_without_traceback(tmp_path: Path) -> None:
    proc = run_cli("repvgg_search.analysis.report", tmp_path / "missing", "-o", tmp_path / "out", timeout=60)
    assert proc.returncode == 2
    assert "error: source not found" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the online path, against a recorded response
# wandb.Api is the ONLY thing mocked in these tests, and only because there is no W&B server to reach here:
# the fake serves a GraphQL response recorded in the shape wandb 0.31's public API receives (RunFragment
# fields, config and summaryMetrics as JSON strings, relay pagination), and wandb's own Runs/Run classes
# parse it, so the filters we send and the parsing we rely on are wandb's real code paths.


def _node(rec: dict, state: str) -> dict:
    config = {k: {"value": v, "desc": None} for k, v in rec["config"].items()}
    config["_wandb"] = {"value": {"cli_version": "0.31.0"}, "desc": None}
    summary = {k: v for k, v in rec.items() if k != "config"} | {"_step": 5, "_runtime": 40.1}
    return {
        "id": f"UnVuOnYx{rec['trial_id']}",
        "name": rec["trial_id"],
        "displayName": rec["trial_id"],
        "sweepName": None,
        "state": state,
        "config": json.dumps(config),
        "group": rec["group"],
        "jobType": None,
        "commit": None,
        "readOnly": False,
        "createdAt": "2026-11-27T10:00:00",
        "heartbeatAt": "2026-11-27T10:01:00",
        "description": None,
        "notes": None,
        "systemMetrics": "{}",
        "summaryMetrics": json.dumps(summary),
        "historyLineCount": 6,
        "user": {"name": "Researcher", "username": "someone"},
        "historyKeys": {},
        "tags": rec["tags"],
        "projectId": 4711,
    }


def _recorded_pages() -> dict[str | None, dict]:
    recs = ablation_records()[:3]
    nodes = [_node(recs[0], "finished"), _node(recs[1], "finished"), _node(recs[2], "running")]
    nodes[2]["summaryMetrics"] = json.dumps({"trial_id": recs[2]["trial_id"], "_step": 1})  # no schema yet

    def page(edges: list[dict], cursor: str, more: bool) -> dict:
        runs = {"edges": [{"node": n, "cursor": cursor} for n in edges]}
        runs["pageInfo"] = {"endCursor": cursor, "hasNextPage": more}
        return {"project": {"internalId": "UHJvamVjdDox", "runCount": 3, "readOnly": False, "runs": runs}}

    return {None: page(nodes[:2], "c1", True), "c1": page(nodes[2:], "c2", False)}


class RecordedService:
    """Answers wandb's GraphQL queries from the recorded pages and keeps the variables it was sent."""

    def __init__(self) -> None:
        self.pages, self.sent = _recorded_pages(), []

    def execute_graphql(self, query: str, variables: dict | None = None, **_: object) -> dict:
        self.sent.append(dict(variables or {}))
        return self.pages[(variables or {}).get("cursor")]


def test_online_path_against_recorded_response(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wandb
    from wandb.apis.public.runs import Runs

    service, calls = RecordedService(), []

    class RecordedApi:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def runs(self, path: str, filters: dict | None = None, per_page: int = 50, lazy: bool = True, **kw):
            calls.append({"path": path, "filters": filters, "lazy": lazy})
            entity, project = path.split("/")
            return Runs(service, entity, project, filters=filters, per_page=per_page, lazy=lazy)

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key must exist; nothing is sent anywhere
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setattr(wandb, "Api", RecordedApi)
    res = load_records("wandb:someone/repvgg", group=ABLATION_GROUP, tags=["a0"], state="completed")

    expected = {
        "$and": [
            {"group": ABLATION_GROUP},
            {"tags": {"$in": ["a0"]}},
            {"summary_metrics.status": "completed"},
        ]
    }
    assert calls == [{"path": "someone/repvgg", "filters": expected, "lazy": False}]
    assert all(json.loads(v["filters"]) == expected for v in service.sent) and len(service.sent) == 2
    originals = {r["trial_id"]: r for r in ablation_records()[:2]}
    assert sorted(r.trial_id for r in res.records) == sorted(originals)
    for rec in res.records:
        assert rec.config == originals[rec.trial_id]["config"], "wandb's internal _wandb key is dropped"
        assert rec.to_json()["metrics"] == originals[rec.trial_id]["metrics"]
        assert rec.origin["where"].startswith("wandb:someone/repvgg/")
    assert [w for _, w in res.skipped] == [
        "no schema_version: not a repvgg-search trial record (wandb run state: running)"
    ]


def test_speeds_from_two_runtimes_are_never_mixed() -> None:
    """One device and protocol, two runtimes (eager, onnxruntime): two setups, so separate fronts (issue 14)."""
    records = [
        example_record(f"t{i}", images_per_s=100.0 + i, top1=90.0 + i, speed={"protocol": "cpu", "runtime": runtime})
        for i, runtime in enumerate(["eager", "onnxruntime", "eager", "onnxruntime"])
    ]
    fronts = [f for f in build_fronts(metric_table(records)) if f.axis.column == "images_per_s"]
    assert len(fronts) == 2
    by_runtime = {("onnxruntime" in f.setup): set(f.points["trial_id"]) for f in fronts}
    assert by_runtime == {False: {"t0", "t2"}, True: {"t1", "t3"}}


def test_report_of_a_one_seed_ablation_says_it_orders_nothing(tmp_path: Path) -> None:
    """As summary.md does: with one seed per variant the report's ablation caption says no verdict is possible."""
    records = [example_record(f"v{i}", variant=v, top1=97.0 + i, group="ablation") for i, v in
               enumerate(["full", "no_1x1", "no_identity"])]  # fmt: skip
    md = build_report(_write(tmp_path, records), tmp_path / "out").read_text()
    assert "With one seed per variant: one seed: no verdict possible; the table orders nothing." in md

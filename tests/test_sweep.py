"""The sweep driver on the local launcher: plan, run, resume, collect, failures, detach, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import QUICK_SPEED, TINY_TRIAL, environ, require, run_cli, slurm_up, wait_for

from repvgg_search import files
from repvgg_search.config import CONF_DIR
from repvgg_search.sweep.folder import SweepFolder

SWEEPS = sorted((CONF_DIR / "sweep").glob("*.yaml"))
# Small but real trials, one seed a design, speed timed at the trial's own 32 px in one round.
TINY_SWEEP = [*TINY_TRIAL, *QUICK_SPEED, "sweep.seeds=1"]


def sweep(*overrides: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """The sweep command line, run to its end (and, with `check`, asserted to succeed)."""
    proc = run_cli("repvgg_search.sweep", *overrides, env=environ(WANDB_MODE="offline"), timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_every_sweep_file_starts_with_its_command():
    assert {p.stem for p in SWEEPS} >= {"ablation", "ablation_paper"}
    for path in SWEEPS:
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
        assert header[0] == "# @package _global_", path
        assert any(f"python -m repvgg_search.sweep +sweep={path.stem}" in line for line in header), path


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_file_plans(tmp_path, path):
    """Each sweep composes and validates as a whole (dry run: configs written, nothing submitted)."""
    extra = []
    if path.stem == "ablation_paper":  # ImageNet layout with two classes; launcher=slurm needs a reachable cluster
        require(slurm_up(), "ablation_paper uses launcher=slurm: validating it needs a reachable SLURM cluster")
        root = tmp_path / "imagenet"
        for split in ("train", "val"):
            for cls in ("n01", "n02"):
                (root / split / cls).mkdir(parents=True)
                (root / split / cls / "x.JPEG").write_bytes(b"")
        extra = [f"data.root={root}"]
    out = sweep(f"+sweep={path.stem}", f"sweep.dir={tmp_path / 's'}", "sweep.dry_run=true", *extra)
    definition = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert len(definition["trial_ids"]) >= 1 and "planned" in out.stdout
    for tid in definition["trial_ids"]:
        assert (tmp_path / "s" / "trials" / tid / "config.yaml").exists()
    assert not (tmp_path / "s" / "jobs.jsonl").exists()


def test_ablation_plan_covers_tables_6_and_7_with_three_paired_seeds(tmp_path):
    sweep("+sweep=ablation", f"sweep.dir={tmp_path}", "sweep.dry_run=true")
    planned = []
    for tid in json.loads((tmp_path / "sweep.json").read_text())["trial_ids"]:
        config = yaml.safe_load((tmp_path / "trials" / tid / "config.yaml").read_text())
        planned.append((config["variant"]["name"], config["seed"]))
    variants = ["full", "no_identity", "no_1x1", "no_branches", "identity_no_bn", "post_bn", "relu_in_branches",
                "diracnet", "trivial", "acb", "residual_reorg"]  # fmt: skip
    assert sorted(planned) == sorted((v, s) for v in variants for s in (0, 1, 2))


def test_seeds_given_twice_are_refused(tmp_path):
    proc = sweep("+sweep=ablation", "++sweep.axes.seed=[0,1]", f"sweep.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "sweep.seeds=3 and sweep.axes.seed=[0, 1] both give the seeds" in proc.stderr


def test_axes_over_a_variant_option_and_its_fields(tmp_path):
    """A block design's fields are axes like any other; a group axis takes option names (applied first)."""
    out = sweep("+sweep=ablation", "++sweep.axes={variant.post_bn:[true,false],variant:[qarepvgg]}",
                f"sweep.dir={tmp_path}", "sweep.dry_run=true", "sweep.seeds=1")  # fmt: skip
    configs = [yaml.safe_load((tmp_path / "trials" / t / "config.yaml").read_text())["variant"]
               for t in json.loads((tmp_path / "sweep.json").read_text())["trial_ids"]]  # fmt: skip
    assert sorted((c["name"], c["post_bn"], tuple(c["bn"])) for c in configs) == [
        ("qarepvgg", False, ("3x3",)),
        ("qarepvgg", True, ("3x3",)),
    ]
    assert "variant=qarepvgg, variant.post_bn=False" in out.stdout or "variant.post_bn=False" in out.stdout


def test_dry_run_of_1000_trials(tmp_path):
    """1,001 trials planned and written out (benchmarks/sweep_overhead.py measures how long it takes)."""
    sweep("+sweep=ablation", "sweep.seeds=91", f"sweep.dir={tmp_path}", "sweep.dry_run=true", timeout=300)
    assert len(json.loads((tmp_path / "sweep.json").read_text())["trial_ids"]) == 1001
    assert len(list((tmp_path / "trials").glob("*/config.yaml"))) == 1001


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep") / "s"
    # One trial diverges (a huge learning rate): a result (status diverged), not a crash; the other completes.
    sweep("+sweep=ablation", "++sweep.axes={variant:[full],train.base_lr:[0.4,1e9]}", f"sweep.dir={folder}",
          "sweep.retries=0", *TINY_SWEEP)  # fmt: skip
    return folder


@pytest.mark.slow
def test_sweep_runs_collects_and_records_a_diverged_trial(small_sweep: Path):
    df = pd.read_csv(small_sweep / "results.csv")
    assert sorted(df["status"]) == ["completed", "diverged"]
    for col in ("trial_id", "variant", "seed", "status", "top1", "deploy_top1", "deploy_macs", "deploy_params",
                "train_macs", "train_params", "images_per_s", "device"):  # fmt: skip
        assert col in df.columns
    ok = df[df.status == "completed"].iloc[0]
    assert ok.top1 > 0 and ok.deploy_macs > 0 and ok.device == "cpu"
    diverged = df[df.status == "diverged"].iloc[0]
    assert "training diverged in epoch 1" in diverged.error
    summary = (small_sweep / "summary.md").read_text()
    assert "Table 6" in summary and "diverged" in summary
    jobs = files.read_jsonl(small_sweep / "jobs.jsonl")
    assert len(jobs) == 2


@pytest.mark.slow
def test_rerun_skips_finished_trials_and_resubmits_failed(small_sweep: Path):
    """A diverged trial is a result (never rerun); a failed one (here: its job died) runs again, within retries."""
    (failed,) = [
        t for t in SweepFolder(small_sweep).planned() if SweepFolder(small_sweep).status(t.trial_id) == "diverged"
    ]
    SweepFolder(small_sweep).trial_dir(failed.trial_id).joinpath("result.json").write_text(
        json.dumps({"schema_version": 1, "trial_id": failed.trial_id, "status": "failed", "error": "job died"})
    )
    before = len(files.read_jsonl(small_sweep / "jobs.jsonl"))
    sweep("+sweep=ablation", "++sweep.axes={variant:[full],train.base_lr:[0.4,1e9]}", f"sweep.dir={small_sweep}",
          "sweep.retries=1", *TINY_SWEEP)  # fmt: skip
    jobs = files.read_jsonl(small_sweep / "jobs.jsonl")[before:]
    assert len(jobs) == 1  # only the failed trial ran again, once
    again = sweep("+sweep=ablation", "++sweep.axes={variant:[full],train.base_lr:[0.4,1e9]}",
                  f"sweep.dir={small_sweep}", "sweep.retries=1", *TINY_SWEEP)  # fmt: skip
    assert len(files.read_jsonl(small_sweep / "jobs.jsonl")) == before + 1  # attempts used up: nothing submitted
    assert "resuming" in again.stdout


@pytest.mark.slow
def test_status_and_collect_actions(small_sweep: Path):
    out = sweep(f"sweep.dir={small_sweep}", "sweep.action=status")  # the folder alone: no +sweep=NAME needed
    assert "completed 1" in out.stdout and "diverged 1" in out.stdout
    (done,) = [
        t for t in SweepFolder(small_sweep).planned() if SweepFolder(small_sweep).status(t.trial_id) == "completed"
    ]
    top1 = json.loads((SweepFolder(small_sweep).trial_dir(done.trial_id) / "result.json").read_text())["metrics"][
        "top1"
    ]
    assert (
        f"top1 {top1:6.2f}" in out.stdout
        and f"best single trial so far: {done.trial_id} top1 {top1:.2f}%" in out.stdout
    )
    (small_sweep / "results.csv").unlink()
    sweep("+sweep=ablation", f"sweep.dir={small_sweep}", "sweep.action=collect")
    assert (small_sweep / "results.csv").exists()


@pytest.mark.slow
def test_other_definition_is_refused_and_nothing_is_lost(small_sweep: Path):
    before = {p: p.read_bytes() for p in small_sweep.rglob("*.json")}
    proc = sweep("+sweep=ablation", f"sweep.dir={small_sweep}", *TINY_SWEEP, check=False)
    assert proc.returncode == 2 and "holds another definition" in proc.stderr and "sweep.dir=" in proc.stderr
    assert {p: p.read_bytes() for p in small_sweep.rglob("*.json")} == before


@pytest.mark.slow
def test_detached_local_sweep_finishes_in_the_background(tmp_path):
    folder = tmp_path / "d"
    out = sweep("+sweep=ablation", "sweep.axes={variant:[no_branches]}", f"sweep.dir={folder}",
                "sweep.detach=true", *TINY_SWEEP)  # fmt: skip
    assert "detached" in out.stdout
    wait_for(lambda: (folder / "results.csv").exists(), 300, "the detached sweep's results.csv", interval=1)
    assert pd.read_csv(folder / "results.csv")["status"].tolist() == ["completed"]
    status = sweep("+sweep=ablation", f"sweep.dir={folder}", "sweep.action=status")
    assert "completed 1" in status.stdout


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["sweep.dry_run=true"], "no sweep selected: add +sweep=NAME; available: ablation"),
        (["+sweep=ablation", "sweep.axes={variant:[full,bogus]}"], "unknown variant 'bogus'"),
        (["+sweep=ablation", "++sweep.axes={nonsense.field:[1]}"], "'nonsense.field' is not a trial config field"),
        (["+sweep=ablation", "sweep.action=explode"], "sweep.action='explode' is unknown"),
        (["+sweep=ablation", "train.epochs=0"], "train.epochs=0 must be an integer >= 1"),
    ],
)
def test_bad_input_is_refused_before_submission(tmp_path, overrides, match):
    proc = sweep(*overrides, f"sweep.dir={tmp_path / 's'}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert match in proc.stderr
    assert not (tmp_path / "s" / "jobs.jsonl").exists()


def test_unknown_sweep_name_lists_the_valid_ones(tmp_path):
    proc = sweep("+sweep=nope", f"sweep.dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "ablation" in proc.stderr and "nope" in proc.stderr


def test_launcher_field_of_another_launcher_is_refused(tmp_path):
    proc = sweep("+sweep=ablation", "launcher=local", "launcher.partition=gpu", f"sweep.dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "partition" in proc.stderr

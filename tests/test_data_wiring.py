"""The data path inside trials (issue 22): the data wait in metrics.jsonl and result.json, the reading options
validated by key before any work, and left out of the trial id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import QUICK_TRIAL, REPO, run_cli

from repvgg_search import files
from repvgg_search.data import WAIT_WARN_FRACTION, DataError
from repvgg_search.schema import DATA_WAIT_CONVENTION, DataWaitBlock, read_record
from repvgg_search.trial import settings_from_config


def _trial(tmp_path_factory, compile: bool):
    out = tmp_path_factory.mktemp("wired") / "run"
    args = [*QUICK_TRIAL, "model.depths=[1,1,1,1,1]", f"train.compile={str(compile).lower()}", "train.epochs=2",
            f"output_dir={out}"]  # fmt: skip
    return out, run_cli("repvgg_search.train", *args, timeout=900)


# Seen on 2026-12-08 on an AVX2-only AMD EPYC (the machines before had AVX-512, where the compiled trial passes):
# torch 2.14.1's inductor kernel for the compiled backward dies of "double free or corruption" (SIGABRT, or
# SIGSEGV), and with ATEN_CPU_CAPABILITY=default the same kernel does not compile. A torch bug, not ours (the
# README says so under train.compile); the compiled test still runs there, so a fixed torch shows.
def _inductor_crashed(proc) -> bool:
    return proc.returncode < 0 and torch.backends.cpu.get_cpu_capability() == "AVX2"


@pytest.fixture(scope="module")
def compiled_trial(tmp_path_factory):
    """A compiled trial (train.compile=true: torch.compile's inductor on the CPU, one block per stage to keep the
    compilation near 30 s), two epochs: its record carries the data wait and the compile time. Returns the output
    folder and the process."""
    return _trial(tmp_path_factory, compile=True)


@pytest.fixture(scope="module")
def quick_trial(compiled_trial, tmp_path_factory) -> Path:
    """The compiled trial's folder, or, where inductor crashes (above), an eager trial's: the data wait is recorded
    either way."""
    out, proc = compiled_trial
    if _inductor_crashed(proc):
        out, proc = _trial(tmp_path_factory, compile=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_compiled_trial_trains_converts_and_records_its_compile_time(compiled_trial):
    out, proc = compiled_trial
    if _inductor_crashed(proc):
        pytest.xfail(f"torch {torch.__version__} inductor crashes in the compiled backward on an AVX2 CPU "
                     f"(signal {-proc.returncode})")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(out / "result.json")
    assert record.status == "completed" and record.config["train"]["compile"] is True
    assert 0 < record.timings.compile_s < record.timings.train_s  # the first compiled step, inside training
    rows = files.read_jsonl(out / "metrics.jsonl")
    assert all(r["train_loss"] == r["train_loss"] for r in rows) and rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert record.conversion.converted and record.conversion.gate.passed  # the eager model is what converts
    assert record.metrics.deploy_top1 == pytest.approx(record.metrics.top1, abs=0.3)
    assert record.metrics.top1 > 50  # 10 digit classes: chance is 10%


def test_each_epoch_and_the_record_say_how_long_training_waited_for_data(quick_trial: Path):
    rows = files.read_jsonl(quick_trial / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:  # unprefixed, beside the train_ and val_ figures
        assert 0 < r["data_wait_s"] < r["train_seconds"]
        assert r["data_wait_frac"] == pytest.approx(r["data_wait_s"] / r["train_seconds"])
        assert "train_data_wait_s" not in r and "train_first_step_s" not in r
    record = read_record(quick_trial / "result.json")
    wait = record.data_wait
    assert isinstance(wait, DataWaitBlock) and wait.epochs == 2 and wait.warn_frac == WAIT_WARN_FRACTION
    assert wait.data_wait_s == pytest.approx(sum(r["data_wait_s"] for r in rows))
    assert wait.data_wait_frac == pytest.approx(wait.data_wait_s / sum(r["train_seconds"] for r in rows))
    assert wait.data_wait_max_epoch_frac == pytest.approx(max(r["data_wait_frac"] for r in rows))
    assert wait.data_bound_epochs == sum(r["data_wait_frac"] > WAIT_WARN_FRACTION for r in rows)
    assert wait.convention == DATA_WAIT_CONVENTION
    raw = json.loads((quick_trial / "result.json").read_text())
    assert set(raw["data_wait"]) == {f for f in DataWaitBlock.__slots__}


def test_a_bad_decoder_is_refused_naming_the_key_before_any_work(tmp_path: Path):
    with pytest.raises(DataError, match=r"data\.decoder='nvjpeg' is unknown; allowed: pil, torchvision, dali"):
        settings_from_config({"data": {"name": "imagenet", "root": str(tmp_path), "decoder": "nvjpeg"}})
    with pytest.raises(DataError, match=r"data\.decoder=dali decodes on a CUDA GPU, not on device cpu"):
        settings_from_config({"device": "cpu", "data": {"name": "imagenet", "root": str(tmp_path), "decoder": "dali"}})


def image_tree(root: Path) -> Path:
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / "x.jpg").write_bytes(b"")  # the id needs the class count, not the images
    return root


def test_how_images_are_read_and_compiling_keep_the_trial_id(tmp_path: Path):
    data = {"name": "imagenet", "root": str(image_tree(tmp_path)), "image_size": 64, "batch_size": 1}
    base = settings_from_config({"data": {**data, "decoder": "pil"}}).trial_id
    for changes in (
        {"data": {**data, "decoder": "torchvision"}},
        {"data": {**data, "decoder": "pil", "jpeg_draft": True, "shuffle_buffer": 7, "num_workers": 4}},
        {"data": data, "train": {"compile": True}},
    ):
        assert settings_from_config(changes).trial_id == base, changes
    assert settings_from_config({"data": {**data, "image_size": 96}}).trial_id != base  # what is read still counts


def test_train_compile_wraps_the_training_model_only_and_shares_its_parameters():
    """train.compile=true: the steps call torch.compile's wrapper (compiling lazily, at the first step); the model
    itself stays eager (the compiled trial above converts it)."""
    import torch

    from repvgg_search.training import TrainConfig, compile_model

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert compile_model(model, TrainConfig()) is model
    compiled = compile_model(model, TrainConfig(compile=True))
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule) and compiled._orig_mod is model
    assert [p.data_ptr() for p in compiled.parameters()] == [p.data_ptr() for p in model.parameters()]
    compiled.eval()  # train()/eval() on the wrapper reach the model (the loop sets them on what it calls)
    assert not model.training


@pytest.mark.slow
def test_the_gpu_data_path_check_runs_on_the_cpu_at_a_tiny_scale():
    """scripts/gpu_check.sh's data-path step, shrunk to a quarter-width A0 on 64 photos at 64 px: it runs through
    the harness and the bare loop and prints their ratio and the data wait (the figures are the GPU's to give)."""
    args = "--device cpu --model a0 --width 0.25 --images 64 --image-size 64 --batch-size 16 --workers 1"
    args += " --epochs 1 --bare-steps 2 --modes eager"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_data_path.py"), *args.split()],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("eager: harness ") and "harness/bare " in last and "data wait " in last, proc.stdout

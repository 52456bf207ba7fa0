"""One trial end to end, through the real command line: records, wandb, resume after a real signal, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import QUICK_TRIAL, REPO, TINY_TRIAL, cli_command, environ, held_epochs_env, hold_epochs, run_cli, wait_for

from repvgg_search import files, tracking
from repvgg_search.data import digits_split
from repvgg_search.trial import settings_from_config

# A small but real RepVGG on digits: the tiny trial for two epochs on one thread, mirrored to a wandb offline run.
TRIAL = [*TINY_TRIAL, "train.epochs=2", "threads=1", "tracking.mode=offline"]


def train_args(out: Path, *overrides: str) -> list[str]:
    return [*TRIAL, *overrides, f"output_dir={out}"]


def run_train(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli("repvgg_search.train", *train_args(out, *overrides), env=environ(WANDB_MODE="offline"), timeout=300)


def wandb_inspect(run_dir: Path) -> dict:
    exe = Path(sys.executable).with_name("wandb")
    out = subprocess.run([exe, "leet", "inspect", "--summary", "--json", str(run_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trial") / "run"
    proc = run_train(out, "tracking.group=pytest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_trial_records(finished: Path):
    result = json.loads((finished / "result.json").read_text())
    assert result["status"] == "completed" and len(result["trial_id"]) == 12
    for key in ("top1", "deploy_top1"):
        assert 0 <= result["metrics"][key] <= 100
    assert abs(result["metrics"]["top1"] - result["metrics"]["deploy_top1"]) <= 100 / result["metrics"]["val_images"]
    for form in ("train", "deploy"):
        assert result["complexity"][form]["macs"] > 0 and result["complexity"][form]["params"] > 0
        assert result["complexity"]["trial_size"][form]["macs"] < result["complexity"][form]["macs"]
    assert result["complexity"]["deploy"]["params"] < result["complexity"]["train"]["params"]
    speed = result["speed"]
    assert speed["form"] == "deploy" and speed["images_per_s"] > 0 and speed["latency_ms"] > 0
    # speed=auto on the CPU is the `cpu` protocol; `speed.iters=2` changes it, and its name says so.
    assert (speed["protocol"], speed["device"], speed["batch_size"], speed["input_size"], speed["dtype"]) == (
        "cpu+iters=2", "cpu", 16, [3, 224, 224], "float32",
    )  # fmt: skip
    assert len(speed["rounds_images_per_s"]) == 5 and speed["spread"] >= 1 and speed["source"] == "measured"
    assert {"torch", "host", "threads", "channels_last", "device_key", "layout_probe"} <= set(speed)
    conversion = result["conversion"]
    assert conversion["converted"] and conversion["gate"]["passed"] and conversion["gate"]["max_rel_error"] < 1e-4
    assert (
        conversion["agreement"]["images"] == result["metrics"]["val_images"]
        and conversion["agreement"]["precision"] == "none"
    )
    assert (finished / "speed" / f"{speed['key']}.json").exists()
    env = result["environment"]  # what changes the numbers besides the config
    assert env["device"] == "cpu" and env["threads"] == 1 and env["deterministic"] is False and env["torch"]
    assert result["config"]["model"]["a"] == 0.25 and result["arch"]["widths"] == [16, 16, 32, 64, 128]
    assert {"setup_s", "train_s", "total_s"} <= set(result["timings"]) and result["versions"]["torch"]
    assert "compile_s" not in result["timings"]  # train.compile is off by default: nothing compiled, nothing recorded
    assert result["git_commit"]
    lines = files.read_jsonl(finished / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [1, 2] and all(r["trial_id"] == result["trial_id"] for r in lines)
    assert (finished / "config.yaml").exists() and (finished / "deploy.pt").exists()
    # keep_checkpoint=deploy (the default): the training checkpoints went once the trial was recorded completed
    assert result["weights"] == {"deploy": "deploy.pt", "checkpoint": None} and not (finished / "checkpoints").exists()


@pytest.mark.slow
def test_same_config_seed_and_threads_give_bit_identical_results(finished: Path, tmp_path):
    """Reproducibility on the CPU: the same command in another folder trains to the very same numbers."""
    again = tmp_path / "again"
    proc = run_train(again, "tracking.group=pytest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (json.loads((d / "result.json").read_text()) for d in (finished, again))
    assert first["trial_id"] == second["trial_id"] and first["metrics"] == second["metrics"]
    timing = ("train_images_per_s", "train_seconds", "data_wait_s", "data_wait_frac")
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in files.read_jsonl(d / "metrics.jsonl")]
            for d in (finished, again)]  # fmt: skip
    assert rows[0] == rows[1] and first["environment"]["threads"] == second["environment"]["threads"] == 1
    ids = [wandb_records(next((d / "wandb").glob("offline-run-*")), "run")[0]["run_id"] for d in (finished, again)]
    assert ids[0] != ids[1], "the same config in two folders must be two wandb runs (online, one would overwrite)"


def wandb_records(run_dir: Path, kind: str) -> list[dict]:
    """The records of one type in an offline run's transaction log (`wandb leet inspect --json`)."""
    exe = Path(sys.executable).with_name("wandb")
    out = subprocess.run([exe, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [r[kind] for r in map(json.loads, out.stdout.splitlines()) if r.get("type") == kind]


@pytest.mark.slow
def test_trial_wandb_mirror(finished: Path):
    result = json.loads((finished / "result.json").read_text())
    (run_dir,) = (finished / "wandb").glob("offline-run-*")
    (run,) = wandb_records(run_dir, "run")[:1]
    assert run["display_name"] == "a0-full-s0" and run["job_type"] == "trial" and run["run_group"] == "pytest"
    assert run["run_id"] == tracking.run_id(result["trial_id"], finished) and set(run["tags"]) == {"a0", "full"}
    console = "".join(r["line"] for r in wandb_records(run_dir, "output_raw"))
    assert "epoch 1/2: loss" in console  # the Logs tab: console capture is on by default
    assert any("memory_percent" in r["item"] for r in wandb_records(run_dir, "stats"))  # the System tab
    summary = wandb_inspect(run_dir).get("summary", {})
    assert json.dumps(summary).count("deploy_top1") >= 1 and "images_per_s" in json.dumps(summary)


@pytest.mark.slow
def test_finished_trial_is_not_retrained(finished: Path):
    before = [(finished / name).read_text() for name in ("result.json", "metrics.jsonl")]
    proc = run_train(finished, "tracking.group=pytest")
    assert proc.returncode == 0, proc.stderr
    assert [(finished / name).read_text() for name in ("result.json", "metrics.jsonl")] == before  # no epoch ran
    assert '"status": "completed"' in proc.stdout and "already completed" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_folder_of_another_trial_is_refused(finished: Path):
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()}
    proc = run_train(finished, "seed=1")
    assert proc.returncode == 2 and "holds trial" in proc.stderr and "output_dir=" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before  # every earlier file is untouched


@pytest.mark.slow
def test_interrupted_trial_resumes_to_the_same_result(tmp_path: Path):
    """SIGTERM a real trial after its first epoch; rerunning resumes and ends exactly like an uninterrupted run."""
    overrides = ("train.epochs=3", "train.deterministic=true", "tracking.mode=disabled")
    straight = run_train(tmp_path / "straight", *overrides)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "interrupted"
    env = {**held_epochs_env(tmp_path), "WANDB_MODE": "offline"}
    proc = subprocess.Popen(cli_command("repvgg_search.train", *train_args(out, *overrides)), cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: files.read_jsonl(out / "metrics.jsonl"), 240, "the first epoch")
    with hold_epochs(tmp_path):  # no third epoch can end before the signal arrives
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "interrupted" in err, err[-2000:]
    assert json.loads((out / "result.json").read_text())["status"] == "interrupted"
    done = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epochs_done"]
    assert 1 <= done < 3

    resumed = run_train(out, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch" in resumed.stdout + resumed.stderr
    a = files.read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    b = files.read_jsonl(out / "metrics.jsonl")
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_top1"] for r in a] == [r["val_top1"] for r in b]
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (tmp_path / "straight", out))
    assert ra["trial_id"] == rb["trial_id"] and ra["metrics"] == rb["metrics"]
    assert rb["data_wait"]["epochs"] == 3  # the data-wait summary spans the epochs of both runs


@pytest.mark.slow
def test_relu_in_branches_is_measured_in_train_form(tmp_path: Path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "deploy.pt").write_bytes(b"left by a run that crashed after writing it")  # replaced, never kept as .prev
    proc = run_train(out, "variant=relu_in_branches", "train.epochs=1", "tracking.mode=disabled", "keep_checkpoint=all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["conversion"]["converted"] is False and result["metrics"]["deploy_top1"] is None
    assert result["speed"]["form"] == "train" and result["complexity"]["deploy_is_train_form"]
    # keep_checkpoint=all keeps both; the "deploy" weights of a form that cannot be converted are the train form's
    assert result["weights"] == {"deploy": "deploy.pt", "checkpoint": "checkpoints/last.pt"}
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epochs_done"] == 1 and ckpt["trial_id"] == result["trial_id"]
    assert torch.load(out / "deploy.pt", weights_only=True).keys() == ckpt["model"].keys()
    assert not (out / "checkpoints" / "last.prev.pt").exists()  # the safety copy goes in every mode
    assert not (out / "deploy.prev.pt").exists()  # final weights need no safety copy: keep_checkpoint=none removes all
    again = run_train(
        out, "variant=relu_in_branches", "train.epochs=1", "tracking.mode=disabled", "keep_checkpoint=none"
    )
    assert again.returncode == 0, again.stderr[-3000:]  # a completed trial rerun: reported, the new policy applied
    assert not (out / "deploy.pt").exists() and not (out / "checkpoints").exists()
    assert json.loads((out / "result.json").read_text())["weights"] == {"deploy": None, "checkpoint": None}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.name=mnist"], "data.name='mnist' is unknown; allowed: digits"),
        (["data=cifar10", "data.root=/nonexistent/cifar"], "/nonexistent/cifar"),
        (["data=cifar10"], "data.download=true"),
        (["train.epochs=0"], "train.epochs=0 must be an integer >= 1"),
        (["train.base_lr=-0.1"], "train.base_lr=-0.1 must be a finite number > 0"),
        (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
        (["data.image_size=8"], "data.image_size=8 must be an integer >= 32"),
        (["tracking.mode=online"], "no wandb credentials"),
        (["tracking.mode=loud"], "tracking.mode='loud' is unknown; allowed: offline, online, disabled"),
        (["model.a=0"], "width multiplier a must be a finite number > 0"),
        (["data.decoder=nvjpeg"], "data.decoder='nvjpeg' is unknown; allowed: pil, torchvision, dali"),
        (["data.name=imagenet", "data.decoder=dali", "device=cpu"], "data.decoder=dali decodes on a CUDA GPU"),
    ],
)
def test_bad_input_exits_before_training(tmp_path: Path, monkeypatch, overrides, match):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env["NETRC"] = str(tmp_path / "no-netrc")
    proc = run_cli("repvgg_search.train", *train_args(tmp_path / "out", *overrides), env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert match in proc.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_trial_id_depends_on_results_not_on_paths():
    base = settings_from_config({"model": {"name": "b1g4"}})
    same = settings_from_config({"model": {"name": "b1", "groups": 4}, "data": {"num_workers": 3}})
    other = settings_from_config({"model": {"name": "b1g4"}, "seed": 1})
    assert base.trial_id == same.trial_id != other.trial_id
    tracked = settings_from_config({"model": {"name": "b1g4"}, "tracking": {"group": "x", "mode": "disabled"}})
    assert tracked.trial_id == base.trial_id


@pytest.mark.slow
def test_two_process_trial_on_cpu_gloo(tmp_path: Path):
    """torchrun with two CPU processes: DDP over gloo, rank 0 records, evaluation covers the whole split, and so
    does INT8 quantization (rank 0 alone, over every validation image, not its shard)."""
    out = tmp_path / "ddp"
    quant = ["quant.ptq=true", "quant.calib_images=32", "quant.layer_images=0", "quant.speed=none"]
    proc = run_cli("torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "repvgg_search.train",
                   *train_args(out, "train.epochs=1", "tracking.mode=offline", *quant),
                   env=environ(WANDB_MODE="offline", OMP_NUM_THREADS="1"), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    val_images = len(digits_split(0.2, 0)[1])
    assert result["status"] == "completed" and result["metrics"]["val_images"] == val_images  # both shards
    assert result["conversion"]["gate"]["passed"] and result["conversion"]["agreement"]["images"] == val_images
    q = result["quant"]
    assert q["val_images"] == val_images and q["drop"] == q["float_onnx_top1"] - q["int8_top1"]
    assert abs(q["float_onnx_top1"] - result["metrics"]["deploy_top1"]) <= 100 / val_images  # the same images
    assert len(files.read_jsonl(out / "metrics.jsonl")) == 1 and len(list((out / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.slow
def test_from_trial_gives_the_deploy_form_that_was_measured(finished: Path):
    """The model `from_trial` returns scores the recorded deploy top1 on the trial's own validation split."""
    from repvgg_search import from_trial
    from repvgg_search.data import build_loaders
    from repvgg_search.errors import BadInputError
    from repvgg_search.training import evaluate

    taken = from_trial(finished)
    assert taken.form == "deploy" and taken.model.deploy and not taken.model.training
    assert taken.arch.widths == tuple(taken.record.arch.widths) and taken.input_size == (3, 32, 32)
    settings = settings_from_config(taken.record.config)
    _, val_loader, _ = build_loaders(settings.cfg.data, device="cpu", seed=settings.cfg.seed)
    top1 = evaluate(taken.model, val_loader, device="cpu")["top1"]
    assert top1 == pytest.approx(taken.record.metrics.deploy_top1, abs=1e-9)
    with pytest.raises(BadInputError, match="keep_checkpoint=all"):
        from_trial(finished, form="train")  # the default keeps the deploy weights only
    with pytest.raises(BadInputError, match="form='onnx' is unknown; allowed: deploy, train"):
        from_trial(finished, form="onnx")


@pytest.mark.slow
def test_the_same_command_line_twice_resumes(tmp_path: Path):
    """What a user does after an interruption: the very same command (no output_dir), which lands in the same
    default folder, outputs/trials/<preset>-<variant>-s<seed>-<trial id>, and resumes there."""
    args = [*QUICK_TRIAL, "train.epochs=3"]
    env = {**held_epochs_env(tmp_path), "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(cli_command("repvgg_search.train", *args), cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    wait_for(lambda: any(map(files.read_jsonl, tmp_path.glob("outputs/trials/*/metrics.jsonl"))), 240,
             "the first epoch")  # fmt: skip
    with hold_epochs(tmp_path):  # no third epoch can end before the signal arrives
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 3 and "rerun the same command to resume in outputs/trials/a0-full-s0-" in err, err
    second = run_cli("repvgg_search.train", *args, cwd=tmp_path, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    (folder,) = tmp_path.glob("outputs/trials/*")
    result = json.loads((folder / "result.json").read_text())
    assert folder.name == f"a0-full-s0-{result['trial_id']}" and result["resumes"] and result["resumes"][0] >= 1
    assert [r["epoch"] for r in files.read_jsonl(folder / "metrics.jsonl")] == [1, 2, 3]

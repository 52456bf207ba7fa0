"""Every CUDA path: fp16 with loss scaling, bf16, channels_last, the gate under autocast, speed records with TF32
state, pinned memory, peak memory, trials packed on one GPU, NCCL. Skipped without a CUDA device (the one skip CI
allows); `scripts/gpu_check.sh` runs them on a GPU machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import TINY_TRIAL, require_gpu, run_cli

from repvgg_search import checkpoints, files
from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.profile import PROTOCOLS, SpeedProtocol, measure

# Two epochs of a deeper tiny trial on the GPU, its speed under the paper's protocol at batch 32 in 3 rounds.
GPU_TRIAL = [*TINY_TRIAL, "model.depths=[1,2,2,2,1]", "train.epochs=2", "device=cuda", "speed=paper",
             "speed.batch_size=32", "speed.rounds=3"]  # fmt: skip
pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _gpu():
    require_gpu()


def train(out: Path, *overrides: str) -> dict:
    proc = run_cli("repvgg_search.train", *GPU_TRIAL, *overrides, f"output_dir={out}", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("amp", ["fp16", "bf16", "none"])
def test_trials_under_each_precision_pass_the_gate(tmp_path, amp):
    """The gate compares in fp32 with TF32 off; under autocast, agreement is recorded, never a failure."""
    result = train(tmp_path / amp, f"train.amp={amp}", "train.channels_last=true")
    conv = result["conversion"]
    assert result["status"] == "completed" and conv["gate"]["passed"] and conv["gate"]["tf32"] is False
    assert conv["agreement"]["precision"] == amp and conv["agreement"]["images"] == result["metrics"]["val_images"]
    ckpt = checkpoints.load_checkpoint(tmp_path / amp / files.CHECKPOINT)
    assert bool(ckpt["scaler"]) == (amp == "fp16")  # loss scaling state is checkpointed for fp16 only
    speed = result["speed"]
    assert speed["device"] == "cuda" and speed["tf32"] is False and speed["peak_memory_mb"] > 0
    assert speed["protocol"].startswith("paper+") and speed["driver"] and speed["cuda"]


def test_speed_protocols_set_and_restore_tf32():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    model = reparameterize_model(create_model("a0").eval())
    paper = measure(model, PROTOCOLS["paper"], "cuda")
    fp16 = measure(model, PROTOCOLS["fp16_cl"], "cuda")
    assert (paper["tf32"], paper["dtype"], paper["batch_size"], paper["input_size"]) == (
        False,
        "float32",
        128,
        [3, 224, 224],
    )
    assert fp16["dtype"] == "float16" and fp16["channels_last"] and fp16["images_per_s"] > paper["images_per_s"]
    assert (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    ) == before
    assert next(model.parameters()).device.type == "cpu"  # measured a copy


def test_repeated_measurements_of_one_network_agree():
    model = reparameterize_model(create_model("a0").eval())
    protocol = SpeedProtocol(name="check", rounds=5)
    figures = [measure(model, protocol, "cuda")["images_per_s"] for _ in range(3)]
    assert max(figures) / min(figures) <= 1.05


def test_pinned_host_memory_for_image_folders(tmp_path):
    from PIL import Image

    from repvgg_search.data import DataConfig, build_loaders

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    cfg = DataConfig(name="imagenet", root=str(tmp_path), image_size=32, batch_size=4, num_workers=0)
    train_loader, _, _ = build_loaders(cfg, device=torch.device("cuda"), seed=0)
    x, _ = next(iter(train_loader))
    assert x.is_pinned()


def test_trials_packed_on_one_gpu(tmp_path):
    folder = tmp_path / "packed"
    proc = run_cli("repvgg_search.sweep", "+sweep=ablation", f"sweep.dir={folder}", *GPU_TRIAL,
                   "sweep.axes={variant:[full,no_1x1,no_branches,acb]}", "sweep.seeds=1", "launcher.trials_per_gpu=4",
                   "speed=latency", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in folder.glob("trials/*/result.json")]
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    figures = {r["speed"]["key"]: r["speed"]["images_per_s"] for r in results}
    assert len(figures) == 1  # four plain variants, one deploy network: one figure, measured alone on the GPU


def test_two_gpu_trial_over_nccl(tmp_path):
    require_gpu(2)
    out = tmp_path / "ddp"
    proc = run_cli("torch.distributed.run", "--nproc_per_node", "2", "-m", "repvgg_search.train", *GPU_TRIAL,
                   "device=auto", f"output_dir={out}", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["conversion"]["gate"]["passed"]

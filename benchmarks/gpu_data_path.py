"""Training from JPEGs through the harness vs a bare loop on device-resident tensors (issue 22's GPU target).

Both train the same model (RepVGG-B0 by default, train form) in bf16 autocast and channels_last with SGD:

  bare      a hand-written loop over one random batch already on the device: the model's training speed alone
  harness   `train_one_epoch` over `build_loaders(data.name=imagenet, data.decoder=D)` reading an ImageFolder of
            real JPEG photos (`data.photos.make_photo_folder`): decode and crop in the loader workers, uint8 copy
            and normalization on the device (`DeviceLoader`), the loop's data wait measured per epoch

Each is run eager and, with `--modes eager,compile`, under torch.compile (the harness as `train.compile=true`);
the first pass of each (workers starting, cudnn autotuning, compilation) is a warm-up and not counted. Prints, per
mode, images/s of both (all images of the timed epochs over their wall time, CUDA synchronized), their ratio and
the harness's data-wait fraction; the target on an H200 with 16 workers is ratio >= 0.95 and data wait < 5%.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from repvgg_search.data import DataConfig, build_loaders
from repvgg_search.data.photos import make_photo_folder
from repvgg_search.models import create_model
from repvgg_search.training import (
    TrainConfig,
    autocast,
    build_optimizer,
    build_scheduler,
    compile_model,
    prepare_model,
    train_one_epoch,
)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="b0", help="a preset of repvgg_search.models.list_models()")
    p.add_argument("--width", type=float, default=None, help="override the preset's a and b (a quick CPU check)")
    p.add_argument("--images", type=int, default=12800, help="training JPEGs (two classes)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--decoder", default="torchvision", help="data.decoder: pil, torchvision or dali")
    p.add_argument("--epochs", type=int, default=2, help="timed harness epochs (after one warm-up epoch)")
    p.add_argument("--bare-steps", type=int, default=100, help="timed bare-loop steps (after 10 warm-up steps)")
    p.add_argument("--modes", default="eager,compile", help="comma-separated: eager, compile")
    p.add_argument("--amp", default="bf16", help="train.amp: none, bf16 or fp16")
    p.add_argument("--root", default=None, help="reuse or keep the photo folder here (default: a temporary one)")
    return p.parse_args()


def _model(args: argparse.Namespace, device: torch.device, cfg: TrainConfig) -> nn.Module:
    widths = {} if args.width is None else {"a": args.width, "b": args.width}
    torch.manual_seed(0)
    return prepare_model(create_model(args.model, num_classes=2, **widths), cfg, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(args: argparse.Namespace, device: torch.device, cfg: TrainConfig) -> float:
    """images/s of the bare loop: one random normalized batch on the device, trained on repeatedly."""
    model = _model(args, device, cfg)
    step_model = compile_model(model, cfg)
    optimizer = build_optimizer(model, cfg, args.batch_size)
    memory_format = torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, 2, (args.batch_size,), device=device)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast(cfg.amp, device):
            loss = criterion(step_model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.bare_steps):
        step()
    _sync(device)
    return args.batch_size * args.bare_steps / (time.perf_counter() - start)


def harness(args: argparse.Namespace, device: torch.device, cfg: TrainConfig, root: Path) -> tuple[float, float]:
    """(images/s, data-wait fraction) of the harness's training epochs after the warm-up one."""
    data = DataConfig(
        name="imagenet", root=str(root), image_size=args.image_size, batch_size=args.batch_size,
        num_workers=args.workers, decoder=args.decoder,
    )  # fmt: skip
    train_loader = build_loaders(data, device=device, seed=0, channels_last=cfg.channels_last)[0]
    model = _model(args, device, cfg)
    step_model = compile_model(model, cfg)
    optimizer = build_optimizer(model, cfg, args.batch_size)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    images = seconds = waited = 0.0
    for epoch in range(args.epochs + 1):
        stats = train_one_epoch(
            step_model, train_loader, optimizer, scheduler, cfg=cfg, device=device, epoch=epoch, seed=0,
            log=lambda line: None,
        )  # fmt: skip
        if epoch > 0:  # epoch 0 warms up: workers start, cudnn autotunes, the compiled model compiles
            images += stats["images_per_s"] * stats["seconds"]
            seconds += stats["seconds"]
            waited += stats.get("data_wait_s", 0.0)
    return images / seconds, waited / seconds


def main() -> None:
    args = _args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():  # `make bench` on a CPU machine: nothing to measure
        print("gpu_data_path: no CUDA device here; run it on a GPU (scripts/gpu_check.sh) or pass --device cpu")
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"gpu_data_path: {args.model} train form, {args.amp} autocast, channels_last, batch {args.batch_size}, "
        f"{args.image_size} px, {args.images} JPEGs (~500x375, quality 90), decoder {args.decoder}, "
        f"{args.workers} workers, on {name} ({os.cpu_count()} CPU cores), torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        if not (root / "train").is_dir():
            t = time.perf_counter()
            make_photo_folder(root, {"train": args.images // 2, "val": 4})
            print(f"wrote {args.images} JPEGs in {time.perf_counter() - t:.0f} s")
        for mode in args.modes.split(","):
            cfg = TrainConfig(amp=args.amp, channels_last=True, compile=mode == "compile", warmup_epochs=0.0)
            bare_rate = bare(args, device, cfg)
            rate, wait = harness(args, device, cfg, root)
            print(
                f"{mode}: harness {rate:.0f} images/s, bare {bare_rate:.0f} images/s, harness/bare {rate / bare_rate:.3f}, "
                f"data wait {100 * wait:.1f}% of training time"
            )


if __name__ == "__main__":
    main()

"""Train-form training throughput (images/s: forward + backward + SGD step) of a preset on digits at 32 px."""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import torch
import torch.nn.functional as F

from repvgg_search.data import DataConfig, build_loaders
from repvgg_search.models import create_model, list_variants
from repvgg_search.training import AMP_MODES, TrainConfig, autocast, build_optimizer


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="a0")
    p.add_argument("--variants", nargs="+", default=["full"], choices=list_variants())
    p.add_argument("--batch-size", type=int, default=DataConfig().batch_size, help="default: the proxy recipe's")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--amp", default="none", choices=AMP_MODES)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=15, help="timed steps")
    return p.parse_args()


def measure(variant: str, args: argparse.Namespace, device: torch.device) -> float:
    """Images per second over `args.steps` training steps on real digits batches, after `args.warmup` steps."""
    train, _, info = build_loaders(DataConfig(batch_size=args.batch_size), device=device, seed=0)
    torch.manual_seed(0)
    model = create_model(args.preset, variant=variant, num_classes=info.num_classes).to(device).train()
    optimizer = build_optimizer(model, TrainConfig(), args.batch_size)
    batches = itertools.chain.from_iterable(train for _ in itertools.count())  # cycle without caching tensors
    start, seen = 0.0, 0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, seen = time.perf_counter(), 0
        x, y = next(batches)
        with autocast(args.amp, device):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += y.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # the CPU model, where Linux tells it
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    args = _args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    dtype = "float32" if args.amp == "none" else f"{args.amp} autocast"
    name = _device_name(device)
    print(f"train-form training throughput: {args.preset} on digits, 32x32 input, batch {args.batch_size}, {dtype}")
    print(f"device {device} ({name}), threads {torch.get_num_threads()}, torch {torch.__version__}")
    for variant in args.variants:
        print(f"{variant:>16}: {measure(variant, args, device):8.1f} images/s (forward + backward + SGD step)")


if __name__ == "__main__":
    main()

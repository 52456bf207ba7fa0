"""Deploy vs train form throughput of A0, and the deploy form's GFLOP/s against a same-run fp32 matmul rate.

Run: python benchmarks/deploy_speed.py [--batch-size 32] [--input-size 224] [--rounds 3]
Targets (issue 2): deploy/train throughput ratio >= 1.5; deploy GFLOP/s / matmul GFLOP/s >= 0.8.
Both forms are timed alternately, round after round, and each keeps its best round, so a noisy neighbour on a shared
machine hurts both alike. GFLOP/s counts 2 FLOPs per fvcore MAC.
"""

from __future__ import annotations

import argparse
import time

import torch

from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.profile import complexity, device_name, throughput


def matmul_gflops(n: int = 2048, iters: int = 10) -> float:
    """Best-of fp32 square matmul rate on the CPU, in GFLOP/s (2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    train = create_model("a0").eval()
    deploy = reparameterize_model(train)
    size = (3, args.input_size, args.input_size)
    deploy_macs = complexity(deploy, size)["macs"]
    kw = {"batch_size": args.batch_size, "input_size": size, "device": "cpu", "warmup": 2, "iters": 5}
    kw["channels_last"] = args.channels_last
    best = {"train": 0.0, "deploy": 0.0}
    mm = 0.0
    for _ in range(args.rounds):
        mm = max(mm, matmul_gflops())
        for form, model in (("train", train), ("deploy", deploy)):
            best[form] = max(best[form], throughput(model, **kw)["images_per_s"])
    achieved = 2 * deploy_macs * best["deploy"] / 1e9
    print(
        f"device: {device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads, fp32, "
        f"batch {args.batch_size}, {args.input_size}x{args.input_size}, channels_last={args.channels_last}"
    )
    print(f"a0 train form : {best['train']:8.1f} images/s")
    print(f"a0 deploy form: {best['deploy']:8.1f} images/s")
    print(f"deploy/train throughput ratio: {best['deploy'] / best['train']:.2f}  (target >= 1.5)")
    print(
        f"deploy form: {achieved:.1f} GFLOP/s (2 x {deploy_macs / 1e9:.3f} GMACs x images/s); "
        f"fp32 matmul 2048^3: {mm:.1f} GFLOP/s; fraction {achieved / mm:.2f}  (target >= 0.8)"
    )


if __name__ == "__main__":
    main()

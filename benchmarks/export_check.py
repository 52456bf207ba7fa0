"""Exports of every preset's deploy form against PyTorch: ONNX in onnxruntime and torch.export (.pt2), float32.

Run: python benchmarks/export_check.py [--side 224]
Target (issue 14): max relative error <= 1e-5 for both formats on every preset. Each deploy form comes from a train
form with random BN statistics (so the fusion matters), and is checked on a fixed random batch of 4 images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from repvgg_search.deploy.export import TOLERANCE, export_model
from repvgg_search.models import build_model, list_models, reparameterize_model
from repvgg_search.models.arch import arch_config
from repvgg_search.profile.speed import randomize_bn_


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=224)
    args = p.parse_args()
    worst = 0.0
    print(f"{'preset':<7} {'onnx rel err':>13} {'pt2 rel err':>12} {'seconds':>8}")
    for preset in list_models():
        model = build_model(arch_config(preset))
        randomize_bn_(model, torch.Generator().manual_seed(0))
        deploy = reparameterize_model(model.eval())
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            found = export_model(deploy, (3, args.side, args.side), Path(tmp))
        errors = [found[f]["max_rel_error"] for f in ("onnx", "torch_export")]
        worst = max(worst, *errors)
        print(f"{preset:<7} {errors[0]:13.2e} {errors[1]:12.2e} {time.perf_counter() - t0:8.1f}")
    print(f"worst relative error {worst:.2e} (tolerance {TOLERANCE:g}): {'PASS' if worst <= TOLERANCE else 'FAIL'}; "
          f"float32, CPU, batch 4 at 3x{args.side}x{args.side}, torch {torch.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()

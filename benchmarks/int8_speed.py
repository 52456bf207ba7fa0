"""INT8 vs float32 speed of A0's deploy form on this CPU, in one run: both in onnxruntime, one protocol.

Run: python benchmarks/int8_speed.py [--protocol cpu] [--preset a0] [--calib 64]
The INT8 model is the trial's quantization (static, QDQ, per-channel int8 weights, uint8 activations calibrated on
`--calib` random images: speed does not depend on the calibration). Ratio = INT8 / float images/s, same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from repvgg_search.deploy.onnx_io import export_onnx
from repvgg_search.deploy.quant import PtqSettings, quantize_int8
from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.profile import resolve_protocol
from repvgg_search.profile.speed import measure_onnx

CPU = torch.device("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="cpu")
    p.add_argument("--preset", default="a0")
    p.add_argument("--calib", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(0)
    deploy = reparameterize_model(create_model(args.preset).eval())
    protocol = dataclasses.replace(resolve_protocol(args.protocol, CPU), runtime="onnxruntime")
    side = protocol.input_size
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(deploy, (3, side, side), Path(tmp) / "fp32.onnx")
        int8 = quantize_int8(fp32, Path(tmp) / "int8.onnx", torch.randn(args.calib, 3, side, side), PtqSettings())
        figures = {}
        for _ in range(2):  # interleaved twice: float, int8, float, int8
            for name, path in (("float32", fp32), ("int8", int8)):
                figures.setdefault(name, []).append(measure_onnx(path, protocol)["images_per_s"])
    f, q = (max(figures[k]) for k in ("float32", "int8"))
    print(f"{args.preset} deploy form, onnxruntime CPU, protocol {protocol.name}: batch {protocol.batch_size}, "
          f"3x{side}x{side}, {protocol.rounds} rounds x {protocol.iters} batches, measured twice interleaved")  # fmt: skip
    for name in ("float32", "int8"):
        print(f"  {name:<8} " + "  ".join(f"{v:8.1f}" for v in figures[name]) + " images/s")
    print(f"INT8 / float32 = {q / f:.2f} (best of two each)")


if __name__ == "__main__":
    main()

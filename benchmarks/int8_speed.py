"""INT8 vs float32 speed of a deploy form on this CPU, per quantization protocol, in one run: every model in
onnxruntime under one speed protocol, timed interleaved (float, then each protocol's INT8 model, twice over).

Run: python benchmarks/int8_speed.py [--protocol cpu] [--preset a0] [--calib 64] [--quant ort_qdq symmetric ...]
Each INT8 model is the quantization stage's (quant protocols: repvgg_search/conf/quant/), calibrated on `--calib`
seeded random images: speed does not depend on the calibration. Ratio = INT8 / float32 images/s of the same run,
best of the two interleaved measurements of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from repvgg_search.deploy.onnx_io import export_onnx
from repvgg_search.deploy.quant import quantize_int8
from repvgg_search.deploy.quant_protocols import cpu_int8, parse_label, resolve_quant_protocol
from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.profile import resolve_protocol
from repvgg_search.profile.speed import measure_onnx

CPU = torch.device("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="cpu", help="speed protocol (run in onnxruntime)")
    p.add_argument("--preset", default="a0")
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--quant", nargs="+", default=["ort_qdq", "symmetric", "ort_legacy"], help="quant protocols")
    args = p.parse_args()
    torch.manual_seed(0)
    deploy = reparameterize_model(create_model(args.preset).eval())
    protocol = dataclasses.replace(resolve_protocol(args.protocol, CPU), runtime="onnxruntime")
    side = protocol.input_size
    images = torch.randn(args.calib, 3, side, side, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        models = {"float32": export_onnx(deploy, (3, side, side), Path(tmp) / "fp32.onnx")}
        used = {}
        for label in args.quant:
            quant = resolve_quant_protocol({**parse_label(label), "calib_images": args.calib})
            done = quantize_int8(models["float32"], Path(tmp) / f"{len(models)}.onnx", images, quant)
            models[quant.name] = done.path
            used[quant.name] = done.record["reduce_range_used"]
        figures: dict[str, list[float]] = {}
        for _ in range(2):  # interleaved twice: float, each INT8 model, float, each INT8 model
            for name, path in models.items():
                figures.setdefault(name, []).append(measure_onnx(path, protocol)["images_per_s"])
    cpu = cpu_int8()
    print(f"{args.preset} deploy form (1000 classes, random weights), onnxruntime CPU ({cpu['model']}; VNNI/AMX: "
          f"{cpu['vnni'] or 'none'}), speed protocol {protocol.name}: batch {protocol.batch_size}, 3x{side}x{side}, "
          f"float32 input, {protocol.threads or 'all'} threads, {protocol.rounds} rounds x {protocol.iters} batches, "
          "measured twice interleaved")  # fmt: skip
    best = {k: max(v) for k, v in figures.items()}
    for name, values in figures.items():
        ratio = "" if name == "float32" else f"  INT8/float32 = {best[name] / best['float32']:.2f}"
        print(f"  {name:<40} " + "  ".join(f"{v:8.1f}" for v in values) + f" images/s{ratio}")
    print("reduce_range used: " + ", ".join(f"{k}: {str(v).lower()}" for k, v in used.items()))


if __name__ == "__main__":
    main()

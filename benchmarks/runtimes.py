"""A0 under each inference runtime, in one run: the train form (eager) beside the deploy form in PyTorch eager,
torch.compile (inductor) and onnxruntime (CPU), all under one speed protocol, side by side.

Run: python benchmarks/runtimes.py [--protocol cpu] [--preset a0]
Each figure is what a trial records (median of the protocol's rounds; spread = max/min of the rounds). Ratios are
to the deploy form in eager mode, measured in the same run (the machine is shared: compare ratios, not figures).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.profile import measure, resolve_protocol

CPU = torch.device("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="cpu")
    p.add_argument("--preset", default="a0")
    args = p.parse_args()
    torch.manual_seed(0)
    train = create_model(args.preset).eval()
    deploy = reparameterize_model(train)
    base = resolve_protocol(args.protocol, CPU)
    rows = [("train form", "eager", train)] + [("deploy form", r, deploy) for r in ("eager", "compile", "onnxruntime")]
    figures = {}
    for form, runtime, model in rows:
        protocol = dataclasses.replace(base, runtime=runtime)
        figures[form, runtime] = measure(model, protocol, CPU)
    ref = figures["deploy form", "eager"]["images_per_s"]
    print(f"{args.preset} on the CPU ({figures['deploy form', 'eager']['device_name']}), protocol {base.name}: "
          f"batch {base.batch_size}, 3x{base.input_size}x{base.input_size}, float32, "
          f"{figures['deploy form', 'eager']['threads']} threads, median of {base.rounds} rounds; "
          + ", ".join(f"{form} {runtime}: {'channels_last' if f.get('channels_last') else 'contiguous'}"
                      for (form, runtime), f in figures.items() if runtime != "onnxruntime")
          + " (onnxruntime takes NCHW input)")  # fmt: skip
    for (form, runtime), f in figures.items():
        print(f"  {form:<12} {runtime:<12} {f['images_per_s']:8.1f} images/s  spread {f['spread']:.2f}  "
              f"x{f['images_per_s'] / ref:.2f} vs deploy eager")  # fmt: skip


if __name__ == "__main__":
    main()

"""Repeatability of a speed figure: five measurements of A0's deploy form under one protocol, in one run.

Run: python benchmarks/speed_repeatability.py [--device auto] [--protocol auto] [--repeats 5]
Target (issue 10): max/min of the five figures <= 1.05 on a GPU, <= 1.10 on an otherwise idle 2-core CPU.
Each measurement is what a trial records: the median of the protocol's rounds (with its retries when the rounds
spread beyond the protocol's bound). Nothing is cached between the measurements.
"""

from __future__ import annotations

import argparse

import torch

from repvgg_search.devices import resolve_device
from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.profile import measure, resolve_protocol


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--protocol", default="auto", help="a protocol name (conf/speed/); auto: paper on GPU, cpu on CPU")
    p.add_argument("--preset", default="a0")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = resolve_device(args.device)
    protocol = resolve_protocol(args.protocol, device)
    torch.manual_seed(0)
    model = reparameterize_model(create_model(args.preset).eval())
    figures = []
    for i in range(args.repeats):
        speed = measure(model, protocol, device)
        figures.append(speed["images_per_s"])
        print(
            f"  {i + 1}: {speed['images_per_s']:8.1f} images/s  (rounds spread {speed['spread']:.3f}, "
            f"attempts {speed['attempts']}, {'reliable' if speed['reliable'] else 'UNRELIABLE'})"
        )
    tf32 = "" if speed["tf32"] is None else f", TF32 {'on' if speed['tf32'] else 'off'}"
    print(
        f"{args.preset} deploy, protocol {protocol.name}: batch {speed['batch_size']}, "
        f"{'x'.join(map(str, speed['input_size']))}, {speed['dtype']}{tf32}, "
        f"{'channels_last' if speed['channels_last'] else 'NCHW'}, {speed['threads']} threads, "
        f"{speed['device_name']} ({device.type})"
    )
    target = 1.05 if device.type == "cuda" else 1.10
    spread = max(figures) / min(figures)
    print(
        f"max/min of {args.repeats} measurements: {spread:.3f} (target <= {target:.2f}: {'met' if spread <= target else 'NOT met'})"
    )


if __name__ == "__main__":
    main()

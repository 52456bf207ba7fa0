"""Latency lookup table vs end-to-end measurement: random architectures, each predicted and measured, in one run.

Sampling (seeded by --seed): the depths of a preset drawn uniformly from the 13 paper presets (a0 ... b3g4: the A
and B depth families and the paper's grouped-layer rule), groups drawn uniformly from {1, 2, 4}, and the width
multipliers a and b drawn uniformly from the width search's default grid (a in 0.5, 0.75, ..., 1.5; b in 1.0,
1.5, ..., 2.5); 1000 classes. For each architecture in turn: the table's missing entries are measured (entries
are shared: later architectures reuse earlier ones), its deploy form is measured end to end by `profile.measure`
under the same protocol (the whole network, built, converted and timed), and the table predicts it. Both
figures are the median round's images/s under one protocol; the error is predicted / measured - 1.

    python benchmarks/latency_lut.py [--n 30] [--seed 0] [--batch 8] [--side 128] [--threads N] [--device auto]

Last line: `latency lut: P% within +-10% over N architectures, MAPE M%, Kendall tau T`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats

from repvgg_search.devices import DeviceLock, resolve_device
from repvgg_search.models import ArchConfig, arch_config, build_model, reparameterize_model
from repvgg_search.models.arch import PRESETS
from repvgg_search.profile import measure, resolve_protocol
from repvgg_search.profile.complexity import arch_sizes
from repvgg_search.profile.lut import LatencyTable

PAPER_PRESETS = [p for p in PRESETS if p != "d2se"]  # d2se has squeeze-excitation: no plain deploy form
A_GRID = [0.5 + 0.25 * i for i in range(5)]
B_GRID = [1.0 + 0.5 * i for i in range(4)]


def sample(n: int, seed: int) -> list[tuple[str, ArchConfig]]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        preset, groups = rng.choice(PAPER_PRESETS), rng.choice([1, 2, 4])
        a, b = rng.choice(A_GRID), rng.choice(B_GRID)
        arch = arch_config(preset, a=a, b=b, groups=groups)
        out.append((f"{preset}-a{a:g}-b{b:g}-g{groups}", arch))
    return out


def one(table: LatencyTable, arch: ArchConfig, protocol, device) -> tuple[dict, dict, float, float]:
    """Predict (measuring the entries the table lacks), then measure end to end; with the seconds each took."""
    t0 = time.perf_counter()
    predicted = table.predict(arch)
    t1 = time.perf_counter()
    torch.manual_seed(0)
    deploy = reparameterize_model(build_model(arch).eval())
    with DeviceLock(device).exclusive():  # as the speed stage times a whole network (and the table its entries)
        measured = measure(deploy, protocol, device)
    return predicted, measured, t1 - t0, time.perf_counter() - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30, help="architectures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--protocol", default="auto", help="base protocol (conf/speed/): auto = cpu on the CPU, paper on a GPU"
    )
    p.add_argument("--batch", type=int, default=8, help="speed.batch_size")
    p.add_argument("--side", type=int, default=128, help="speed.input_size")
    p.add_argument("--threads", type=int, default=None, help="speed.threads (CPU); default every core")
    p.add_argument("--device", default="auto")
    p.add_argument("--folder", type=Path, default=None, help="the speed folder holding the table (default: a temp one)")
    args = p.parse_args()
    device = resolve_device(args.device)
    fields = {"name": args.protocol, "batch_size": args.batch, "input_size": args.side, "threads": args.threads}
    protocol = resolve_protocol({k: v for k, v in fields.items() if v is not None}, device)
    table = LatencyTable(args.folder or Path(tempfile.mkdtemp(prefix="lut-")), protocol, device)
    rows, t_start = [], time.perf_counter()
    print(f"protocol {protocol.name}: batch {protocol.batch_size}, 3x{args.side}x{args.side}, {protocol.dtype}, "
          f"runtime {protocol.runtime}, channels_last {protocol.channels_last} (null: probed), threads "
          f"{protocol.threads or 'all'}, {protocol.rounds} rounds of {protocol.iters} after {protocol.warmup} warm-up; "
          f"table {table.root}")  # fmt: skip
    print(f"{'architecture':<24} {'GMACs':>6} {'measured':>9} {'predicted':>9} {'error':>7}  spread  layout(m/p)")
    archs = sample(args.n, args.seed)
    for name, arch in archs:
        pred, meas, t_lut, t_meas = one(table, arch, protocol, device)
        err = pred["images_per_s"] / meas["images_per_s"] - 1
        gmacs = arch_sizes(arch, args.side)["deploy"]["macs"] / 1e9
        rows.append((pred["images_per_s"], meas["images_per_s"], err, meas["reliable"], t_lut, t_meas))
        layouts = f"{'cl' if meas['channels_last'] else 'nchw'}/{'cl' if pred['channels_last'] else 'nchw'}"
        print(f"{name:<24} {gmacs:6.2f} {meas['images_per_s']:9.1f} {pred['images_per_s']:9.1f} {err:+7.1%}  "
              f"{meas['spread']:.3f}{'' if meas['reliable'] else '!'}  {layouts}  (lut {t_lut:.1f} s, e2e {t_meas:.1f} s, "
              f"{pred['entries_measured']} new entries)", flush=True)  # fmt: skip
    report(rows, table, [a for _, a in archs], time.perf_counter() - t_start, device)


def report(rows: list[tuple], table: LatencyTable, archs: list[ArchConfig], wall: float, device: torch.device) -> None:
    errors = [r[2] for r in rows]
    within = sum(abs(e) <= 0.10 for e in errors) / len(errors)
    mape = statistics.mean(abs(e) for e in errors)
    tau = stats.kendalltau([r[0] for r in rows], [r[1] for r in rows]).statistic
    entries = len(list(table.root.glob("*.json")))
    t0 = time.perf_counter()
    again = LatencyTable(table.root.parents[1], table.protocol, device)
    for arch in archs:  # a screen: every prediction from the stored table, nothing measured
        again.predict(arch)
    screen = time.perf_counter() - t0
    print(f"{entries} table entries; LUT fills {sum(r[4] for r in rows):.0f} s, end-to-end measurements "
          f"{sum(r[5] for r in rows):.0f} s, whole run {wall:.0f} s; {sum(not r[3] for r in rows)} of {len(rows)} "
          f"end-to-end figures unreliable (rounds spread > max_spread); mean signed error {statistics.mean(errors):+.1%}; "
          f"{len(rows)} predictions from the stored table in {screen * 1e3:.0f} ms")  # fmt: skip
    print(
        f"latency lut: {within:.0%} within +-10% over {len(rows)} architectures, MAPE {mape:.1%}, Kendall tau {tau:.3f}"
    )


if __name__ == "__main__":
    main()

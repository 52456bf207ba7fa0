"""Latency lookup table vs end-to-end measurement: random architectures, each predicted and measured, in one run.

Sampling (seeded by --seed): the depths of a preset drawn uniformly from the 13 paper presets (a0 ... b3g4: the A
and B depth families and the paper's grouped-layer rule), groups drawn uniformly from {1, 2, 4}, and the width
multipliers a and b drawn uniformly from the width search's default grid (a in 0.5, 0.75, ..., 1.5; b in 1.0,
1.5, ..., 2.5); 1000 classes. For each architecture in turn: its deploy form is measured end to end by
`profile.measure` (the whole network, built, converted and timed, with the device lock held exclusively), the
table predicts it (first measuring the entries it lacks: entries are shared, later architectures reuse earlier
ones), and the network is measured end to end again. The error is predicted / measured - 1, "measured" being the
geometric mean of the two end-to-end figures (each the median round's images/s); how often the two agree within
+-10% is printed as the noise floor the prediction is judged against.

Default protocol: the `cpu` protocol (fp32, eager, layout probed, 2 warm-up batches, 5 rounds of 3) at batch 8,
64x64, 10 timed batches a round (the paper protocol's; an entry's round lasts at least `MIN_ROUND_S`, 50 ms),
one thread. One thread because this 2-core machine is shared: with two threads, a neighbour's process
stalls every parallel region (A0 at batch 8, 128 px: 4.7-6.4 images/s with 2 threads vs 23 with 1, side by side).

    python benchmarks/latency_lut.py [--n 30] [--seed 0] [--batch 8] [--side 64] [--threads 1] [--device auto]

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


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one(table: LatencyTable, arch: ArchConfig, protocol, device) -> dict:
    """Measure end to end, predict (measuring the entries the table lacks), measure end to end again: the LUT is
    judged against the geometric mean of the two measurements, and the two against each other (the noise floor)."""
    torch.manual_seed(0)
    deploy = reparameterize_model(build_model(arch).eval())

    def e2e() -> dict:
        with DeviceLock(device).exclusive():  # as the speed stage times a whole network (and the table its entries)
            return measure(deploy, protocol, device)

    (first, t1), (pred, t_lut), (second, t2) = timed(e2e), timed(lambda: table.predict(arch)), timed(e2e)
    measured = (first["images_per_s"] * second["images_per_s"]) ** 0.5
    return {
        "pred": pred, "first": first, "second": second, "measured": measured, "t_lut": t_lut, "t_e2e": t1 + t2,
        "error": pred["images_per_s"] / measured - 1, "repeat": second["images_per_s"] / first["images_per_s"] - 1,
        "reliable": first["reliable"] and second["reliable"],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30, help="architectures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--protocol", default="auto", help="base protocol (conf/speed/): auto = cpu on the CPU, paper on GPU"
    )
    p.add_argument("--batch", type=int, default=8, help="speed.batch_size")
    p.add_argument("--side", type=int, default=64, help="speed.input_size")
    p.add_argument("--threads", type=int, default=1, help="speed.threads on the CPU (0: every core)")
    p.add_argument("--iters", type=int, default=10, help="speed.iters: timed batches a round (the paper's 10)")
    p.add_argument("--device", default="auto")
    p.add_argument("--folder", type=Path, default=None, help="the speed folder holding the table (default: a temp one)")
    args = p.parse_args()
    device = resolve_device(args.device)
    fields = {"name": args.protocol, "batch_size": args.batch, "input_size": args.side, "threads": args.threads or None,
              "iters": args.iters}  # fmt: skip
    protocol = resolve_protocol({k: v for k, v in fields.items() if v is not None}, device)
    table = LatencyTable(args.folder or Path(tempfile.mkdtemp(prefix="lut-")), protocol, device)
    rows, t_start = [], time.perf_counter()
    print(f"protocol {protocol.name}: batch {protocol.batch_size}, 3x{args.side}x{args.side}, {protocol.dtype}, "
          f"runtime {protocol.runtime}, channels_last {protocol.channels_last} (null: probed), threads "
          f"{protocol.threads or 'all'}, {protocol.rounds} rounds of {protocol.iters} after {protocol.warmup} warm-up, "
          f"{device.type}; table {table.root}")  # fmt: skip
    print(f"{'architecture':<24} {'GMACs':>6} {'measured':>9} {'repeat':>7} {'predicted':>9} {'error':>7}  layout(m/p)")
    archs = sample(args.n, args.seed)
    for name, arch in archs:
        r = one(table, arch, protocol, device)
        rows.append(r)
        gmacs = arch_sizes(arch, args.side)["deploy"]["macs"] / 1e9
        layouts = f"{'cl' if r['first']['channels_last'] else 'nchw'}/{'cl' if r['pred']['channels_last'] else 'nchw'}"
        print(f"{name:<24} {gmacs:6.2f} {r['measured']:9.1f} {r['repeat']:+7.1%} {r['pred']['images_per_s']:9.1f} "
              f"{r['error']:+7.1%}  {layouts}{'' if r['reliable'] else ' (spread > max_spread)'}  (lut {r['t_lut']:.1f} s, "
              f"e2e {r['t_e2e']:.1f} s, {r['pred']['entries_measured']} new entries)", flush=True)  # fmt: skip
    report(rows, table, [a for _, a in archs], time.perf_counter() - t_start, device)


def report(rows: list[dict], table: LatencyTable, archs: list[ArchConfig], wall: float, device: torch.device) -> None:
    errors = [r["error"] for r in rows]
    within = sum(abs(e) <= 0.10 for e in errors) / len(errors)
    repeat = sum(abs(r["repeat"]) <= 0.10 for r in rows) / len(rows)
    mape = statistics.mean(abs(e) for e in errors)
    tau = stats.kendalltau([r["pred"]["images_per_s"] for r in rows], [r["measured"] for r in rows]).statistic
    entries = len(list(table.root.glob("*.json")))
    t0 = time.perf_counter()
    again = LatencyTable(table.root.parents[1], table.protocol, device)
    for arch in archs:  # a screen: every prediction from the stored table, nothing measured
        again.predict(arch)
    screen = time.perf_counter() - t0
    print(f"{entries} table entries; LUT fills {sum(r['t_lut'] for r in rows):.0f} s, end-to-end measurements "
          f"{sum(r['t_e2e'] for r in rows):.0f} s, whole run {wall:.0f} s; {sum(not r['reliable'] for r in rows)} of "
          f"{len(rows)} architectures had a measurement with rounds spread > max_spread; mean signed error "
          f"{statistics.mean(errors):+.1%}; noise floor: the two end-to-end measurements agree within +-10% for "
          f"{repeat:.0%}; {len(rows)} predictions from the stored table in {screen * 1e3:.0f} ms")  # fmt: skip
    print(
        f"latency lut: {within:.0%} within +-10% over {len(rows)} architectures, MAPE {mape:.1%}, Kendall tau {tau:.3f}"
    )


if __name__ == "__main__":
    main()

"""Time a full report over 2,000 synthetic result.json records against the 10 s target.

python benchmarks/report_scale.py [--records 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from repvgg_search.analysis.examples import example_record
from repvgg_search.analysis.report import build_report

TARGET_S = 10.0
VARIANTS = ["full", "no_identity", "no_1x1", "no_branches", "identity_no_bn", "post_bn", "diracnet", "trivial", "acb"]
GPU = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "batch_size": 128, "threads": None}


def _ablation_record(i: int, rng: random.Random) -> dict:
    variant = VARIANTS[i % len(VARIANTS)]
    top1, ips = 95 + 3 * rng.random(), 700 + 200 * rng.random()
    return example_record(f"{i:012x}", top1=top1, variant=variant, seed=i // 18, group="ablation", images_per_s=ips)


def _search_record(i: int, rng: random.Random) -> dict:
    a, b = rng.uniform(0.5, 2.5), rng.uniform(1.0, 5.0)
    gmacs = 0.4 * a * a + 0.2 * b
    status = "infeasible" if gmacs > 3.0 else "failed" if rng.random() < 0.03 else "completed"
    top1 = 90 + 8 * (1 - 1 / (1 + gmacs)) + rng.gauss(0, 0.5)
    search = {"study": "width", "number": i // 2, "values": [top1, gmacs], "feasible": status != "infeasible"}
    return example_record(
        f"{i:012x}",
        top1=top1,
        preset="custom",
        group="width",
        status=status,
        macs=int(gmacs * 1e9),
        params=int(5e6 * a * b),
        images_per_s=12000 / (0.5 + gmacs),
        speed=GPU,
        arch={"a": round(a, 3), "b": round(b, 3)},
        search=search | {"state": "COMPLETE"},
    )


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
    """Half ablation trials (CPU speeds), half width-search candidates (GPU speeds), a few failed/infeasible."""
    rng = random.Random(seed)
    return [_ablation_record(i, rng) if i % 2 == 0 else _search_record(i, rng) for i in range(n)]


def write_sweep(root: Path, records: list[dict]) -> None:
    """A sweep folder holding one result.json per record (no wandb runs: the local record is what is read)."""
    root.mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps({"name": "scale", "kind": "grid", "schema_version": 1}))
    for rec in records:
        d = root / "trials" / rec["trial_id"]
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(rec))


def main() -> int:
    """Write the records, build the report once, print the time and its ratio to the target."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--keep", type=Path, help="write the sweep and report here instead of a temporary folder")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        write_sweep(root / "sweep", synthetic_records(args.records))
        start = time.perf_counter()
        md = build_report(root / "sweep", root / "report").read_text()
        elapsed = time.perf_counter() - start
    edfs = md.count("n=")  # every EDF curve is labelled with its n
    assert "## Error EDFs" in md, "the report has no error EDFs"
    print(
        f"report over {args.records} records, with error EDFs ({edfs} curve labels): {elapsed:.2f} s "
        f"(target {TARGET_S:.0f} s, ratio {elapsed / TARGET_S:.2f})"
    )
    return 0 if elapsed < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())

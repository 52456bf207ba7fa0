"""Sweep folders for the analysis tests: result.json records plus real wandb offline runs of the same trials.

The records are schema-1 records shaped like the trial runner's, with made-up numbers chosen so that the
fronts are known by hand. To test on records of real tiny trials instead, write them (and their wandb runs)
into the same layout: `<root>/<sweep>/sweep.json` and `<root>/<sweep>/trials/<trial_id>/{result.json,wandb/}`;
the tests derive their expectations from the records they find, except the hand-computed width-search checks.

Run as a script (`python analysis_fixtures.py SPEC.json`) it writes the wandb runs listed in SPEC: the tests
do that in a child process so that wandb's service never starts inside the pytest process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from repvgg_search.analysis.examples import example_record

# top1 (%) for seeds 0 and 1, and deploy throughput (images/s) on the CPU setup.
ABLATION = {
    "full": ((97.2, 97.6), 812.0),
    "no_identity": ((96.1, 96.5), 815.0),
    "no_1x1": ((96.8, 97.0), 809.0),
    "no_branches": ((95.0, 95.4), 820.0),
    "identity_no_bn": ((96.6, 96.9), 811.0),
    "post_bn": ((95.9, 96.3), 813.0),
    "relu_in_branches": ((97.4, 97.8), 455.0),  # not re-parameterizable: train-form speed
    "diracnet": ((96.0, 96.2), 810.0),
    "trivial": ((95.7, 95.9), 814.0),
    "acb": ((96.3, 96.7), 808.0),
    "residual_reorg": ((96.9, 97.1), 760.0),
}
ABLATION_GROUP, WIDTH_GROUP = "ablation-digits", "width-digits"
WANDB_ONLY = ("acb", 1)  # this trial's result.json is removed: only its wandb run holds it
GPU_SPEED = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "batch_size": 128, "threads": None}

# Width search: (number, a, b, depths, groups, GMACs, params M, top1, images/s, status).
WIDTH = [
    (0, 0.5, 1.0, [1, 2, 4, 14, 1], 1, 0.30, 2.0, 93.0, 9000.0, "completed"),  # front
    (1, 0.75, 1.5, [1, 2, 4, 14, 1], 1, 0.60, 3.5, 95.0, 7000.0, "completed"),  # front
    (2, 0.75, 2.0, [1, 2, 4, 14, 1], 2, 0.80, 5.0, 94.5, 6500.0, "completed"),  # dominated by #1
    (3, 1.0, 2.0, [1, 4, 6, 16, 1], 1, 1.00, 6.0, 96.5, 5000.0, "completed"),  # front
    (4, 2.5, 5.0, [1, 4, 6, 16, 1], 1, 15.0, 80.0, None, None, "infeasible"),  # over the MAC budget
    (5, 1.0, 1.5, [1, 2, 4, 14, 1], 2, 0.90, 4.5, 96.0, 5600.0, "completed"),  # front
    (6, 1.25, 2.5, [1, 2, 4, 14, 1], 1, 1.20, 7.0, None, None, "failed"),
    (7, 0.5, 1.5, [1, 2, 4, 14, 1], 1, 0.45, 2.8, 92.0, 8000.0, "completed"),  # dominated by #0
    (8, 1.25, 2.5, [1, 4, 6, 16, 1], 4, 1.60, 9.0, 96.4, 3000.0, "completed"),  # dominated by #3
]
WIDTH_FRONT = {0, 1, 3, 5}
# Hand-computed: front (GMACs, top1) = (0.3, 93), (0.6, 95), (0.9, 96), (1.0, 96.5); ref (2.0 GMACs, 90 %):
# 1.7*3 + 1.4*2 + 1.1*1 + 1.0*0.5 = 9.5 GMACs x %.
WIDTH_HV_REF, WIDTH_HV = (2.0, 90.0), 9.5


def trial_id(*parts: Any) -> str:
    """A 12-hex id, stable for the same parts (the runner hashes the resolved config the same way)."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def ablation_records(group: str = ABLATION_GROUP) -> list[dict[str, Any]]:
    """11 variants x 2 seeds on the CPU setup, plus one failed trial of `full`."""
    records = []
    for variant, (top1s, ips) in ABLATION.items():
        form = "train" if variant == "relu_in_branches" else "deploy"
        macs = 1_448_000_000 if variant == "residual_reorg" else 1_361_513_728
        for seed, top1 in enumerate(top1s):
            tid = trial_id(group, variant, seed)
            records.append(
                example_record(
                    tid,
                    top1=top1,
                    variant=variant,
                    seed=seed,
                    group=group,
                    images_per_s=ips + seed,
                    form=form,
                    macs=macs,
                )
            )
    records.append(example_record(trial_id(group, "full", 2), variant="full", seed=2, group=group, status="failed"))
    return records


def width_search_records(group: str = WIDTH_GROUP) -> list[dict[str, Any]]:
    """The WIDTH candidates as width-search records, speeds measured on a (made-up) GPU setup."""
    records = []
    for number, a, b, depths, groups, gmacs, params_m, top1, ips, status in WIDTH:
        feasible = status != "infeasible"
        search = {
            "study": group,
            "number": number,
            "values": [top1, gmacs] if top1 else None,
            "feasible": feasible,
            "state": "COMPLETE" if top1 else ("PRUNED" if not feasible else "FAIL"),
        }
        arch = {"a": a, "b": b, "depths": depths, "groups": groups, "grouped_layers": [2, 4] if groups > 1 else None}
        rec = example_record(
            trial_id(group, number),
            top1=top1,
            preset="custom",
            variant="full",
            seed=0,
            group=group,
            status=status,
            macs=int(gmacs * 1e9),
            params=int(params_m * 1e6),
            images_per_s=ips,
            speed=GPU_SPEED,
            arch=arch,
            search=search,
        )
        records.append(rec)
    return records


def _history(rec: dict[str, Any]) -> list[dict[str, float]]:
    """Per-epoch metrics rising to the record's final top1 (fewer epochs for failed trials)."""
    final = (rec.get("metrics") or {}).get("top1") or 50.0
    epochs = 6 if rec["status"] == "completed" else 3
    return [{"epoch": e, "train/loss": 2.0 / (e + 1), "val/top1": final - 2.0 * (5 - e)} for e in range(epochs)]


def write_sweep(root: Path, name: str, kind: str, records: list[dict], drop_result: tuple = ()) -> Path:
    """Write sweep.json and one result.json per trial (except the ids in `drop_result`); return the folder."""
    sweep = root / name
    (sweep / "trials").mkdir(parents=True, exist_ok=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": name, "kind": kind, "schema_version": 1}))
    for rec in records:
        tdir = sweep / "trials" / rec["trial_id"]
        tdir.mkdir(exist_ok=True)
        if rec["trial_id"] not in drop_result:
            (tdir / "result.json").write_text(json.dumps(rec, indent=1))
    return sweep


def write_wandb_runs(specs: list[dict[str, Any]], workdir: Path) -> None:
    """Write one real wandb offline run per spec, in a child process (see the module docstring)."""
    spec_file = workdir / "wandb_specs.json"
    spec_file.write_text(json.dumps(specs))
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_CONFIG_DIR": str(workdir / "wandb-config"),
        "WANDB_CACHE_DIR": str(workdir / "wandb-cache"),
    }
    subprocess.run([sys.executable, __file__, str(spec_file)], check=True, env=env, timeout=300)


def build_sweeps(root: Path) -> dict[str, Path]:
    """The ablation and width-search sweeps under `root`, each trial with a wandb offline run."""
    abl, width = ablation_records(), width_search_records()
    dropped = {trial_id(ABLATION_GROUP, *WANDB_ONLY)}
    paths = {
        "ablation": write_sweep(root, ABLATION_GROUP, "ablation", abl, drop_result=tuple(dropped)),
        "width": write_sweep(root, WIDTH_GROUP, "width_search", width),
    }
    specs = [
        {"dir": str(p / "trials" / r["trial_id"]), "record": r, "history": _history(r)}
        for p, recs in ((paths["ablation"], abl), (paths["width"], width))
        for r in recs
    ]
    write_wandb_runs(specs, root)
    return paths


def _write_runs(spec_file: str) -> None:
    import wandb

    settings = wandb.Settings(console="off", x_disable_stats=True, disable_git=True, save_code=False)
    for spec in json.loads(Path(spec_file).read_text()):
        rec = spec["record"]
        run = wandb.init(
            mode="offline",
            dir=spec["dir"],
            project="repvgg-search",
            id=rec["trial_id"],
            name=rec["trial_id"],
            group=rec["group"],
            tags=rec["tags"],
            config=rec["config"],
            settings=settings,
        )
        for row in spec["history"]:
            run.log(row)
        run.summary.update({k: v for k, v in rec.items() if k != "config"})
        run.finish(exit_code=0 if rec["status"] == "completed" else 1)


if __name__ == "__main__":
    _write_runs(sys.argv[1])

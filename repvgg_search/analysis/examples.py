"""Example trial records shaped like the trial runner's, built as typed records (`repvgg_search.schema`): the
fixtures of the analysis tests and benchmarks, and a picture of a record for the docs."""

from __future__ import annotations

import copy
from typing import Any

from ..schema import (
    MAC_CONVENTION,
    SCHEMA_VERSION,
    ArchBlock,
    Complexity,
    Conversion,
    Metrics,
    Search,
    Sizes,
    SpeedFigure,
    Status,
    Timings,
    TrialRecord,
    TrialSize,
    parse,
)

__all__ = ["MAC_CONVENTION", "SCHEMA_VERSION", "example_record"]

_A0 = {"a": 0.75, "b": 2.5, "depths": [1, 2, 4, 14, 1]}


def example_record(
    trial_id: str,
    *,
    top1: float | None = 97.5,
    preset: str = "a0",
    variant: str = "full",
    seed: int = 0,
    group: str | None = "example",
    status: str = "completed",
    macs: int = 1_361_513_728,
    params: int = 8_309_384,
    images_per_s: float | None = 812.3,
    speed: dict[str, Any] | None = None,
    arch: dict[str, Any] | None = None,
    form: str = "deploy",
    search: dict[str, Any] | None = None,
    data: str = "digits",
    epochs: int = 6,
) -> dict[str, Any]:
    """A record shaped like the trial runner's, as the JSON object result.json holds (for fixtures, benchmarks and
    docs); `speed`, `arch` and `search` fields are checked against the schema like any record's.

    `form="train"` writes what a non-re-parameterizable variant records: no deploy accuracy, train-form
    complexity under `complexity.deploy`, and speed measured in train form.
    """
    a = {**_A0, "preset": preset, "variant": variant, "groups": 1, "grouped_layers": None, "use_se": False}
    a.update(arch or {})
    a.update(num_classes=10, reparameterizable=form == "deploy", plain=form == "deploy")
    finished = status == "completed" and top1 is not None
    record = TrialRecord.header(trial_id=trial_id, status=Status.parse(status), group=group,
                                arch=parse(ArchBlock, a, "arch"), seed=seed, config=_config(a, seed, data, epochs))  # fmt: skip
    record.metrics = _metrics(top1, form, epochs) if finished else None
    record.complexity = _complexity(macs, params, form)
    record.speed = _speed(images_per_s, speed, form) if finished else None
    record.conversion = Conversion(converted=form == "deploy", max_abs_error=2.1e-6 if form == "deploy" else None)
    record.timings = Timings(total_s=41.2, train_s=33.0)
    record.git_commit, record.versions = "0000000", {"torch": "2.14.1"}
    record.error = None if status != "failed" else "RuntimeError: loss became NaN at epoch 3"
    record.search = parse(Search, search, "search") if search else None
    return record.to_json()


def _config(arch: dict, seed: int, data: str, epochs: int) -> dict[str, Any]:
    model = {k: arch[k] for k in ("a", "b", "depths", "groups", "grouped_layers", "use_se")}
    return {
        "model": {"name": arch["preset"], **model},
        "variant": {"name": arch["variant"]},
        "data": {"name": data, "image_size": 32},
        "train": {"name": "proxy", "epochs": epochs},
        "seed": seed,
    }


def _metrics(top1: float, form: str, epochs: int) -> Metrics:
    deploy_top1 = top1 if form == "deploy" else None
    return Metrics(top1=top1, deploy_top1=deploy_top1, loss=0.08, train_top1=min(100.0, top1 + 1.5), epochs=epochs)


def _complexity(macs: int, params: int, form: str) -> Complexity:
    # Train form carries the extra branches: about 12% more MACs and 10% more params for A0.
    train = Sizes(int(macs * 1.12), int(params * 1.10))
    deploy = Sizes(train.macs, train.params) if form == "train" else Sizes(macs, params)
    return Complexity(input_size=[3, 224, 224], convention=MAC_CONVENTION, train=train, deploy=deploy,
                      trial_size=TrialSize([3, 32, 32], Sizes(), Sizes()))  # fmt: skip


def _speed(images_per_s: float | None, speed: dict | None, form: str) -> SpeedFigure | None:
    if images_per_s is None:
        return None
    sp = {
        "form": form,
        "images_per_s": images_per_s,
        "device": "cpu",
        "device_name": "Intel(R) Xeon(R) CPU",
        "threads": 2,
        "batch_size": 32,
        "input_size": [3, 32, 32],
        "dtype": "float32",
        "channels_last": False,
        "peak_memory_mb": None,
        "latency_ms_iqr": 1.2,
    }
    sp.update(copy.deepcopy(speed or {}))
    sp.setdefault("latency_ms", round(1000.0 * sp["batch_size"] / images_per_s, 3))
    return parse(SpeedFigure, sp, "speed")

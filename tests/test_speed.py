"""Speed as a protocol: named protocols, repeated rounds with a spread bound, the caller's model untouched, one
figure per deploy architecture (cached), and the device lock that keeps timing apart from training."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repvgg_search.devices import DeviceLock
from repvgg_search.models import create_model, reparameterize_model
from repvgg_search.profile import PROTOCOLS, SpeedError, SpeedProtocol, complexity, measure, resolve_protocol
from repvgg_search.profile.figures import architecture_hash, speed_figure

CPU = torch.device("cpu")
# A short protocol for tests: small inputs, few batches.
QUICK = SpeedProtocol(name="quick", batch_size=4, input_size=32, warmup=1, iters=2, rounds=3, max_spread=10.0)


def small(variant: str = "full") -> torch.nn.Module:
    return create_model("a0", variant=variant, num_classes=10, a=0.25, b=0.25, depths=(1, 2, 2, 2, 1))


def test_named_protocols_and_auto():
    assert {"paper", "latency", "cpu", "trial_size", "fp16_cl"} <= set(PROTOCOLS)
    paper = PROTOCOLS["paper"]
    assert (paper.batch_size, paper.input_size, paper.dtype, paper.tf32) == (128, 224, "float32", False)
    assert resolve_protocol("auto", CPU) == PROTOCOLS["cpu"]
    assert resolve_protocol("auto", torch.device("cuda")) == paper  # resolving does not touch the device
    changed = resolve_protocol({"name": "auto", "batch_size": 64}, CPU)
    assert changed.name == "cpu+batch_size=64" and changed.iters == PROTOCOLS["cpu"].iters
    assert resolve_protocol({"name": "paper", "channels_last": True}, CPU).name == "paper+channels_last=true"
    assert resolve_protocol({"name": "mine", "batch_size": 2}, CPU).name == "mine"


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"dtype": "float8"}, "speed.dtype='float8' is not allowed; allowed: float32"),
        ({"batch_size": 0}, "speed.batch_size=0 must be an integer >= 1"),
        ({"iters": 0}, "speed.iters=0 must be an integer >= 1"),
        ({"warmup": -1}, "speed.warmup=-1 must be an integer >= 0"),
        ({"input_size": 8}, "speed.input_size=8 must be an integer >= 32"),
        ({"max_spread": 0.9}, "speed.max_spread=0.9 must be a finite number >= 1"),
        ({"runtime": "tensorrt"}, "speed.runtime='tensorrt' is not allowed"),
    ],
)
def test_bad_protocol_fields_name_the_field(fields, match):
    with pytest.raises(SpeedError, match=match):
        resolve_protocol({"name": "paper", **fields}, CPU)


def test_measure_records_rounds_spread_and_what_changes_the_figure():
    speed = measure(reparameterize_model(small().eval()), QUICK, CPU)
    assert speed["protocol"] == "quick" and len(speed["rounds_images_per_s"]) == 3
    assert speed["images_per_s"] == pytest.approx(sorted(speed["rounds_images_per_s"])[1], rel=1e-9)  # the median
    assert speed["spread"] == pytest.approx(max(speed["rounds_images_per_s"]) / min(speed["rounds_images_per_s"]))
    # whether a round stalled is the machine's business (rounds of ~1 ms on a shared 2-core machine): the record
    # must only say it consistently
    assert speed["reliable"] == (speed["spread"] <= QUICK.max_spread) and speed["attempts"] >= 1
    for key in ("batch_size", "input_size", "dtype", "channels_last", "threads", "torch", "device_name", "host"):
        assert speed[key] is not None, key
    assert speed["tf32"] is None and set(speed["layout_probe"]) == {"contiguous", "channels_last"}  # CPU; auto layout


def test_a_spread_above_the_bound_is_measured_again_then_marked_unreliable():
    strict = SpeedProtocol(name="strict", batch_size=2, input_size=32, warmup=0, iters=1, rounds=4, max_spread=1.0,
                           retries=2)  # fmt: skip
    speed = measure(small().eval(), strict, CPU)
    assert speed["attempts"] == 3 and not speed["reliable"] and speed["spread"] > 1.0


def test_channels_last_auto_probes_both_layouts_and_keeps_the_faster():
    speed = measure(small().eval(), SpeedProtocol(name="auto-layout", batch_size=4, input_size=32, warmup=0, iters=1,
                                                  rounds=1, channels_last=None), CPU)  # fmt: skip
    probe = speed["layout_probe"]
    assert set(probe) == {"contiguous", "channels_last"}
    assert speed["channels_last"] == (probe["channels_last"] > probe["contiguous"])


def test_measuring_never_changes_the_callers_model():
    model = small().train()
    before = {k: (v.dtype, v.device, v.is_contiguous()) for k, v in model.state_dict().items()}
    protocol = SpeedProtocol(name="x", batch_size=2, input_size=32, warmup=0, iters=1, rounds=1, dtype="bfloat16",
                             channels_last=True)  # fmt: skip
    measure(model, protocol, CPU)
    assert (
        model.training and {k: (v.dtype, v.device, v.is_contiguous()) for k, v in model.state_dict().items()} == before
    )
    model(torch.randn(2, 3, 32, 32)).sum().backward()  # no "inference tensors cannot be saved for backward"
    assert complexity(model, (3, 32, 32))["macs"] > 0


def test_identical_deploy_networks_share_one_figure(tmp_path):
    """The plain variants are one and the same deploy network: one measurement, one figure."""
    plain = [reparameterize_model(small(v).eval()) for v in ("full", "no_1x1", "post_bn")]
    assert len({architecture_hash(m) for m in plain}) == 1
    first = speed_figure(plain[0], QUICK, CPU, tmp_path, side=32)
    others = [speed_figure(m, QUICK, CPU, tmp_path, side=32) for m in plain[1:]]
    assert first.source == "measured" and all(o.source == "cached" for o in others)
    assert {o.images_per_s for o in [first, *others]} == {first.images_per_s}
    residual = reparameterize_model(small("residual_reorg").eval())
    assert speed_figure(residual, QUICK, CPU, tmp_path, side=32).key != first.key
    assert len(list(tmp_path.glob("*.json"))) == 2
    (tmp_path / f"{first.key}.json").write_text("{torn")  # a torn figure is measured again, not trusted
    assert speed_figure(plain[0], QUICK, CPU, tmp_path, side=32).source == "measured"
    assert json.loads((tmp_path / f"{first.key}.json").read_text())["key"] == first.key


HOLD = """
import sys, time, torch
from repvgg_search.devices import DeviceLock
lock = DeviceLock(torch.device("cpu"), sys.argv[1])
with getattr(lock, sys.argv[2])():
    print(time.monotonic(), flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _hold(folder: Path, mode: str, seconds: float) -> tuple[subprocess.Popen, float]:
    """Another process holding the lock for `seconds`; when it took it (the machine-wide monotonic clock)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), mode, str(seconds)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    return proc, float(proc.stdout.readline())


def test_timing_waits_for_an_epoch_in_progress_and_epochs_wait_for_timing(tmp_path):
    lock = DeviceLock(CPU, tmp_path)
    trainer, since = _hold(tmp_path, "shared", 1.5)  # an epoch in another process
    with lock.exclusive():
        held_for = time.monotonic() - since
    trainer.wait()
    assert held_for >= 1.5  # only once the other process let go, however late this one asked
    timer, since = _hold(tmp_path, "exclusive", 1.5)  # a measurement in another process
    with lock.shared():
        held_for = time.monotonic() - since
    timer.wait()
    assert held_for >= 1.5
    with lock.shared(), DeviceLock(CPU, tmp_path).shared():  # epochs run beside each other
        pass


@pytest.mark.parametrize("runtime", ["compile", "onnxruntime"])
def test_runtimes_are_part_of_the_protocol(runtime):
    """A runtime changes the figure, so it names the protocol (fronts never mix runtimes) and is recorded."""
    protocol = resolve_protocol({"name": "cpu", "runtime": runtime, "input_size": 32, "iters": 2, "rounds": 2}, CPU)
    assert protocol.name == f"cpu+input_size=32,iters=2,rounds=2,runtime={runtime}"
    net = reparameterize_model(small().eval())
    speed = measure(net, protocol, CPU)
    assert speed["runtime"] == runtime and speed["images_per_s"] > 0 and len(speed["rounds_images_per_s"]) == 2
    assert speed["protocol_fields"]["runtime"] == runtime


def test_onnxruntime_is_refused_off_the_cpu_or_off_float32():
    with pytest.raises(SpeedError, match="speed.runtime=onnxruntime runs on the CPU in float32"):
        measure(small(), resolve_protocol({"name": "cpu", "runtime": "onnxruntime", "dtype": "bfloat16"}, CPU), CPU)

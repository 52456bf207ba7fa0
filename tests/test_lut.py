"""The latency lookup table: the kernels it sums are the deploy form's, entries are measured once (per process and
across processes, under the device lock), kept as files, and predictions are their sum; bad input is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from repvgg_search.devices import DeviceLock
from repvgg_search.errors import BadInputError
from repvgg_search.models import arch_config, build_model, reparameterize_model
from repvgg_search.models.blocks import DeployBlock
from repvgg_search.profile import SpeedProtocol
from repvgg_search.profile.complexity import arch_sizes
from repvgg_search.profile.lut import (
    MAX_COPIES,
    LatencyTable,
    LayerKey,
    LutError,
    check_predictor,
    cold_copies,
    deploy_layers,
    last_level_cache_bytes,
    plain_sizes,
)

CPU = torch.device("cpu")
# A protocol just long enough to give a number: what is under test here is the bookkeeping, not the figure.
TINY = SpeedProtocol(name="tiny", batch_size=2, input_size=32, warmup=0, iters=1, rounds=1, retries=0,
                     channels_last=False, threads=1)  # fmt: skip
SMALL_ARCH = {"depths": [1, 1, 2, 1, 1], "a": 0.25, "b": 0.25, "num_classes": 10}


@pytest.fixture(autouse=True)
def own_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("REPVGG_LOCK_DIR", str(tmp_path / "locks"))  # other tests' (and users') timings stay apart


def test_deploy_layers_of_a0_and_b1g4():
    a0 = deploy_layers(arch_config("a0"), 224)
    assert len(a0) == 22 + 1 and a0[-1] == LayerKey("head", 1280, 1000, 7)
    assert a0[0] == LayerKey("conv", 3, 48, 224, 2, 1)
    assert [k.side for k in a0 if k.stride == 2] == [224, 112, 56, 28, 14]
    b1g4 = deploy_layers(arch_config("b1g4"), 224)
    assert [k.groups for k in b1g4[:-1]] == [1, 1, *[4 if i % 2 == 0 else 1 for i in range(2, 28)]]
    assert deploy_layers(arch_config("a0"), 33)[1].side == 17  # ceil(33 / 2): a 3x3 conv with padding 1


@pytest.mark.parametrize("name", ["a0", "b2g4"])
def test_deploy_layers_are_the_deploy_forms_kernels(name):
    """Hooks on the real deploy form see the same convs, in the same order, with the same input sides."""
    arch = arch_config(name, num_classes=10)
    deploy = reparameterize_model(build_model(arch).eval())
    seen = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: seen.append((mod, args[0].shape[-1])))
        for m in deploy.modules()
        if isinstance(m, DeployBlock)
    ]
    with torch.no_grad():
        deploy(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    got = [LayerKey("conv", c.in_channels, c.out_channels, s, c.stride[0], c.groups) for m, s in seen
           for c in [m.rbr_reparam]]  # fmt: skip
    assert got == deploy_layers(arch, 64)[:-1]
    assert deploy_layers(arch, 64)[-1] == LayerKey("head", deploy.linear.in_features, 10, 2)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [({"variant": "residual_reorg"}, "keeps no plain stack"), ({"variant": "relu_in_branches"}, "no plain stack"),
     ({"use_se": True}, "squeeze-excitation")],
)  # fmt: skip
def test_networks_without_a_plain_deploy_form_are_refused(overrides, why):
    with pytest.raises(LutError) as err:
        deploy_layers(arch_config("a0", **overrides), 224)
    assert why in str(err.value) and "use speed.predictor=measure" in str(err.value)


def test_unknown_predictor_is_refused():
    with pytest.raises(BadInputError, match=r"speed.predictor='model' is not allowed; allowed: measure, lut"):
        check_predictor("model")
    check_predictor("lut")


def test_prediction_is_the_sum_of_its_stored_entries(tmp_path):
    table = LatencyTable(tmp_path, TINY, CPU)
    arch = arch_config("a0", **SMALL_ARCH)
    first = table.predict(arch)
    keys = deploy_layers(arch, 32)
    assert first["entries_measured"] == len(set(keys)) == len(list(table.root.glob("*.json")))
    stored = {p.name: json.loads(p.read_text()) for p in table.root.glob("*.json")}
    total = sum(stored[k.file_name(False)]["seconds"] for k in keys)
    assert first["latency_ms"] == pytest.approx(total * 1e3) and first["images_per_s"] == pytest.approx(2 / total)
    assert sum(layer["count"] for layer in first["layers"]) == len(keys)
    head = stored[keys[-1].file_name(False)]
    assert first["overhead_ms"] == pytest.approx(head["seconds"] * 1e3) and head["layer"]["kind"] == "head"
    assert head["batch_size"] == 2 and head["threads"] == 1 and head["dtype"] == "float32"
    again = LatencyTable(tmp_path, TINY, CPU).predict(arch)  # a new handle (another worker): read, not measured
    assert again["entries_measured"] == 0 and again["images_per_s"] == pytest.approx(first["images_per_s"])
    wider = table.predict(arch_config("a0", **{**SMALL_ARCH, "b": 0.5}))  # shares all but the last stage + head
    assert wider["entries_measured"] == 2


def test_another_protocol_or_a_probed_layout_is_another_table(tmp_path):
    arch = arch_config("a0", **SMALL_ARCH)
    plain = LatencyTable(tmp_path, TINY, CPU)
    probed = LatencyTable(tmp_path, SpeedProtocol(**{**TINY.fields(), "channels_last": None}), CPU)
    assert plain.root == probed.root  # the layout is part of each entry, not of the table
    assert LatencyTable(tmp_path, SpeedProtocol(**{**TINY.fields(), "batch_size": 4}), CPU).root != plain.root
    plain.predict(arch)
    both = probed.predict(arch)
    assert both["entries_measured"] == len(set(deploy_layers(arch, 32)))  # only the channels_last ones were new
    assert set(both["layouts_ms"]) == {"contiguous", "channels_last"}
    assert both["latency_ms"] == pytest.approx(min(both["layouts_ms"].values()))


def test_a_torn_entry_is_measured_again(tmp_path):
    table = LatencyTable(tmp_path, TINY, CPU)
    arch = arch_config("a0", **SMALL_ARCH)
    table.predict(arch)
    victim = next(table.root.glob("conv-*.json"))
    victim.write_text('{"seconds": 0.0')  # a truncated file
    assert LatencyTable(tmp_path, TINY, CPU).predict(arch)["entries_measured"] == 1
    assert json.loads(victim.read_text())["seconds"] > 0


def test_entries_are_measured_with_the_device_to_themselves(tmp_path):
    """While something holds the device (a speed measurement elsewhere), filling waits for it."""
    table = LatencyTable(tmp_path, TINY, CPU)
    keys = deploy_layers(arch_config("a0", **SMALL_ARCH), 32)
    with DeviceLock(CPU).exclusive():
        worker = threading.Thread(target=table.fill, args=(keys,))
        worker.start()
        worker.join(2.0)
        assert worker.is_alive() and not list(table.root.glob("*.json"))
    worker.join(120)
    assert not worker.is_alive() and len(list(table.root.glob("*.json"))) == len(set(keys))


FILL = """
import sys, torch
from repvgg_search.models import arch_config
from repvgg_search.profile import SpeedProtocol
from repvgg_search.profile.lut import LatencyTable
p = SpeedProtocol(name="tiny", batch_size=2, input_size=32, warmup=0, iters=1, rounds=1, retries=0, channels_last=False,
                  threads=1)
arch = arch_config("a0", depths=[1, 1, 2, 1, 1], a=0.25, b=0.25, num_classes=10)
print(LatencyTable(sys.argv[1], p, torch.device("cpu")).predict(arch)["entries_measured"])
"""


@pytest.mark.slow
def test_two_processes_measure_each_entry_once(tmp_path):
    env = {**os.environ, "REPVGG_LOCK_DIR": str(tmp_path / "locks")}
    procs = [
        subprocess.Popen([sys.executable, "-c", FILL, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    counts = [int(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    distinct = len(set(deploy_layers(arch_config("a0", **SMALL_ARCH), 32)))
    assert sum(counts) == distinct and len(list(Path(tmp_path, "lut").glob("*/*.json"))) == distinct


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("a0", {}), ("b1g2", {}), ("a1", {"groups": 4}), ("b0", {"a": 0.75, "b": 1.25, "depths": (1, 2, 3, 5, 1)})],
)
def test_plain_sizes_are_fvcores_counts(name, overrides):
    """The screen's layer-by-layer count equals fvcore's count of the built deploy form, at 224 and at 32 px."""
    arch = arch_config(name, num_classes=1000, **overrides)
    for side in (224, 32):
        assert plain_sizes(arch, side) == arch_sizes(arch, side)["deploy"]


def test_entries_are_timed_with_their_weights_out_of_the_cache(tmp_path):
    """A layer timed alone would find its weights in the last-level cache; in the network they were evicted by the
    other layers' weights. An entry is timed over copies of the layer whose weights span twice that cache."""
    cache = last_level_cache_bytes(CPU)
    assert cache >= 2**20  # this machine's L3 (sysfs), or the 32 MiB fallback
    assert cold_copies(cache * 4, cache) == 1 and cold_copies(cache // 2, cache) == 4
    assert cold_copies(1, cache) == MAX_COPIES  # a tiny layer is cheap to read cold: the rotation is capped
    table = LatencyTable(tmp_path, TINY, CPU)
    key = LayerKey("conv", 64, 64, 32)
    table.fill([key])
    entry = table.entry(key, False)
    weight_bytes = (64 * 64 * 9 + 64) * 4
    assert entry["copies"] == cold_copies(weight_bytes, cache) > 1
    assert entry["copies"] == MAX_COPIES or entry["copies"] * weight_bytes >= 2 * cache

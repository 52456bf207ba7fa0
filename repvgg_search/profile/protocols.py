"""Speed protocols: everything that changes a speed figure, as a named record (conf/speed/*.yaml).

A speed figure belongs to (deploy architecture, device, protocol), not to a trial. The named protocols are the
files of `repvgg_search/conf/speed/`: `paper` (the paper's: batch 128, 224x224, fp32 with TF32 off), `latency`
(batch 1), `cpu` (a short one for CPUs), `trial_size` (the trial's own image size), `fp16_cl` (fp16,
channels_last). `auto`, the default, is `paper` on a GPU and `cpu` on the CPU, with any field changed on top.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInputError, check_int
from ..presets import changed_label, load_presets

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
RUNTIMES = ("eager", "compile", "onnxruntime")  # PyTorch eager | torch.compile (inductor) | onnxruntime CPU
PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "conf" / "speed"
AUTO = "auto"
# Fields whose null means something (the trial's side, the layout probe, every core); `paper` and `cpu` (what `auto`
# resolves to) keep SpeedProtocol's defaults for them. Every other field's null in a config is "the protocol's value".
NULLABLE = ("input_size", "channels_last", "threads")


class SpeedError(BadInputError):
    """A speed protocol field holds a value outside what is allowed."""


@dataclass(frozen=True)
class SpeedProtocol:
    """How a speed figure is measured. The defaults are the paper's protocol.

    name: the protocol's name (records and fronts group by it).
    batch_size: images per forward pass.
    input_size: square input side in pixels; null = the trial's own image size.
    dtype: float32 | float16 | bfloat16 (the model and its input are cast to it; no autocast).
    tf32: allow TF32 in cuDNN convolutions and matmuls (torch's default is on for convolutions: the paper's
        fp32 means off).
    channels_last: NHWC memory format; null = auto: a short probe of both layouts on the device keeps the faster.
    cudnn_benchmark: let cuDNN pick its fastest algorithms (CUDA).
    threads: torch CPU threads while timing; null = every core the process may use.
    warmup: untimed batches before timing.
    iters: timed batches per round.
    rounds: rounds; the figure is the median round, the spread max/min of the rounds' rates.
    max_spread: above it the measurement is repeated; still above after `retries`, it is marked unreliable.
    retries: repeats of a measurement whose spread is above `max_spread`.
    runtime: eager (PyTorch eager mode) | compile (`torch.compile`, inductor; compiled during warm-up) |
        onnxruntime (the model exported to ONNX and run by onnxruntime's CPU provider; CPU and float32 only).
    """

    name: str = "paper"
    batch_size: int = 128
    input_size: int | None = 224
    dtype: str = "float32"
    tf32: bool = False
    channels_last: bool | None = None
    cudnn_benchmark: bool = True
    threads: int | None = None
    warmup: int = 5
    iters: int = 10
    rounds: int = 5
    max_spread: float = 1.10
    retries: int = 2
    runtime: str = "eager"

    def __post_init__(self) -> None:
        _validate(self)

    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _validate(p: SpeedProtocol) -> None:
    for key in ("batch_size", "iters", "rounds"):
        check_int(getattr(p, key), f"speed.{key}", 1, error=SpeedError)
    for key in ("warmup", "retries"):
        check_int(getattr(p, key), f"speed.{key}", 0, error=SpeedError)
    if p.threads is not None:
        check_int(p.threads, "speed.threads", 1, error=SpeedError)
    if p.input_size is not None:
        check_int(p.input_size, "speed.input_size", 32, "five stride-2 stages need at least 32 px; or null", SpeedError)
    if p.dtype not in DTYPES:
        raise SpeedError(f"speed.dtype={p.dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
    if p.runtime not in RUNTIMES:
        raise SpeedError(f"speed.runtime={p.runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")
    spread = p.max_spread
    if isinstance(spread, bool) or not isinstance(spread, int | float) or not math.isfinite(spread) or spread < 1:
        raise SpeedError(f"speed.max_spread={spread!r} must be a finite number >= 1 (max/min of the rounds' rates)")
    for key in ("tf32", "cudnn_benchmark"):
        if not isinstance(getattr(p, key), bool):
            raise SpeedError(f"speed.{key}={getattr(p, key)!r} must be true or false")


PROTOCOLS: Mapping[str, SpeedProtocol] = load_presets(PROTOCOL_DIR, lambda fields: SpeedProtocol(**fields), skip=[AUTO])


PREDICTOR_KEY = "predictor"  # the one key of a `speed:` config node that is not a protocol field


def resolve_protocol(value: str | Mapping[str, Any] | SpeedProtocol, device: torch.device) -> SpeedProtocol:
    """The protocol a config gives: `auto` is `paper` on CUDA and `cpu` on the CPU; a named protocol with fields
    changed keeps the changes and says so in its name (`cpu+batch_size=64`); a new name needs its own fields."""
    if isinstance(value, SpeedProtocol):
        return value
    fields = {"name": value} if isinstance(value, str) else dict(value)
    fields.pop(PREDICTOR_KEY, None)  # how a figure is obtained (speed.predictor), not how it is measured
    # A field whose null means nothing is unset (the config node's default): the protocol's value applies.
    fields = {k: v for k, v in fields.items() if v is not None or k in NULLABLE}
    name = fields.get("name", AUTO)
    if name == AUTO:  # every field given is a change, but the node's nullable ones left at their (shared) defaults
        name = "paper" if device.type == "cuda" else "cpu"
        fields = {
            k: v for k, v in fields.items() if k != "name" and (k not in NULLABLE or v != getattr(SpeedProtocol(), k))
        }
        fields["name"] = name
    protocol = SpeedProtocol(**{**(PROTOCOLS[name].fields() if name in PROTOCOLS else {}), **fields})
    if name in PROTOCOLS and protocol != PROTOCOLS[name]:  # a named protocol with changes is another protocol
        changed = {k: v for k, v in protocol.fields().items() if v != getattr(PROTOCOLS[name], k)}
        protocol = dataclasses.replace(protocol, name=changed_label(name, changed))
    return protocol


def list_protocols() -> list[str]:
    return [AUTO, *PROTOCOLS]

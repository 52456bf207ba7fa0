"""Quantization protocols: everything that changes an INT8 figure, as a named record (conf/quant/*.yaml).

Like a speed protocol (profile/protocols.py), a quantization protocol is data: the named ones are the files of
`repvgg_search/conf/quant/`: `ort_qdq` (onnxruntime's static QDQ recipe for x86 CPUs, corrected: `reduce_range`
where the CPU lacks VNNI/AMX, the classifier kept in float), `symmetric` (TensorRT-style: int8 symmetric
activations and weights, entropy calibration) and `ort_legacy` (what this project ran before issue 19, kept so its
effect can be measured). A named protocol with fields changed is renamed by its changes (`ort_qdq+calibrate=entropy`).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import BadInputError, check_int

PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "conf" / "quant"
INT_TYPES = ("uint8", "int8")
CALIBRATIONS = ("minmax", "entropy", "percentile")
REDUCE_RANGE = ("auto", "true", "false")
KEEP_FLOAT_ROLES = ("classifier", "stem")  # besides these, a deploy layer's module name (`stage4.0.rbr_reparam`)
CPUINFO = Path("/proc/cpuinfo")
# x86 flags of the instructions that accumulate u8 x s8 products in int32 without an int16 intermediate
# (AVX512-VNNI, AVX-VNNI, AMX-INT8): with them onnxruntime's u8s8 kernels do not saturate.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class QuantError(BadInputError):
    """A quantization setting outside what is allowed."""


@dataclass(frozen=True)
class QuantProtocol:
    """How an INT8 model is made from a float ONNX model (onnxruntime static quantization, QDQ format). The
    defaults are `ort_qdq`'s.

    name: the protocol's name (records and tables group by it).
    activation_type: uint8 | int8: the activations' integer type.
    activation_symmetric: zero point 0 and a range symmetric about 0 (onnxruntime's ActivationSymmetric; int8 only).
    weight_type: int8 | uint8: the weights' integer type.
    weight_symmetric: symmetric weight ranges (onnxruntime's WeightSymmetric; its default).
    per_channel: a weight scale per output channel (else one per tensor).
    reduce_range: auto | true | false: 7-bit weights, so that onnxruntime's u8s8 kernels cannot saturate their int16
        intermediate sums on x86 CPUs without VNNI (onnxruntime's documented advice); auto = on exactly where
        /proc/cpuinfo shows an x86 CPU without VNNI/AMX (or cannot be read). The record says what was used.
    calibrate: minmax | entropy | percentile: how activation ranges are set from the calibration images.
    percentile: the percentile kept by `percentile` calibration (onnxruntime's default 99.999).
    histogram_bins: bins of the calibration histogram (entropy, percentile; TensorRT's entropy calibrator uses
        2048; onnxruntime's own entropy default, 128, leaves a single candidate threshold: the full range).
    calib_images: training images that set the activation ranges (evaluation transform, a fixed seeded choice).
    calib_batch_size: images per calibration batch (a histogram's bins grow with the batches it sees).
    keep_float: what stays float32: `classifier` (the last linear layer, so the logits are not quantized and top
        scores cannot tie), `stem` (the first conv), or deploy layers by module name (`stage4.0.rbr_reparam`).
    """

    name: str = "ort_qdq"
    activation_type: str = "uint8"
    activation_symmetric: bool = False
    weight_type: str = "int8"
    weight_symmetric: bool = True
    per_channel: bool = True
    reduce_range: str = "auto"
    calibrate: str = "minmax"
    percentile: float = 99.999
    histogram_bins: int = 2048
    calib_images: int = 256
    calib_batch_size: int = 32
    keep_float: tuple[str, ...] = ("classifier",)

    def __post_init__(self) -> None:
        # canonical forms, so that `reduce_range: true` (YAML bool) and "True" (OmegaConf str) name one protocol
        object.__setattr__(self, "reduce_range", str(self.reduce_range).lower())
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        validate_protocol(self)

    def fields(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["keep_float"] = list(self.keep_float)
        return out


def validate_protocol(p: QuantProtocol) -> None:
    """Refuse a field outside what is allowed, naming it as a config key (`quant.<field>`) and the allowed values."""
    for key, allowed in (("activation_type", INT_TYPES), ("weight_type", INT_TYPES), ("calibrate", CALIBRATIONS),
                         ("reduce_range", REDUCE_RANGE)):  # fmt: skip
        if getattr(p, key) not in allowed:
            raise QuantError(f"quant.{key}={getattr(p, key)!r} is unknown; allowed: {', '.join(allowed)}")
    for key in ("activation_symmetric", "weight_symmetric", "per_channel"):
        if not isinstance(getattr(p, key), bool):
            raise QuantError(f"quant.{key}={getattr(p, key)!r} must be true or false")
    if p.activation_symmetric and p.activation_type != "int8":
        raise QuantError("quant.activation_symmetric=true needs quant.activation_type=int8 (a uint8 symmetric range "
                         "would waste its zero point); allowed: activation_type=int8, or activation_symmetric=false")  # fmt: skip
    check_int(p.calib_images, "quant.calib_images", 1, error=QuantError)
    check_int(p.calib_batch_size, "quant.calib_batch_size", 1, error=QuantError)
    check_int(p.histogram_bins, "quant.histogram_bins", 256, "histogram calibration needs bins to search", QuantError)
    pct = p.percentile
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not math.isfinite(pct) or not 50 < pct <= 100:
        raise QuantError(f"quant.percentile={pct!r} must be a number in (50, 100]")
    for item in p.keep_float:
        if not isinstance(item, str) or not item:
            raise QuantError(f"quant.keep_float holds {item!r}; allowed: {', '.join(KEEP_FLOAT_ROLES)} or a deploy "
                             "layer's module name (e.g. stage4.0.rbr_reparam)")  # fmt: skip


def _load() -> dict[str, QuantProtocol]:
    out = {}
    for path in sorted(PROTOCOL_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        # `protocol:` is the file's key in the trial config (`quant.protocol`, the Hydra group merges the file into
        # `quant`); it is the protocol's name, which is the file's name
        name = data.pop("protocol", path.stem)
        if name != path.stem:
            raise QuantError(f"{path}: protocol: {name!r} must be the file's name, {path.stem!r}")
        out[path.stem] = QuantProtocol(name=name, **data)
    return out


PROTOCOLS: Mapping[str, QuantProtocol] = _load()
DEFAULT = "ort_qdq"


def resolve_quant_protocol(value: str | Mapping[str, Any] | QuantProtocol) -> QuantProtocol:
    """The protocol a config gives: a name, or a mapping of fields. A named protocol with fields changed keeps the
    changes and says so in its name (`ort_qdq+calibrate=entropy`); an unknown name needs all its own fields."""
    if isinstance(value, QuantProtocol):
        return value
    fields = parse_label(value) if isinstance(value, str) else dict(value)
    name = fields.get("name", DEFAULT)
    if "keep_float" in fields and fields["keep_float"] is not None:
        fields["keep_float"] = tuple(fields["keep_float"])
    if name not in PROTOCOLS and set(fields) == {"name"}:
        raise QuantError(f"quant.name={name!r} is not a named protocol; allowed: {', '.join(PROTOCOLS)}")
    try:
        protocol = QuantProtocol(**{**(PROTOCOLS[name].fields() if name in PROTOCOLS else {}), **fields})
    except TypeError as err:  # an unknown field
        allowed = ", ".join(f.name for f in dataclasses.fields(QuantProtocol))
        raise QuantError(f"quant: {err}; fields: {allowed}") from None
    if name in PROTOCOLS and protocol != PROTOCOLS[name]:  # a named protocol with changes is another protocol
        base = PROTOCOLS[name]
        changed = [k for k, v in protocol.fields().items() if k != "name" and v != base.fields()[k]]
        label = ",".join(f"{k}={_show(getattr(protocol, k))}" for k in changed)
        protocol = dataclasses.replace(protocol, name=f"{name}+{label}")
    return protocol


def parse_label(label: str) -> dict[str, Any]:
    """The fields a protocol label names: `ort_qdq` or `ort_qdq+reduce_range=true,keep_float=[classifier,stem]`
    (the form `resolve_quant_protocol` names a changed protocol by), values read as YAML."""
    name, _, changes = label.partition("+")
    fields: dict[str, Any] = {"name": name}
    for part in re.split(r",(?=\w+=)", changes) if changes else []:
        key, eq, text = part.partition("=")
        if not eq:
            raise QuantError(f"quant protocol {label!r}: {part!r} is not field=value")
        fields[key] = yaml.safe_load(text)
    return fields


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(value) + "]"
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def list_quant_protocols() -> list[str]:
    """The named protocols (conf/quant/*.yaml)."""
    return list(PROTOCOLS)


def protocol_of_config(quant: Any) -> QuantProtocol:
    """The protocol a trial's `quant` config gives (typed QuantConfig or a mapping): the protocol `quant.protocol`
    names with the fields set there (null = the named protocol's value), refused by key before any work."""
    get = quant.get if isinstance(quant, Mapping) else lambda k, d=None: getattr(quant, k, d)
    name = get("protocol", DEFAULT)
    if name not in PROTOCOLS:
        raise QuantError(f"quant.protocol={name!r} is unknown; allowed: {', '.join(PROTOCOLS)}")
    fields = {f.name: get(f.name) for f in dataclasses.fields(QuantProtocol) if f.name != "name"}
    return resolve_quant_protocol({"name": name, **{k: v for k, v in fields.items() if v is not None}})


def cpu_int8(cpuinfo: str | None = None, machine: str | None = None) -> dict[str, Any]:
    """What the CPU offers onnxruntime's INT8 kernels: its architecture, whether /proc/cpuinfo could be read, and
    which VNNI/AMX flags it lists (`cpuinfo`, `machine`: given text and architecture instead of this machine's)."""
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            cpuinfo = None
    flags: set[str] = set()
    model = None
    for line in (cpuinfo or "").splitlines():
        key, _, rest = line.partition(":")
        if key.strip() in ("flags", "Features") and not flags:
            flags = set(rest.split())
        elif key.strip() == "model name" and model is None:
            model = rest.strip()
    x86 = machine in ("x86_64", "amd64", "i686", "i386")
    return {"machine": machine, "model": model, "cpuinfo_read": cpuinfo is not None, "x86": x86,
            "vnni": sorted(flags & set(VNNI_FLAGS))}  # fmt: skip


def reduce_range_used(setting: str, cpu: Mapping[str, Any]) -> bool:
    """The reduce_range a protocol's setting means on `cpu` (see `cpu_int8`): `auto` is on for an x86 CPU without
    VNNI/AMX, or an x86 CPU whose flags could not be read (7-bit weights cannot saturate); off on VNNI/AMX CPUs and
    on other architectures (ARM's int8 dot products accumulate in int32; onnxruntime advises reduce_range off)."""
    if setting in ("true", "false"):
        return setting == "true"
    if not cpu["x86"]:
        return False
    return not cpu["cpuinfo_read"] or not cpu["vnni"]

"""Hydra schemas (dataclasses registered in the ConfigStore) and their conversion to plain objects at the edge.

Schema in Python, values in YAML: every field and its default is defined here once; files under `conf/` hold only
what differs. Modules never see a DictConfig: entry points call `to_arch(cfg)` and friends.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .data import DataConfig
from .models import ArchConfig, BlockSpec, arch_config
from .profile.protocols import NULLABLE, SpeedProtocol
from .tracking import TrackingConfig
from .training import TrainConfig

# The config tree ships inside the package, so an installed wheel runs from any directory.
CONF_DIR = Path(__file__).resolve().parent / "conf"


@dataclass
class ModelConfig:
    """Which architecture to build. `name` picks a preset; every other field, when set, overrides the preset's."""

    name: str = "a0"  # preset: a0 a1 a2 b0 b1 b1g2 b1g4 b2 b2g2 b2g4 b3 b3g2 b3g4 d2se
    a: float | None = None  # width multiplier of stages 1-3 (stage widths 64a, 128a, 256a); > 0
    b: float | None = None  # width multiplier of the last stage (512b channels); > 0
    depths: list[int] | None = None  # layers per stage, 5 positive ints, e.g. [1, 2, 4, 14, 1]
    groups: int | None = None  # groups of the grouped convs; must divide their channels
    grouped_layers: list[int] | None = None  # 0-based layer indices to group (stem excluded); null: paper rule
    use_se: bool | None = None  # squeeze-excitation after each block's branch sum


def _mutable_schema(spec: type, schema_name: str, doc: str, extra=(), **defaults: Any) -> type:
    """A Hydra schema for a frozen dataclass: the same fields and defaults (or `defaults`), tuples as lists, and
    `extra` fields (name, type, default) that are not the spec's."""
    fields, hints = [], typing.get_type_hints(spec)
    for f in dataclasses.fields(spec):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = defaults.get(f.name, default)
        if isinstance(default, tuple):
            fields.append((f.name, list[str], field(default_factory=lambda d=default: list(d))))
        else:
            kind = hints[f.name] if default is not None else hints[f.name] | None
            fields.append((f.name, kind, field(default=default)))
    fields += [(name, kind, field(default=default)) for name, kind, default in extra]
    return dataclasses.make_dataclass(schema_name, fields, namespace={"__doc__": doc})


# The block variant: `variant=<name>` picks a file of conf/variant/, `variant.<field>=...` changes a field. Every
# field, its meaning and its default (RepVGG's own block) is documented once, on BlockSpec.
VariantConfig = _mutable_schema(BlockSpec, "VariantConfig", "The block design (fields: see models.BlockSpec).")


def to_arch(model: ModelConfig | DictConfig, variant: VariantConfig | DictConfig, num_classes: int) -> ArchConfig:
    """The validated `ArchConfig` a model/variant config pair describes (raises ArchError on bad values)."""
    overrides = {
        k: (tuple(v) if isinstance(v, list | tuple) or OmegaConf.is_list(v) else v)
        for k, v in plain_dict(model).items()
        if k != "name" and v is not None
    }
    return arch_config(plain_dict(model)["name"], variant=plain_dict(variant), num_classes=num_classes, **overrides)


def plain_dict(node: Any) -> dict:
    """A config node (DictConfig, dataclass or mapping) as a plain dict."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if hasattr(node, "__dataclass_fields__"):
        return dict(vars(node))
    return dict(node)


# The speed protocol: `speed=<name>` picks a file of conf/speed/ (auto: paper on a GPU, cpu on the CPU),
# `speed.<field>=...` changes a field. Every field, its meaning and its default is documented on SpeedProtocol.
# Fields other than input_size, channels_last and threads (whose null means something) are null here: "the
# protocol's value", so `speed.iters=10` on the CPU is a change of `cpu` even though 10 is `paper`'s value.
# One more key is not part of the protocol: `speed.predictor` = measure (time the whole deploy form) | lut (predict it
# from per-layer latencies kept in the speed folder: profile/lut.py).
UNSET_SPEED_FIELDS = {f.name: None for f in dataclasses.fields(SpeedProtocol) if f.name not in ("name", *NULLABLE)}
SpeedConfig = _mutable_schema(
    SpeedProtocol, "SpeedConfig", "The speed protocol (fields: profile.SpeedProtocol).", name="auto",
    extra=[("predictor", str, "measure")], **UNSET_SPEED_FIELDS,
)  # fmt: skip


@dataclass
class ProfileConfig:
    """`python -m repvgg_search.profile`: complexity, speed and equivalence of train vs deploy form."""

    model: ModelConfig = field(default_factory=ModelConfig)
    variant: VariantConfig = field(default_factory=VariantConfig)
    num_classes: int = 1000  # classifier outputs (the ImageNet head by default, as in the paper's counts)
    device: str = "auto"  # auto (cuda when visible, else cpu) | cpu | cuda | cuda:N
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    all_presets: bool = False  # profile every preset (model.name is ignored, other model fields apply)
    checkpoint: str | None = None  # train-form weights to load first (authors' naming accepted)
    seed: int = 0  # seeds weight init and the equivalence-check input


@dataclass
class GateConfig:
    """The conversion gate of a trial: a check of the deploy form, not part of what the trial is (not in its id)."""

    max_rel_error: float = 1e-4  # bound on max|y_train - y_deploy| / max|y_train| over the gate's images
    dtype: str = "float32"  # float32 (TF32 off, no autocast) | float64 (copies of both forms)
    images: int = 256  # the first validation images compared (a fixed set: the loader's order)


@dataclass
class QuantConfig:
    """INT8 post-training quantization of the measured form (onnxruntime, static, on the CPU): a measurement of the
    trial, not part of what it is (not in its id). `quant=<name>` picks a protocol file of conf/quant/; the protocol's
    fields (meaning, allowed values: deploy.quant_protocols.QuantProtocol) are null here = the named protocol's
    value; one set on the command line changes the protocol and renames it (`ort_qdq+calibrate=entropy`)."""

    ptq: bool = False  # quantize after training; records quant.int8_top1, quant.drop and the INT8 speed
    protocol: str = "ort_qdq"  # the named protocol: ort_qdq | symmetric | ort_legacy (conf/quant/<name>.yaml)
    activation_type: str | None = None  # uint8 | int8
    activation_symmetric: bool | None = None  # zero point 0 (int8 activations only)
    weight_type: str | None = None  # int8 | uint8
    weight_symmetric: bool | None = None
    per_channel: bool | None = None  # a weight scale per output channel (else one per tensor)
    reduce_range: str | None = None  # auto (on where the CPU lacks VNNI/AMX) | true | false
    calibrate: str | None = None  # activation range calibration: minmax | entropy | percentile
    percentile: float | None = None  # kept by percentile calibration, in (50, 100]
    histogram_bins: int | None = None  # bins of the entropy/percentile histogram, >= 256
    calib_images: int | None = None  # training images (evaluation transform, a fixed seeded choice) that set ranges
    calib_batch_size: int | None = None
    keep_float: list[str] | None = None  # layers kept float32: classifier | stem | a deploy layer's module name
    layer_images: int = 64  # validation images of the per-layer sensitivity (quant.layers); 0 = none
    reference: bool = True  # the exact float64 simulation of the INT8 graph (quant.reference_top1, runtime_gap)
    reference_device: str = "cpu"  # where the simulation runs: cpu | cuda | cuda:N | auto
    speed: str = "cpu"  # speed protocol of the INT8 and float figures (runtime onnxruntime); none = no figures


@dataclass
class TrialConfig:
    """`python -m repvgg_search.train`: one candidate trained, evaluated, converted, profiled and recorded."""

    model: ModelConfig = field(default_factory=ModelConfig)
    variant: VariantConfig = field(default_factory=VariantConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)  # the protocol of the deploy form's speed figure
    gate: GateConfig = field(default_factory=GateConfig)  # the conversion check
    quant: QuantConfig = field(default_factory=QuantConfig)  # INT8 post-training quantization (off by default)
    seed: int = 0  # seeds weight init, data order and augmentation
    device: str = "auto"  # auto (cuda when visible, else cpu) | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads of this trial; null = torch's default (all cores)
    keep_checkpoint: str = "deploy"  # what a completed trial keeps: all (training checkpoint + deploy weights) |
    #   deploy (deploy.pt only) | none (records only). Applied once the trial is recorded completed
    output_dir: str | None = None  # trial folder; null = outputs/trials/<preset>-<variant>-s<seed>-<trial id>
    speed_dir: str | None = None  # where speed figures are kept, one per (deploy architecture, device, protocol);
    #   null = <trial folder>/speed. A sweep points all its trials at <sweep folder>/speed


def register_configs() -> None:
    """Register the schemas so that conf/*.yaml merge onto typed, validated nodes."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="profile_schema", node=ProfileConfig)
    cs.store(name="train_schema", node=TrialConfig)


# Every primary config under conf/ and the module whose `validate(cfg)` checks it (tests compose them all).
ENTRY_POINTS = {
    "profile": "repvgg_search.profile.cli",
    "train": "repvgg_search.trial",
    "sweep": "repvgg_search.sweep.cli",
}

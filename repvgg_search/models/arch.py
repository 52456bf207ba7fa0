"""Architecture description: a frozen dataclass, the paper's presets as data, and their validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import ArchError
from .variants import NUM_STAGES, BlockSpec, variant_spec

DEPTHS_A = (1, 2, 4, 14, 1)
DEPTHS_B = (1, 4, 6, 16, 1)


@dataclass(frozen=True)
class ArchConfig:
    """One RepVGG architecture.

    depths: layers per stage, 5 stages; the first layer of every stage has stride 2.
    a, b: width multipliers; stage widths are [min(64, 64a), 64a, 128a, 256a, 512b] (truncated to int).
    groups: groups of the grouped 3x3 (and matching 1x1) convs; 1 means no grouped layer.
    grouped_layers: 0-based layer indices (the stem is layer 0 and is never grouped) that use `groups`;
        None means the paper's rule: every even index from 2 on (the 3rd, 5th, ... layer).
    variant: the block design: a `BlockSpec`, or a named variant (see `list_variants()`), or its fields.
    num_classes: classifier outputs.
    use_se: squeeze-excitation after the branch sum (as in the authors' D2se), reduction 16.
    in_channels: input image channels.
    """

    depths: tuple[int, ...] = DEPTHS_A
    a: float = 0.75
    b: float = 2.5
    groups: int = 1
    grouped_layers: tuple[int, ...] | None = None
    variant: BlockSpec = field(default_factory=BlockSpec)
    num_classes: int = 1000
    use_se: bool = False
    in_channels: int = 3

    def __post_init__(self) -> None:
        # Accept lists (Hydra, JSON) and a variant's name or fields, but store tuples and a BlockSpec: hashable.
        object.__setattr__(self, "depths", _as_int_tuple("depths", self.depths))
        object.__setattr__(self, "variant", variant_spec(self.variant))
        if self.grouped_layers is not None:
            object.__setattr__(self, "grouped_layers", _as_int_tuple("grouped_layers", self.grouped_layers))
        validate(self)

    @property
    def widths(self) -> tuple[int, ...]:
        """Output channels of the five stages."""
        a, b = self.a, self.b
        return (min(64, int(64 * a)), int(64 * a), int(128 * a), int(256 * a), int(512 * b))

    @property
    def reparameterizable(self) -> bool:
        """Whether the variant fuses into a deploy form (see `reparameterize_model`)."""
        return self.variant.reparameterizable

    @property
    def plain(self) -> bool:
        """Whether the deploy form is a plain stack of 3x3 conv (with bias) + ReLU."""
        return self.variant.plain

    def identity(self) -> dict:
        """What determines the network, as plain values (trial ids hash it): a named variant enters by its name,
        any other block design by its structure."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "variant"}
        out["variant"] = self.variant.name if self.variant.registered else self.variant.structure()
        return out

    @property
    def num_layers(self) -> int:
        """Conv layers in the body (the stem included, the classifier excluded)."""
        return sum(self.depths)

    def layer_groups(self) -> list[int]:
        """Groups of every layer, indexed like `grouped_layers`."""
        chosen = default_grouped_layers(self.num_layers) if self.grouped_layers is None else self.grouped_layers
        chosen = set(chosen) if self.groups > 1 else set()
        return [self.groups if i in chosen else 1 for i in range(self.num_layers)]

    def layer_channels(self) -> list[tuple[int, int, int]]:
        """(in_channels, out_channels, stride) of every layer, in order."""
        out, cin = [], self.in_channels
        for depth, width in zip(self.depths, self.widths):
            for j in range(depth):
                out.append((cin, width, 2 if j == 0 else 1))
                cin = width
        return out

    def replace(self, **overrides) -> ArchConfig:
        """A copy with some fields replaced (validated again)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            allowed = ", ".join(f.name for f in dataclasses.fields(self))
            raise ArchError(f"unknown architecture field(s) {unknown}; allowed fields: {allowed}")
        return dataclasses.replace(self, **overrides)


def default_grouped_layers(num_layers: int) -> tuple[int, ...]:
    """The paper's rule: groupwise convs on the 3rd, 5th, 7th, ... layer (0-based 2, 4, 6, ...)."""
    return tuple(range(2, num_layers, 2))


def _as_int_tuple(name: str, value) -> tuple[int, ...]:
    try:
        items = tuple(value)
    except TypeError:
        raise ArchError(f"{name} must be a sequence of integers, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ArchError(f"{name} must hold integers, got {list(items)!r}")
    return items


def validate(cfg: ArchConfig) -> None:
    """Raise `ArchError` naming the field and the allowed values when `cfg` is not a buildable architecture."""
    if len(cfg.depths) != NUM_STAGES or any(d < 1 for d in cfg.depths):
        raise ArchError(f"depths must be {NUM_STAGES} positive integers (one per stage), got {list(cfg.depths)}")
    for name in ("a", "b"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ArchError(f"width multiplier {name} must be a finite number > 0, got {value!r}")
    if any(w < 1 for w in cfg.widths):
        raise ArchError(f"width multipliers a={cfg.a}, b={cfg.b} give a stage with no channels: widths {cfg.widths}")
    if isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, int) or cfg.num_classes < 1:
        raise ArchError(f"num_classes must be an integer >= 1, got {cfg.num_classes!r}")
    if not isinstance(cfg.use_se, bool):
        raise ArchError(f"use_se must be true or false, got {cfg.use_se!r}")
    if not isinstance(cfg.in_channels, int) or cfg.in_channels < 1:
        raise ArchError(f"in_channels must be an integer >= 1, got {cfg.in_channels!r}")
    if isinstance(cfg.groups, bool) or not isinstance(cfg.groups, int) or cfg.groups < 1:
        raise ArchError(f"groups must be an integer >= 1, got {cfg.groups!r}")
    _validate_grouping(cfg)
    cfg.variant.check_depths(cfg.depths)


def _validate_grouping(cfg: ArchConfig) -> None:
    n = cfg.num_layers
    if cfg.grouped_layers is not None:
        bad = [i for i in cfg.grouped_layers if not 1 <= i < n]
        if bad:
            raise ArchError(
                f"grouped_layers {bad} out of range: allowed layer indices are 1..{n - 1} "
                f"(0-based, the stem is layer 0 and is never grouped; this architecture has {n} layers)"
            )
    for i, ((cin, cout, _), g) in enumerate(zip(cfg.layer_channels(), cfg.layer_groups())):
        if cin % g or cout % g:
            raise ArchError(
                f"groups={g} does not divide the channels of grouped layer {i} ({cin} in, {cout} out); "
                f"allowed groups there: divisors of gcd({cin}, {cout}) = {math.gcd(cin, cout)}"
            )


@dataclass(frozen=True)
class Preset:
    """A named architecture from the paper (Table 2 and the groupwise rule)."""

    depths: tuple[int, ...]
    a: float
    b: float
    groups: int = 1
    use_se: bool = False


PRESETS: dict[str, Preset] = {
    "a0": Preset(DEPTHS_A, 0.75, 2.5),
    "a1": Preset(DEPTHS_A, 1.0, 2.5),
    "a2": Preset(DEPTHS_A, 1.5, 2.75),
    "b0": Preset(DEPTHS_B, 1.0, 2.5),
    "b1": Preset(DEPTHS_B, 2.0, 4.0),
    "b1g2": Preset(DEPTHS_B, 2.0, 4.0, groups=2),
    "b1g4": Preset(DEPTHS_B, 2.0, 4.0, groups=4),
    "b2": Preset(DEPTHS_B, 2.5, 5.0),
    "b2g2": Preset(DEPTHS_B, 2.5, 5.0, groups=2),
    "b2g4": Preset(DEPTHS_B, 2.5, 5.0, groups=4),
    "b3": Preset(DEPTHS_B, 3.0, 5.0),
    "b3g2": Preset(DEPTHS_B, 3.0, 5.0, groups=2),
    "b3g4": Preset(DEPTHS_B, 3.0, 5.0, groups=4),
    # The authors' later SE model (not in the CVPR tables): stages of 8/14/24/1 blocks, 320 px training.
    "d2se": Preset((1, 8, 14, 24, 1), 2.5, 5.0, use_se=True),
}


def list_models() -> list[str]:
    """Names of the presets."""
    return list(PRESETS)


def arch_config(name: str, **overrides) -> ArchConfig:
    """The `ArchConfig` of preset `name`, with `overrides` replacing its fields."""
    if name not in PRESETS:
        raise ArchError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    p = PRESETS[name]
    base = {"depths": p.depths, "a": p.a, "b": p.b, "groups": p.groups, "use_se": p.use_se}
    fields = {f.name for f in dataclasses.fields(ArchConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ArchError(f"unknown architecture field(s) {unknown}; allowed fields: {', '.join(sorted(fields))}")
    return ArchConfig(**{**base, **overrides})

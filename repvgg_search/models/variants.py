"""Block variants as data: a record of what a block is made of, and the named ones (conf/variant/*.yaml).

A `BlockSpec` says which branches a block sums (3x3, 1x1, 1x3, 3x1 convs and the identity), which of them carry
their own BN, whether one BN follows the addition, whether a ReLU sits inside each branch, the form of the 3x3
kernel, and which kind of block each of the five stages uses. The builder and the fusion read only this record,
so a new block design that combines existing parts is a YAML file, not code. The paper's ablation variants
(Tables 6 and 7) and QARepVGG's block are the files in `repvgg_search/conf/variant/`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import check_slug
from ..presets import changed_label, load_presets
from .errors import ArchError

BRANCHES = ("3x3", "1x1", "1x3", "3x1", "identity")  # in the order a block sums them
CONV_BRANCHES = ("3x3", "1x1", "1x3", "3x1")
KERNELS = ("plain", "dirac", "trivial")  # 3x3 kernel: W; diag(a) I + diag(b) W/||W|| (DiracNet); I + W
# Stage block kinds a layout may name: rep (one multi-branch block per layer), residual (2-layer residual blocks),
# and any kind added with models.repvgg.register_stage_block (which appends here: one list of names, one of builders).
STAGE_BLOCKS = ["rep", "residual"]
NUM_STAGES = 5
VARIANT_DIR = Path(__file__).resolve().parents[1] / "conf" / "variant"
METADATA = ("table", "description")  # describe a design; not part of what it computes


@dataclass(frozen=True)
class BlockSpec:
    """One block design. The defaults are RepVGG's own block (`full`).

    name: the design's name in configs, records and plots.
    branches: the branches summed, from 3x3, 1x1, 1x3, 3x1, identity; the identity exists only where input and
        output shapes match (stride 1, same channels), as in the paper.
    bn: the branches that carry their own BN (a subset of `branches`); the others are a bare conv (or identity).
    post_bn: one BN after the addition (the paper's "post-addition BN"; QARepVGG's block).
    relu_in_branches: a ReLU after each branch, before the addition (cannot be fused into one conv).
    kernel: the 3x3 branch's kernel: plain W, dirac (diag(a) I + diag(b) W/||W||), or trivial (I + W).
    layout: the block of each of the 5 stages: rep (one block per layer, built from the fields above) or residual
        (pairs of 3x3 conv-BN layers with a shortcut, ResNet-style; the stage's depth must be even).
    table: the paper table the design comes from (6 or 7), or null.
    description: what the block computes, in the paper's terms.
    """

    name: str = "full"
    branches: tuple[str, ...] = ("3x3", "1x1", "identity")
    bn: tuple[str, ...] = ("3x3", "1x1", "identity")
    post_bn: bool = False
    relu_in_branches: bool = False
    kernel: str = "plain"
    layout: tuple[str, ...] = ("rep",) * NUM_STAGES
    table: int | None = field(default=None, compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("branches", "bn", "layout"):  # lists from YAML or Hydra; stored as tuples (hashable)
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ArchError(f"variant.{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        _validate(self)

    @property
    def reparameterizable(self) -> bool:
        """Whether the block fuses into one conv (or, with residual stages, into conv+bias layers)."""
        return not self.relu_in_branches

    @property
    def why_not_reparameterizable(self) -> str:
        return "a ReLU inside the branches makes their sum non-linear, so no single conv equals it"

    @property
    def plain(self) -> bool:
        """Whether the deploy form is a plain stack of 3x3 conv (with bias) + ReLU."""
        return self.reparameterizable and all(kind == "rep" for kind in self.layout)

    def structure(self) -> dict[str, Any]:
        """What the block computes (every field but its name and descriptions), as plain JSON values."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
            if f.name not in ("name", *METADATA)
        }

    def to_config(self) -> dict[str, Any]:
        """Every field as plain values (a `variant:` config node)."""
        return {"name": self.name, **self.structure(), "table": self.table, "description": self.description}

    @property
    def registered(self) -> bool:
        """Whether this is exactly the named variant of the same name."""
        known = VARIANTS.get(self.name)
        return known is not None and known == self

    @property
    def label(self) -> str:
        """The name, or for a named variant with some fields changed, the name and the changes:
        `full+post_bn=true`. Records, tables and plots use it."""
        known = VARIANTS.get(self.name)
        if known is None or known == self:
            return self.name
        theirs, ours = known.structure(), self.structure()
        return changed_label(self.name, {k: v for k, v in ours.items() if theirs[k] != v})

    def check_depths(self, depths: tuple[int, ...]) -> None:
        """Raise ArchError when the stage layout cannot be laid out on `depths`."""
        odd = [s for s, kind in enumerate(self.layout) if kind == "residual" and depths[s] % 2]
        if odd:
            raise ArchError(
                f"variant {self.name!r} pairs layers into 2-layer residual blocks in stage(s) {odd} "
                f"(variant.layout={list(self.layout)}), so those stages need even depths; got depths={list(depths)}"
            )


def _validate(spec: BlockSpec) -> None:
    _one_of_each("branches", spec.branches, BRANCHES)
    if not any(b in CONV_BRANCHES for b in spec.branches):
        raise ArchError(f"variant.branches={list(spec.branches)} has no conv branch; add at least one of 3x3, 1x1, ...")
    _one_of_each("bn", spec.bn, BRANCHES)
    extra = [b for b in spec.bn if b not in spec.branches]
    if extra:
        raise ArchError(f"variant.bn names {extra}, which are not in variant.branches={list(spec.branches)}")
    if spec.kernel not in KERNELS:
        raise ArchError(f"variant.kernel={spec.kernel!r} is unknown; allowed: {', '.join(KERNELS)}")
    if spec.kernel != "plain" and "3x3" not in spec.branches:
        raise ArchError(f"variant.kernel={spec.kernel} shapes the 3x3 branch, but variant.branches has no 3x3")
    if len(spec.layout) != NUM_STAGES or any(k not in STAGE_BLOCKS for k in spec.layout):
        raise ArchError(
            f"variant.layout={list(spec.layout)} must name the block of each of the {NUM_STAGES} stages; "
            f"allowed: {', '.join(STAGE_BLOCKS)}"
        )
    for flag in ("post_bn", "relu_in_branches"):
        if not isinstance(getattr(spec, flag), bool):
            raise ArchError(f"variant.{flag} must be true or false, got {getattr(spec, flag)!r}")
    check_slug(spec.name, "variant.name", ArchError)  # part of the default trial folder's name


def _one_of_each(field_name: str, values: tuple, allowed: tuple) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ArchError(f"variant.{field_name}: {unknown} unknown; allowed: {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ArchError(f"variant.{field_name}={list(values)} names a branch twice")


# The paper's row order (Tables 6, then 7); other named designs follow alphabetically.
_ORDER = ["full", "no_identity", "no_1x1", "no_branches", "identity_no_bn", "post_bn", "relu_in_branches",
          "diracnet", "trivial", "acb", "residual_reorg"]  # fmt: skip


VARIANTS: Mapping[str, BlockSpec] = load_presets(VARIANT_DIR, lambda fields: BlockSpec(**fields), order=_ORDER)


def list_variants() -> list[str]:
    """Names of the named block variants (the paper's Tables 6 and 7 first)."""
    return list(VARIANTS)


def variant_spec(value: str | Mapping[str, Any] | BlockSpec) -> BlockSpec:
    """A `BlockSpec` from a name (a named variant), a mapping of fields (a `variant:` config node), or a spec.

    A mapping naming a known variant starts from that variant's fields. A new name is a new block design: it
    starts from the defaults (RepVGG's block) and must compute something no named variant computes, so that a
    mistyped name is refused rather than run as another design.
    """
    if isinstance(value, BlockSpec):
        return value
    if isinstance(value, str):
        if value not in VARIANTS:
            raise ArchError(f"unknown variant {value!r}; allowed: {', '.join(VARIANTS)} (or a block design's fields)")
        return VARIANTS[value]
    fields = {k: v for k, v in dict(value).items() if v is not None}
    allowed = [f.name for f in dataclasses.fields(BlockSpec)]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ArchError(f"unknown variant field(s) {unknown}; allowed: {', '.join(allowed)}")
    name = fields.get("name", "full")
    spec = BlockSpec(**{**(VARIANTS[name].to_config() if name in VARIANTS else {}), **fields})
    same = [] if name in VARIANTS else [n for n, v in VARIANTS.items() if v.structure() == spec.structure()]
    if same:
        raise ArchError(
            f"unknown variant {name!r}; allowed: {', '.join(VARIANTS)}. (A new block design needs fields of its "
            f"own: as given, it computes what {same[0]!r} computes.)"
        )
    return spec

"""The block variants of the paper's ablations (Tables 6 and 7): what each one is and whether it converts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """A block design under ablation.

    name: the vocabulary name used in configs, records and plots.
    table: the paper table it comes from (6 or 7).
    definition: what the block computes, in the paper's terms.
    reparameterizable: whether `reparameterize_model` can fuse it.
    plain: whether the deploy form is a plain stack of 3x3 conv (with bias) + ReLU.
    """

    name: str
    table: int
    definition: str
    reparameterizable: bool = True
    plain: bool = True

    def check_depths(self, depths: tuple[int, ...]) -> None:
        """Raise a ValueError when the variant cannot be laid out on `depths`."""
        if self.name == "residual_reorg":
            odd = [i for i in (1, 2, 3) if depths[i] % 2]
            if odd:
                from .arch import ArchError

                raise ArchError(
                    f"variant residual_reorg pairs layers into 2-layer residual blocks in stages 1-3, so "
                    f"depths[1:4] must be even; got depths={list(depths)} (odd at stage(s) {odd})"
                )


_ALL = [
    Variant("full", 6, "3x3 conv-BN + 1x1 conv-BN + identity BN, summed, then ReLU (RepVGG as designed)"),
    Variant("no_identity", 6, "3x3 conv-BN + 1x1 conv-BN, summed, then ReLU"),
    Variant("no_1x1", 6, "3x3 conv-BN + identity BN, summed, then ReLU"),
    Variant("no_branches", 6, "3x3 conv-BN then ReLU (a plain VGG-style layer)"),
    Variant("identity_no_bn", 7, "as full, but the identity branch has no BN"),
    Variant("post_bn", 7, "3x3 conv + 1x1 conv + identity, no BN in the branches; one BN after the addition"),
    Variant(
        "relu_in_branches",
        7,
        "as full, with a ReLU after each branch's BN, before the addition; cannot be fused into one conv",
        reparameterizable=False,
        plain=False,
    ),
    Variant("diracnet", 7, "one 3x3 conv-BN whose kernel is diag(a) I + diag(b) W/||W|| (DiracNet)"),
    Variant("trivial", 7, "one 3x3 conv-BN whose kernel is I + W (trivial re-parameterization)"),
    Variant("acb", 7, "3x3 conv-BN + 1x3 conv-BN + 3x1 conv-BN, summed, then ReLU (Asymmetric Conv Block)"),
    Variant(
        "residual_reorg",
        7,
        "ResNet-like: one 3x3 conv-BN-ReLU layer in stages 0 and 4, 2-layer residual blocks in stages 1-3; "
        "deploy form folds BN and keeps the shortcuts",
        plain=False,
    ),
]

VARIANTS: dict[str, Variant] = {v.name: v for v in _ALL}


def list_variants() -> list[str]:
    """Names of the block variants."""
    return list(VARIANTS)

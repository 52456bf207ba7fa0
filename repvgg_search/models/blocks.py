"""Train-form blocks of every variant, each able to fuse itself into its deploy form.

Parameter names follow the authors' code (`rbr_dense.conv`, `rbr_dense.bn`, `rbr_1x1`, `rbr_identity`,
`rbr_reparam`, `se.down`, `se.up`) so their checkpoints load with strict key matching; parts the authors never
shipped are named in the same spirit (`rbr_1x3`, `rbr_3x1`, `bn` after the addition, `rbr_dense1`/`rbr_dense2`
and `rbr_shortcut` in residual blocks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import NotReparameterizableError
from .variants import BlockSpec

# Fusion runs in float64 and casts back, so a float32 deploy form is as close as float32 allows.
_FUSE_DTYPE = torch.float64


class SEBlock(nn.Module):
    """Squeeze-excitation as in the authors' SE models: global pool, 1x1 down, ReLU, 1x1 up, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.down = nn.Conv2d(channels, hidden, 1, bias=True)
        self.up = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        w = F.adaptive_avg_pool2d(x, 1)
        w = torch.sigmoid(self.up(F.relu(self.down(w))))
        return x * w


def conv_bn(cin: int, cout: int, kernel, stride: int, padding, groups: int, bn: bool = True) -> nn.Sequential:
    """A bias-free conv followed by BN (or alone), with the authors' submodule names `conv` and `bn`."""
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False))
    if bn:
        seq.add_module("bn", nn.BatchNorm2d(cout))
    return seq


class DiracConv2d(nn.Conv2d):
    """3x3 conv whose kernel is diag(alpha) I + diag(beta) W / ||W|| (DiracNet); I only where shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__(cin, cout, 3, stride, 1, groups=groups, bias=False)
        self.with_identity = cin == cout and stride == 1
        self.alpha = nn.Parameter(torch.ones(cout))
        self.beta = nn.Parameter(torch.ones(cout))

    def effective_weight(self) -> Tensor:
        w = self.weight
        norm = w.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        k = self.beta.view(-1, 1, 1, 1) * w / norm
        if self.with_identity:
            k = k + self.alpha.view(-1, 1, 1, 1) * identity_kernel(
                self.out_channels, self.in_channels // self.groups, w
            )
        return k

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), None)


class TrivialConv2d(nn.Conv2d):
    """3x3 conv whose kernel is I + W (the paper's trivial re-parameterization); I only where shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__(cin, cout, 3, stride, 1, groups=groups, bias=False)
        self.with_identity = cin == cout and stride == 1

    def effective_weight(self) -> Tensor:
        if not self.with_identity:
            return self.weight
        return self.weight + identity_kernel(self.out_channels, self.in_channels // self.groups, self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), None)


def identity_kernel(channels: int, in_per_group: int, like: Tensor) -> Tensor:
    """The 3x3 (grouped) kernel of the identity map."""
    k = torch.zeros(channels, in_per_group, 3, 3, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    k[idx, idx % in_per_group, 1, 1] = 1
    return k


def fold_bn(kernel: Tensor, bn: nn.BatchNorm2d | None, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Kernel and bias of conv(kernel, bias) followed by `bn` in eval mode, computed in float64."""
    bias = torch.zeros(kernel.shape[0], dtype=_FUSE_DTYPE, device=kernel.device) if bias is None else bias
    bias = bias.to(_FUSE_DTYPE)
    if bn is None:  # a fresh tensor: callers add other branches into it in place
        return kernel.to(_FUSE_DTYPE, copy=True), bias
    std = (bn.running_var.to(_FUSE_DTYPE) + bn.eps).sqrt()
    gamma = bn.weight.to(_FUSE_DTYPE) if bn.affine else torch.ones_like(std)
    beta = bn.bias.to(_FUSE_DTYPE) if bn.affine else torch.zeros_like(std)
    t = gamma / std
    # float32 * float64 promotes to float64 in one pass, without a float64 copy of the kernel first.
    return kernel * t.view(-1, 1, 1, 1), beta + (bias - bn.running_mean.to(_FUSE_DTYPE)) * t


def _add_branch(kernel: Tensor | None, bias: Tensor | None, branch: nn.Module, ipg: int) -> tuple[Tensor, Tensor]:
    """Add one branch (a conv[-BN] sequence, a BN-only identity or a plain identity) to a 3x3 kernel and bias.

    Smaller kernels (1x1, 1x3, 3x1) land in the centre of the 3x3 and the identity on the centre taps, in place:
    no identity-sized tensor is materialised, which keeps fusing wide models fast.
    """
    if isinstance(branch, nn.Sequential):
        conv = branch.conv
        w = conv.effective_weight() if hasattr(conv, "effective_weight") else conv.weight
        k, b = fold_bn(w, getattr(branch, "bn", None))
        kh, kw = k.shape[-2:]
        if kernel is None and (kh, kw) == (3, 3):
            return k, b  # fold_bn returned a fresh tensor: it becomes the accumulator
        if kernel is None:
            kernel, bias = torch.zeros(*k.shape[:2], 3, 3, dtype=k.dtype, device=k.device), torch.zeros_like(b)
        kernel[:, :, (3 - kh) // 2 : (3 + kh) // 2, (3 - kw) // 2 : (3 + kw) // 2] += k
        return kernel, bias + b
    # Identity: kernel[i, i % ipg, 1, 1] = 1, scaled (and shifted) by its BN if it has one.
    idx = torch.arange(kernel.shape[0], device=kernel.device)
    scale, shift = fold_bn(torch.ones(kernel.shape[0], 1, 1, 1, device=kernel.device), _bn_or_none(branch))
    kernel[idx, idx % ipg, 1, 1] += scale.flatten()
    return kernel, bias + shift


def _bn_or_none(module: nn.Module) -> nn.BatchNorm2d | None:
    return module if isinstance(module, nn.BatchNorm2d) else None


class RepBlock(nn.Module):
    """A multi-branch block: the sum of its branches, an optional BN after the sum, optional SE, then ReLU.

    What it is made of is the `BlockSpec` it is built from (see `variants.py`); the identity branch exists only
    when in_channels == out_channels and stride == 1, as in the paper.
    """

    def __init__(self, cin: int, cout: int, stride: int, groups: int, spec: BlockSpec, use_se: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.groups = cin, cout, stride, groups
        self.spec = spec
        for branch in spec.branches:
            module = _branch(branch, cin, cout, stride, groups, spec)
            if module is not None:
                self.add_module(_BRANCH_NAMES[branch], module)
        if spec.post_bn:
            self.bn = nn.BatchNorm2d(cout)
        self.se = SEBlock(cout) if use_se else nn.Identity()
        self.branch_relu = spec.relu_in_branches

    def branches(self) -> list[nn.Module]:
        """The branches in summing order: the 3x3 first (the fused kernel starts from it), the identity last."""
        return [getattr(self, n) for n in _BRANCH_NAMES.values() if hasattr(self, n)]

    def forward(self, x: Tensor) -> Tensor:
        out = None
        for branch in self.branches():
            y = branch(x)
            if self.branch_relu:
                y = F.relu(y)
            out = y if out is None else out + y
        if hasattr(self, "bn"):
            out = self.bn(out)
        return F.relu(self.se(out))

    @property
    def reparameterizable(self) -> bool:
        return not self.branch_relu

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """The 3x3 kernel and bias of the single conv equivalent to this block's branches (eval-mode BN)."""
        if not self.reparameterizable:
            raise NotReparameterizableError(f"variant {self.spec.label!r}: {self.spec.why_not_reparameterizable}")
        ipg = self.in_channels // self.groups
        kernel = bias = None
        for branch in self.branches():  # rbr_dense comes first, so the kernel exists before the identity
            kernel, bias = _add_branch(kernel, bias, branch, ipg)
        if hasattr(self, "bn"):
            kernel, bias = fold_bn(kernel, self.bn, bias)
        return kernel, bias

    def reparameterize(self) -> DeployBlock:
        """A new deploy block (3x3 conv with bias, SE if any, ReLU) computing what this block computes in eval."""
        kernel, bias = self.fused_kernel_bias()
        like = self.branches()[0].conv.weight
        # On the meta device: the fused kernel replaces the weights, so allocating and initialising them is waste.
        block = DeployBlock(self.in_channels, self.out_channels, self.stride, self.groups, _copy(self.se), "meta")
        _set_weights(block.rbr_reparam, kernel, bias, like.dtype)
        return block


# Branch kind -> submodule name (the authors' names where they shipped the branch), in summing order.
_BRANCH_NAMES = {"3x3": "rbr_dense", "1x1": "rbr_1x1", "1x3": "rbr_1x3", "3x1": "rbr_3x1", "identity": "rbr_identity"}
_CONV_SHAPES = {"1x1": (1, 0), "1x3": ((1, 3), (0, 1)), "3x1": ((3, 1), (1, 0))}  # kernel, padding


def _branch(kind: str, cin: int, cout: int, stride: int, groups: int, spec: BlockSpec) -> nn.Module | None:
    """One branch of a RepBlock: a conv with or without its BN, or the identity (None where shapes differ)."""
    bn = kind in spec.bn
    if kind == "identity":
        if cin != cout or stride != 1:
            return None
        return nn.BatchNorm2d(cin) if bn else nn.Identity()
    if kind == "3x3" and spec.kernel != "plain":
        seq = nn.Sequential()
        conv = DiracConv2d if spec.kernel == "dirac" else TrivialConv2d
        seq.add_module("conv", conv(cin, cout, stride, groups))
        if bn:
            seq.add_module("bn", nn.BatchNorm2d(cout))
        return seq
    kernel, padding = _CONV_SHAPES.get(kind, (3, 1))
    return conv_bn(cin, cout, kernel, stride, padding, groups, bn=bn)


class DeployBlock(nn.Module):
    """The deploy form of a block: ReLU(SE(conv3x3(x) + bias))."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, se: nn.Module | None = None, device=None) -> None:
        super().__init__()
        self.rbr_reparam = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True, device=device)
        self.se = se if se is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.se(self.rbr_reparam(x)), inplace=True)  # in place: the conv output is ours


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut (identity, or 1x1 conv-BN where the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, groups: tuple[int, int], use_se: bool = False) -> None:
        super().__init__()
        self.rbr_dense1 = conv_bn(cin, cout, 3, stride, 1, groups[0])
        self.rbr_dense2 = conv_bn(cout, cout, 3, 1, 1, groups[1])
        self.rbr_shortcut = nn.Identity() if cin == cout and stride == 1 else conv_bn(cin, cout, 1, stride, 0, 1)
        self.se = SEBlock(cout) if use_se else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.rbr_dense2(F.relu(self.rbr_dense1(x)))
        return F.relu(self.se(y) + self.rbr_shortcut(x))

    reparameterizable = True

    @torch.no_grad()
    def reparameterize(self) -> ResidualDeployBlock:
        """The same block with every BN folded into its conv; the shortcut is kept."""
        return ResidualDeployBlock(
            _fold_conv_bn(self.rbr_dense1),
            _fold_conv_bn(self.rbr_dense2),
            nn.Identity() if isinstance(self.rbr_shortcut, nn.Identity) else _fold_conv_bn(self.rbr_shortcut),
            _copy(self.se),
        )


class ResidualDeployBlock(nn.Module):
    """Deploy form of `ResidualBlock`: conv-ReLU-conv (+SE) plus the shortcut, then ReLU; no BN."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, shortcut: nn.Module, se: nn.Module) -> None:
        super().__init__()
        self.rbr_reparam1, self.rbr_reparam2, self.rbr_shortcut, self.se = conv1, conv2, shortcut, se

    def forward(self, x: Tensor) -> Tensor:
        y = self.rbr_reparam2(F.relu(self.rbr_reparam1(x)))
        return F.relu(self.se(y) + self.rbr_shortcut(x))


def _fold_conv_bn(seq: nn.Sequential) -> nn.Conv2d:
    conv = seq.conv
    kernel, bias = fold_bn(conv.weight, seq.bn)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        groups=conv.groups,
        bias=True,
        device="meta",
    )
    return _set_weights(fused, kernel, bias, conv.weight.dtype)


def _set_weights(conv: nn.Conv2d, kernel: Tensor, bias: Tensor, dtype: torch.dtype) -> nn.Conv2d:
    """Give a (meta-device) conv the fused kernel and bias as its parameters, cast to `dtype`."""
    conv.weight = nn.Parameter(kernel.to(dtype))
    conv.bias = nn.Parameter(bias.to(dtype))
    return conv


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)

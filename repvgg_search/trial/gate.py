"""The conversion gate: does the deploy form compute what the train form computes? And how often do the two forms
agree image by image under the trial's own precision (where near-tied logits may flip)?

Only the gate fails a conversion: both forms' logits on fixed validation images, in float32 with TF32 off (or
float64), no autocast, as a relative error against a stated bound. Agreement under autocast is measured and
recorded, never a reason to fail: bf16 flips images whose two best logits are nearly tied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import GateConfig
from ..devices import cuda_flags
from ..distributed import all_reduce_sum
from ..errors import BadInputError, check_int
from ..models import ArchConfig, output_error, reparameterize_model
from ..schema import Agreement, Conversion, Disagreement, Gate
from ..training import evaluate

GATE_DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_EXAMPLES = 20  # differing images listed in the record (all are counted)


def validate_gate(cfg: GateConfig) -> None:
    if cfg.dtype not in GATE_DTYPES:
        raise BadInputError(f"gate.dtype={cfg.dtype!r} is not allowed; allowed: {', '.join(GATE_DTYPES)}")
    check_int(cfg.images, "gate.images", 1)
    if not cfg.max_rel_error > 0:
        raise BadInputError(f"gate.max_rel_error={cfg.max_rel_error!r} must be > 0")


@torch.no_grad()
def conversion_gate(model: nn.Module, deploy: nn.Module, loader, device: torch.device, cfg: GateConfig) -> Gate:
    """Compare both forms' logits on the first `cfg.images` images of `loader`; `passed` when within bound."""
    dtype = GATE_DTYPES[cfg.dtype]
    forms = [m if dtype == torch.float32 else copy.deepcopy(m).to(dtype) for m in (model, deploy)]
    for m in forms:
        m.eval()
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen = 0
    with cuda_flags(device, tf32=False):
        for x, _ in loader:
            x = x[: cfg.images - seen].to(device=device, dtype=dtype)
            outputs.append((forms[0](x), forms[1](x)))
            seen += x.shape[0]
            if seen >= cfg.images:
                break
    error = output_error(torch.cat([t for t, _ in outputs]), torch.cat([d for _, d in outputs]))
    return Gate(dtype=cfg.dtype, tf32=False, images=seen, bound=cfg.max_rel_error,
                passed=error["max_rel_error"] <= cfg.max_rel_error, **error)  # fmt: skip


def agreement(train_eval: dict, deploy_eval: dict, precision: str) -> Agreement:
    """Image-by-image agreement of the two forms' predicted classes under the trial's precision: how many
    differ, and their train-form margins (top-1 minus top-2 logit: a flip at a tiny margin is a near tie)."""
    differ = train_eval["pred"] != deploy_eval["pred"]
    counts = all_reduce_sum(torch.tensor([float(differ.sum()), float(differ.numel())], dtype=torch.float64))
    index = differ.nonzero().flatten()
    margins = train_eval["margin"][index]
    examples = [
        Disagreement(index=int(i), train_class=int(train_eval["pred"][i]), deploy_class=int(deploy_eval["pred"][i]),
                     margin=float(train_eval["margin"][i]))
        for i in index[:MAX_EXAMPLES]
    ]  # fmt: skip
    return Agreement(precision=precision, images=int(counts[1]), differ=int(counts[0]),
                     max_margin=float(margins.max()) if len(margins) else None, examples=examples)  # fmt: skip


@dataclass
class Forms:
    """Both forms after training: the train form's evaluation, the deploy form (if any) and its evaluation, and
    the `conversion` block of the record (gate, agreement)."""

    train_eval: dict
    deploy: nn.Module | None = None
    deploy_eval: dict | None = None
    conversion: Conversion = field(default_factory=Conversion)

    @property
    def passed(self) -> bool:
        return self.conversion.gate is None or bool(self.conversion.gate.passed)


def check_forms(
    model: nn.Module, loader, device: torch.device, arch: ArchConfig, amp: str, cfg: GateConfig,
    train_eval: dict | None = None,
) -> Forms:  # fmt: skip
    """Evaluate the train form (unless `train_eval`, the same model's evaluation on `loader` under `amp` with
    `keep=True`, is given), convert, gate the conversion, and (when it passed) evaluate the deploy form and measure
    the forms' agreement under the trial's precision `amp`."""
    if train_eval is None:
        train_eval = evaluate(model, loader, device=device, amp=amp, keep=True)
    if not arch.reparameterizable:
        return Forms(train_eval, conversion=Conversion(converted=False, reason=arch.variant.why_not_reparameterizable))
    deploy = reparameterize_model(model)
    gate = conversion_gate(model, deploy, loader, device, cfg)
    conversion = Conversion(converted=True, plain=arch.plain, max_abs_error=gate.max_abs_error,
                            max_rel_error=gate.max_rel_error, gate=gate)  # fmt: skip
    if not gate.passed:
        return Forms(train_eval, conversion=conversion)
    deploy_eval = evaluate(deploy, loader, device=device, amp=amp, keep=True)
    conversion.agreement = agreement(train_eval, deploy_eval, amp)
    return Forms(train_eval, deploy, deploy_eval, conversion)

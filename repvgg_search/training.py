"""Training recipe, optimizer and per-iteration schedule, and the train/evaluate loops (mixup, smoothing, AMP, DDP)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import MIN_IMAGE_SIZE, DataConfig, DataError, derive_seed, set_epoch, validate_data, wait_record
from .distributed import all_reduce_max, all_reduce_sum, average_buffers, is_main_process, unwrap
from .errors import BadInputError, check_int
from .progress import want_progress

AMP_MODES = ("none", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_log = logging.getLogger(__name__)


class TrainConfigError(BadInputError):
    """A training setting is invalid; the message names the Hydra key (`train.<field>`) and the allowed values."""


@dataclass
class TrainConfig:
    """A training recipe. The defaults are the proxy recipe (RepVGG-A0 on digits at 32 px, tuned on a 2-core CPU)."""

    # Recipe name, recorded with results: "proxy", "paper_120ep", "paper_200ep" or your own.
    name: str = "proxy"
    # Passes over the training set; >= 1.
    epochs: int = 6
    # Peak learning rate for a global batch of `base_batch_size`; the lr used is base_lr * global_batch /
    # base_batch_size (linear scaling, as the paper). > 0.
    base_lr: float = 0.025
    # Global batch (images, all processes together) at which `base_lr` applies; >= 1.
    base_batch_size: int = 256
    # SGD momentum, in [0, 1).
    momentum: float = 0.9
    # Nesterov momentum (needs momentum > 0). The paper uses plain momentum; the proxy uses Nesterov.
    nesterov: bool = True
    # L2 weight decay of conv and linear kernels; >= 0.
    weight_decay: float = 1e-4
    # Also decay BN parameters and biases (the authors exempt them: False).
    decay_bn_bias: bool = False
    # Linear warmup from 0 to the peak lr, in epochs (fractions allowed; counted per iteration); in [0, epochs).
    warmup_epochs: float = 0.5
    # Label smoothing of the cross-entropy targets, in [0, 1).
    label_smoothing: float = 0.0
    # Mixup Beta(alpha, alpha) concentration; 0 = no mixup.
    mixup_alpha: float = 0.0
    # AutoAugment (ImageNet or CIFAR policy) in the training transforms of cifar*/imagenet.
    autoaugment: bool = False
    # Mixed precision: "none" (fp32), "bf16" (CPU or CUDA) or "fp16" (CUDA only, with loss scaling).
    amp: str = "none"
    # channels_last memory format for model and inputs; CUDA only (no effect on CPU).
    channels_last: bool = False
    # torch.compile (inductor) of the training model; evaluation, conversion and checkpoints use the eager model
    # (the same parameters). The first step of each run compiles (timings.compile_s).
    compile: bool = False
    # Deterministic kernels (torch.use_deterministic_algorithms, no cudnn autotuning): for exact CPU reruns.
    deterministic: bool = False
    # Clip the global gradient norm to this value; None = no clipping; else > 0.
    grad_clip: float | None = None
    # Steps between plain log lines when no progress bar is shown; 0 = only the end-of-epoch line.
    log_interval: int = 50


def scaled_lr(cfg: TrainConfig, global_batch_size: int) -> float:
    """The peak lr for `global_batch_size` under linear scaling: base_lr * global_batch / base_batch_size."""
    return cfg.base_lr * global_batch_size / cfg.base_batch_size


def validate_train(
    cfg: TrainConfig, data_cfg: DataConfig | None = None, device: torch.device | str | None = None
) -> None:
    """Raise `TrainConfigError` (or `DataError` for data fields) before any training starts.

    `device` is where training will run (default: CUDA when available); fp16 needs CUDA.
    """
    if not isinstance(cfg.name, str) or not cfg.name:
        raise TrainConfigError(f"train.name={cfg.name!r} must be a non-empty string")
    check_int(cfg.epochs, "train.epochs", 1, error=TrainConfigError)
    check_int(cfg.base_batch_size, "train.base_batch_size", 1, error=TrainConfigError)
    check_int(cfg.log_interval, "train.log_interval", 0, error=TrainConfigError)
    _number_in(cfg.base_lr, "train.base_lr", "> 0", lambda v: v > 0)
    _number_in(cfg.momentum, "train.momentum", "in [0, 1)", lambda v: 0 <= v < 1)
    _number_in(cfg.weight_decay, "train.weight_decay", ">= 0", lambda v: v >= 0)
    _number_in(cfg.label_smoothing, "train.label_smoothing", "in [0, 1)", lambda v: 0 <= v < 1)
    _number_in(cfg.mixup_alpha, "train.mixup_alpha", ">= 0 (0 = off)", lambda v: v >= 0)
    _number_in(
        cfg.warmup_epochs, "train.warmup_epochs", f"in [0, train.epochs={cfg.epochs})", lambda v: 0 <= v < cfg.epochs
    )
    if cfg.grad_clip is not None:
        _number_in(cfg.grad_clip, "train.grad_clip", "> 0, or null for no clipping", lambda v: v > 0)
    if cfg.nesterov and cfg.momentum == 0:
        raise TrainConfigError("train.nesterov=true needs train.momentum > 0")
    _check_amp(cfg.amp, device)
    if data_cfg is not None:
        validate_data(data_cfg, device)


def _number_in(value, key: str, allowed: str, ok: Callable[[float], bool]) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not ok(value):
        raise TrainConfigError(f"{key}={value!r} must be a finite number {allowed}")


def _check_amp(amp: str, device: torch.device | str | None) -> None:
    if amp not in AMP_MODES:
        raise TrainConfigError(f"train.amp={amp!r} is unknown; allowed: {', '.join(AMP_MODES)}")
    on_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if amp == "fp16" and not on_cuda:
        raise TrainConfigError("train.amp=fp16 needs a CUDA device; on CPU use train.amp=bf16 or train.amp=none")


def configure_backends(cfg: TrainConfig, device: torch.device | str) -> None:
    """Process-wide backend switches: deterministic kernels when asked, cudnn autotuning otherwise on CUDA."""
    device = torch.device(device)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        # warn_only: a few CUDA backward kernels (e.g. adaptive pooling) have no deterministic version.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def prepare_model(model: nn.Module, cfg: TrainConfig, device: torch.device | str) -> nn.Module:
    """`model` on `device`, in channels_last when asked and on CUDA."""
    device = torch.device(device)
    model = model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """The model the training steps call: `torch.compile(model)` (sharing its parameters) under train.compile=true,
    else `model` itself. Compile a DDP-wrapped model whole, as PyTorch's DDP guide advises (its DDPOptimizer splits
    the graph at the bucket boundaries so gradient all-reduce still overlaps the backward)."""
    return torch.compile(model) if cfg.compile else model


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Two groups: conv/linear kernels (ndim > 1) decay; BN parameters, biases and other vectors do not
    (unless `decay_bn_bias`)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    exempt_wd = cfg.weight_decay if cfg.decay_bn_bias else 0.0
    return [
        {"params": decay, "weight_decay": cfg.weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": exempt_wd, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, global_batch_size: int) -> torch.optim.SGD:
    """SGD with the linearly scaled lr and the two weight-decay groups of `param_groups`."""
    return torch.optim.SGD(
        param_groups(model, cfg),
        lr=scaled_lr(cfg, global_batch_size),
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
    )


class WarmupCosine:
    """lr factor of step t: linear warmup (t+1)/W for t < W, then cosine from 1 down to 0 at step T."""

    def __init__(self, total_steps: int, warmup_steps: int) -> None:
        self.total_steps, self.warmup_steps = total_steps, warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule (call `step()` after every optimizer step): warmup, then cosine to 0 at the end.

    Its position and shape save and restore through `state_dict()` / `load_state_dict()`.
    """
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total, warmup))


def make_scaler(cfg: TrainConfig, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 on CUDA (keep it across epochs and in checkpoints); None otherwise."""
    if cfg.amp == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def autocast(amp: str, device: torch.device):
    """Autocast context for `amp`; "none" is a no-op context (plain fp32)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AMP_DTYPES[amp])


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed the global RNGs from (seed, epoch), so an epoch's random choices do not depend on earlier epochs."""
    torch.manual_seed(derive_seed(seed, epoch, "train"))


def mixup_batch(
    x: Tensor, alpha: float, rng: np.random.Generator, gen: torch.Generator
) -> tuple[Tensor, Tensor, float]:
    """Mix each image with another of the batch: lam * x + (1 - lam) * x[perm], lam ~ Beta(alpha, alpha)."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], perm, lam


def soft_targets(y: Tensor, perm: Tensor, lam: float, num_classes: int) -> Tensor:
    """Mixed one-hot targets lam * onehot(y) + (1 - lam) * onehot(y[perm])."""
    one_hot = F.one_hot(y, num_classes).float()
    return lam * one_hot + (1.0 - lam) * one_hot[perm]


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    cfg: TrainConfig,
    device: torch.device | str,
    epoch: int,
    seed: int,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train one epoch; returns loss (mean), top1 (train, %, against the unmixed labels), images_per_s (all
    processes), lr (after the last step), steps and seconds.

    The epoch's data order, augmentation and mixup draws depend only on (seed, epoch): from the same model,
    optimizer and scheduler state, it gives the same result on CPU whatever ran before.
    Raises FloatingPointError when the loss is not finite (the run diverged).
    """
    device = torch.device(device)
    if cfg.amp == "fp16" and scaler is None:
        raise ValueError("train.amp=fp16 needs loss scaling: pass scaler=make_scaler(cfg, device)")
    log = log or _log.info
    seed_epoch(seed, epoch)
    set_epoch(loader, epoch)
    model.train()
    mix_rng = np.random.default_rng(derive_seed(seed, epoch, "mixup"))
    perm_gen = torch.Generator().manual_seed(derive_seed(seed, epoch, "perm"))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # sums stay on the device: no step waits on it
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = steps = 0
    total = len(loader)
    bar = _progress_bar(total, epoch) if progress else None
    start, first_step_s = time.perf_counter(), 0.0
    for x, y in loader:
        if steps == 0:  # from the first batch's arrival: its data wait is not the step's
            first_step_s = -time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cfg.channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if cfg.mixup_alpha > 0:
            x, perm, lam = mixup_batch(x, cfg.mixup_alpha, mix_rng, perm_gen)
        with autocast(cfg.amp, device):
            out = model(x)
            target = soft_targets(y, perm, lam, out.shape[1]) if cfg.mixup_alpha > 0 else y
            loss = criterion(out.float(), target)
        _backward_and_step(model, loss, optimizer, scaler, cfg.grad_clip)
        scheduler.step()  # per iteration
        loss_sum += loss.detach() * y.shape[0]
        correct += (out.detach().argmax(1) == y).sum()
        seen, steps = seen + y.shape[0], steps + 1
        if steps == 1:  # under train.compile this step traced and compiled the model (host time: no sync needed)
            first_step_s += time.perf_counter()
        if bar is not None:
            bar.update(1)
            if steps % 10 == 0 or steps == total:  # .item() waits for the GPU: not every step
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
        elif cfg.log_interval and steps % cfg.log_interval == 0:
            log(
                f"epoch {epoch + 1} step {steps}/{total} loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.4g}"
            )
    if bar is not None:
        bar.close()
    result = _finish_epoch(model, (loss_sum, correct, seen, steps), optimizer, device, start, epoch, log)
    if cfg.compile:
        result["first_step_s"] = first_step_s
    return result | _data_wait(loader, result["seconds"], epoch, device)


def _backward_and_step(
    model: nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    grad_clip: float | None,
) -> None:
    """One optimizer step from `loss`: backward (scaled under fp16), gradient clipping, step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    else:
        loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _data_wait(loader, seconds: float, epoch: int, device: torch.device) -> dict[str, float]:
    """The epoch's data wait (`data.wait_record`), the slowest rank's; rank 0 warns when the loop is data-bound."""

    def slowest(waited: float) -> float:
        return all_reduce_max(torch.tensor([waited], dtype=torch.float64, device=device)).item()

    quiet = None if is_main_process() else (lambda message: None)
    return wait_record(loader, seconds, epoch + 1, warn=quiet, reduce=slowest)


def _progress_bar(total: int, epoch: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}", file=sys.stderr, dynamic_ncols=True, leave=False)


def _finish_epoch(model, sums: tuple, optimizer, device: torch.device, start: float, epoch: int, log) -> dict:
    """The epoch's figures over every process (sums all-reduced), BN statistics averaged across them."""
    loss_sum, correct, seen, steps = sums
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    average_buffers(model)
    seen_t = torch.tensor(float(seen), dtype=torch.float64, device=device)
    totals = all_reduce_sum(torch.stack([loss_sum, correct.double(), seen_t]))
    loss_sum, correct, seen = totals.tolist()
    loss = loss_sum / max(seen, 1)
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training diverged: loss is {loss} in epoch {epoch + 1}; lower train.base_lr or add warmup"
        )
    result = {
        "epoch": epoch + 1,  # epochs are numbered from 1 everywhere a person or a record sees them
        "loss": loss,
        "top1": 100.0 * correct / max(seen, 1),
        "images_per_s": seen / seconds if seconds > 0 else float("nan"),
        "lr": optimizer.param_groups[0]["lr"],
        "steps": steps,
        "seconds": seconds,
    }
    log(
        f"epoch {epoch + 1} train loss {loss:.4f} top1 {result['top1']:.2f} {result['images_per_s']:.0f} img/s lr {result['lr']:.4g}"
    )
    return result


def evaluate(
    model: nn.Module, loader, *, device: torch.device | str, amp: str = "none", reduce: bool = True, keep: bool = False
) -> dict:
    """top1 (%), mean cross-entropy loss, correct and total over the whole evaluation set.

    With a process group and `reduce`, every rank must call it: the sums of the ranks' shards are combined
    (a collective). `reduce=False` counts only this process's loader, e.g. rank 0 alone on an unsharded
    loader from `build_loaders(..., distributed=False)`. With `keep`, also this process's per-image predicted
    class (`pred`), top-1 minus top-2 logit (`margin`) and whether it is right (`correct`), on the CPU, in loader
    order. Runs the unwrapped
    module in eval mode under inference_mode and restores its previous mode.
    """
    device = torch.device(device)
    net = unwrap(model)
    was_training = net.training
    net.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    preds, margins, rights = [], [], []
    with torch.inference_mode(), autocast(amp, device):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = net(x).float()
            pred = out.argmax(1)
            sums[0] += F.cross_entropy(out, y, reduction="sum")
            sums[1] += (pred == y).sum()
            sums[2] += y.shape[0]
            if keep:
                top2 = out.topk(min(2, out.shape[1]), dim=1).values
                preds.append(pred.cpu())
                margins.append((top2[:, 0] - top2[:, -1]).cpu())
                rights.append((pred == y).cpu())
    net.train(was_training)
    loss_sum, correct, total = (all_reduce_sum(sums) if reduce else sums).tolist()
    result = {
        "top1": 100.0 * correct / max(total, 1),
        "loss": loss_sum / max(total, 1),
        "correct": int(correct),
        "total": int(total),
    }
    if keep:
        cat = lambda parts, dtype: torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)  # noqa: E731
        result.update(pred=cat(preds, torch.long), margin=cat(margins, torch.float), correct=cat(rights, torch.bool))
    return result


__all__ = [
    "AMP_MODES",
    "MIN_IMAGE_SIZE",
    "DataError",
    "TrainConfig",
    "TrainConfigError",
    "WarmupCosine",
    "autocast",
    "build_optimizer",
    "build_scheduler",
    "compile_model",
    "configure_backends",
    "evaluate",
    "make_scaler",
    "mixup_batch",
    "param_groups",
    "prepare_model",
    "scaled_lr",
    "seed_epoch",
    "soft_targets",
    "train_one_epoch",
    "validate_train",
    "want_progress",
]

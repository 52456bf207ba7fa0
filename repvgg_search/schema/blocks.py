"""The blocks of a trial record, one dataclass each (fields null where a run did not reach them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..typed import OMIT_NULL
from .status import Status

MAC_CONVENTION = "fvcore MACs (1 multiply-add = 1; conv, linear, BN and pooling counted; ReLU and adds not)"
DATA_WAIT_CONVENTION = (
    "host wall-clock seconds the training loop blocked on its next batch (first batch included), the slowest DDP "
    "rank's; fractions of the training passes' wall time (steps included), all epochs of metrics.jsonl"
)


@dataclass(slots=True)
class ArchBlock:
    """`arch`: the effective architecture (preset values filled in), its variant's label and what its block computes."""

    preset: str | None = None
    depths: list[int] | None = None
    a: float | None = None
    b: float | None = None
    groups: int | None = None
    grouped_layers: list[int] | None = None
    num_classes: int | None = None
    use_se: bool | None = None
    in_channels: int | None = None
    variant: str | None = None  # the label: a name, or a named variant with its changes (full+post_bn=true)
    block: dict[str, Any] | None = None  # BlockSpec.structure(): branches, bn, post_bn, kernel, layout, ...
    widths: list[int] | None = None
    reparameterizable: bool | None = None
    plain: bool | None = None

    @classmethod
    def of(cls, preset: str, arch: Any) -> ArchBlock:
        """The block of a `models.ArchConfig` (read by its fields: the schema imports no model code)."""
        as_list = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return cls(
            preset=preset, depths=list(arch.depths), a=arch.a, b=arch.b, groups=arch.groups,
            grouped_layers=as_list(arch.grouped_layers), num_classes=arch.num_classes, use_se=arch.use_se,
            in_channels=arch.in_channels, variant=arch.variant.label, block=arch.variant.structure(),
            widths=list(arch.widths), reparameterizable=arch.reparameterizable, plain=arch.plain,
        )  # fmt: skip


@dataclass(slots=True)
class Metrics:
    """`metrics`: accuracy on the validation split (percent) and losses after the last epoch."""

    top1: float | None = None  # train form
    deploy_top1: float | None = None  # deploy form, under the trial's precision (null: no deploy form)
    loss: float | None = None
    train_top1: float | None = None  # last epoch, against the unmixed labels
    train_loss: float | None = None
    epochs: int | None = None
    val_images: int | None = None


@dataclass(slots=True)
class Gate:
    """`conversion.gate`: both forms' logits on fixed validation images, float32 (TF32 off) or float64."""

    dtype: str | None = None
    tf32: bool | None = None
    images: int | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    bound: float | None = None
    passed: bool | None = None


@dataclass(slots=True)
class Disagreement:
    """One image the two forms classify differently under the trial's precision."""

    index: int | None = None
    train_class: int | None = None
    deploy_class: int | None = None
    margin: float | None = None  # the train form's top-1 minus top-2 logit


@dataclass(slots=True)
class Agreement:
    """`conversion.agreement`: image-by-image agreement of the two forms under the trial's precision."""

    precision: str | None = None
    images: int | None = None
    differ: int | None = None
    max_margin: float | None = None
    examples: list[Disagreement] = field(default_factory=list)


@dataclass(slots=True)
class Conversion:
    """`conversion`: whether the train form was re-parameterized, and how exactly."""

    converted: bool | None = None
    plain: bool | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    gate: Gate | None = None
    agreement: Agreement | None = None
    reason: str | None = None  # why a design has no deploy form


@dataclass(slots=True)
class Sizes:
    """MACs (fvcore's count, batch 1) and parameters of one form."""

    macs: int | None = None
    params: int | None = None


@dataclass(slots=True)
class TrialSize:
    """`complexity.trial_size`: both forms at the trial's own input size."""

    input_size: list[int] | None = None
    train: Sizes | None = None
    deploy: Sizes | None = None


@dataclass(slots=True)
class Complexity:
    """`complexity`: MACs and params of both forms at 3x224x224 (and at the trial's size)."""

    input_size: list[int] | None = None
    convention: str | None = None
    train: Sizes | None = None
    deploy: Sizes | None = None  # the train form's counts for a design with no deploy form
    trial_size: TrialSize | None = None
    deploy_is_train_form: bool | None = None


@dataclass(slots=True)
class Platform:
    """What a figure or a trial ran on (`devices.environment`): the device, the host and the libraries' versions."""

    device: str | None = None
    device_name: str | None = None
    host: str | None = None
    torch: str | None = None
    cuda: str | None = None
    cudnn: int | None = None
    driver: str | None = None
    cpu_count: int | None = None


@dataclass(slots=True)
class SpeedFigure(Platform):
    """A speed figure of one network under one protocol on one device (`speed`, `quant.*_speed`, and the files of a
    sweep's speed folder). `protocol_fields` holds the protocol whole; the other fields say what it was measured as."""

    protocol: str | None = None
    images_per_s: float | None = None
    latency_ms: float | None = None  # median batch
    latency_ms_iqr: float | None = None
    latency_ms_min: float | None = None
    spread: float | None = None  # max/min of the rounds' rates
    reliable: bool | None = None
    rounds_images_per_s: list[float] | None = None
    attempts: int | None = None
    batch_size: int | None = None
    input_size: list[int] | None = None
    dtype: str | None = None
    tf32: bool | None = None
    cudnn_benchmark: bool | None = None
    channels_last: bool | None = None
    layout_probe: dict[str, float] | None = None
    threads: int | None = None
    runtime: str | None = None
    device_key: str | None = None
    peak_memory_mb: float | None = None
    protocol_fields: dict[str, Any] | None = None
    precision: str | None = None  # float, or int8 for a quantized model's figure
    key: str | None = None  # identity of the figure (architecture hash, protocol, side, device)
    arch_hash: str | None = None
    measured_at: str | None = None
    source: str | None = field(default=None, metadata=OMIT_NULL)  # measured | cached | predicted (in a record)
    table: str | None = field(default=None, metadata=OMIT_NULL)  # predicted: the latency table (speed.predictor=lut)
    overhead_ms: float | None = field(default=None, metadata=OMIT_NULL)  # predicted: its fixed part (pool + head)
    form: str | None = field(default=None, metadata=OMIT_NULL)  # deploy | train: which form the trial's figure is of


@dataclass(slots=True)
class QuantFiles:
    """`quant.files`: the ONNX models of the quantization stage, relative to the trial folder."""

    float: str | None = None
    int8: str | None = None


@dataclass(slots=True)
class Quant:
    """`quant`: INT8 post-training quantization of the measured form (onnxruntime on the CPU)."""

    method: str | None = None
    per_channel: bool | None = None
    calibrate: str | None = None
    calib_images: int | None = None
    float_onnx_top1: float | None = None
    int8_top1: float | None = None
    val_images: int | None = None
    files: QuantFiles | None = None
    quant_s: float | None = None
    float_top1: float | None = None
    drop: float | None = None
    float_speed: SpeedFigure | None = None
    int8_speed: SpeedFigure | None = None
    int8_speedup: float | None = None
    # issue 19: the protocol, the exact simulation and the per-layer sensitivity (absent from older records).
    # drop above = float_onnx_top1 - int8_top1 from these on (before: float_top1 - int8_top1)
    protocol: dict[str, Any] | None = None  # the whole quantization protocol (deploy.quant_protocols.QuantProtocol)
    reduce_range_used: bool | None = None  # what the protocol's reduce_range meant on this CPU
    cpu: dict[str, Any] | None = None  # machine, model, VNNI/AMX flags seen (what reduce_range=auto read)
    kept_float: list[str] | None = None  # deploy layers (module names) left in float32
    reference_top1: float | None = None  # top1 of the exact float64 simulation of the same QDQ graph
    runtime_gap: float | None = None  # int8_top1 - reference_top1 (top1 points): the runtime's own arithmetic
    reference_drop: float | None = None  # float_onnx_top1 - reference_top1
    agreement: dict[str, Any] | None = None  # INT8 vs simulation: int8_ties, int8_vs_reference_max_rel, argmax_differ
    layers: list[dict[str, Any]] | None = None  # per deploy layer: kernel range/std, calibrated range, SQNR (dB)
    layer_images: int | None = None  # validation images of the per-layer analysis


@dataclass(slots=True)
class Search:
    """`search`: how a width search's proposal of this candidate ended (the study's own account of the trial)."""

    study: str | None = None
    number: int | None = None
    state: str | None = None  # Optuna's trial state (COMPLETE, PRUNED, FAIL)
    kind: Status | None = None  # completed, pruned, diverged, infeasible, failed, ...
    feasible: bool | None = None
    values: list[float] | None = None
    objectives: list[str] | None = None
    directions: list[str] | None = None
    params: dict[str, Any] | None = None
    constraints: dict[str, float] | None = None
    retry_of: int | None = None
    worker: int | None = None
    rung: int | None = field(default=None, metadata=OMIT_NULL)  # search.fidelity=asha: this run's epochs (a rung,
    #   or train.epochs for the candidate's full-fidelity run)
    candidate: str | None = field(default=None, metadata=OMIT_NULL)  # asha: the candidate's full-fidelity trial id


@dataclass(slots=True)
class Environment(Platform):
    """`environment`: what the trial ran on, and the numeric switches in force while it trained."""

    threads: int | None = None
    deterministic: bool | None = None
    amp: str | None = None
    channels_last: bool | None = None
    tf32_conv: bool | None = None
    tf32_matmul: bool | None = None
    cudnn_benchmark: bool | None = None


@dataclass(slots=True)
class PerImage:
    """`per_image`: which validation images the train form classified right, as a bit file in the trial folder."""

    file: str | None = None  # val_correct.bits (analysis.per_image reads it)
    images: int | None = None
    order: str | None = None  # a fingerprint of the images and their order: two trials pair only on the same
    split: str | None = None


@dataclass(slots=True)
class DataWaitBlock:
    """`data_wait`: how long the training loop waited for data over the trial's epochs (`data.wait_summary`)."""

    data_wait_s: float | None = None  # all epochs together
    data_wait_frac: float | None = None  # of the epochs' training time together
    data_wait_max_epoch_frac: float | None = None  # the worst epoch's share
    data_bound_epochs: int | None = None  # epochs whose share was over `warn_frac`
    epochs: int | None = None  # epochs measured
    warn_frac: float | None = None  # the share above which an epoch is data-bound (and the log warns)
    convention: str | None = None


@dataclass(slots=True)
class Weights:
    """`weights`: the files a completed trial kept (paths in its folder, or null)."""

    deploy: str | None = None
    checkpoint: str | None = None


@dataclass(slots=True)
class ExportCheck:
    """One exported format, checked against the PyTorch model's outputs."""

    file: str | None = None
    max_rel_error: float | None = None
    tolerance: float | None = None
    passed: bool | None = None
    checked_on: list[int] | None = None
    seconds: float | None = None


@dataclass(slots=True)
class Export:
    """`export`: the deploy form exported by `python -m repvgg_search.deploy`."""

    onnx: ExportCheck | None = None
    torch_export: ExportCheck | None = None
    form: str | None = None
    versions: dict[str, str | None] | None = None


@dataclass(slots=True)
class Timings:
    """`timings`: seconds spent in each part of the trial's last run."""

    setup_s: float | None = None
    train_s: float | None = None
    # train.compile=true: the first compiled training step of this run (tracing and compiling, plus that one step)
    compile_s: float | None = field(default=None, metadata=OMIT_NULL)
    eval_s: float | None = None
    profile_s: float | None = None
    quant_s: float | None = None
    total_s: float | None = None

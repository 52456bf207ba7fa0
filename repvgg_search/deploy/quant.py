"""INT8 post-training quantization of a deploy form under a quantization protocol (onnxruntime static QDQ on the
CPU), evaluated beside the float ONNX model it came from and beside an exact simulation of the same quantized graph.

Why onnxruntime: its static quantization (QDQ format, `quantize_static`) is maintained and documented, and the same
runtime then runs and times both the float and the INT8 model, so the speed ratio compares like with like.
PyTorch's own eager/FX quantization is deprecated, and its PT2E flow now lives in torchao, whose CPU INT8 kernels
need an x86 inductor backend that a sweep cannot count on. The runtime's INT8 arithmetic is checked against
`simulate.py` (the ONNX spec's QDQ semantics in float64): `runtime_gap` is the runtime's top1 minus the simulation's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices import resolve_device
from ..errors import BadInputError
from ..files import EXPORT_DIR
from .onnx_io import INPUT, export_onnx, onnx_session, run_onnx
from .quant_protocols import (
    CALIBRATIONS,
    KEEP_FLOAT_ROLES,
    QuantError,
    QuantProtocol,
    cpu_int8,
    reduce_range_used,
    resolve_quant_protocol,
)
from .simulate import Graph

__all__ = ["CALIBRATIONS", "PtqSettings", "QuantError", "Quantized", "ptq", "quantize_int8"]
_log = logging.getLogger(__name__)
FLOAT_ONNX, INT8_ONNX = "deploy.onnx", "deploy.int8.onnx"
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")  # the deploy layers: ops with a weight initializer


@dataclass(frozen=True)
class PtqSettings:
    """A shorthand for the `ort_qdq` protocol with these fields changed (`as_protocol`); a trial resolves its
    protocol from `quant.*` (`quant_protocols.protocol_of_config`)."""

    calib_images: int = 256
    per_channel: bool = True
    calibrate: str = "minmax"
    batch_size: int = 32

    def as_protocol(self) -> QuantProtocol:
        return resolve_quant_protocol({"name": "ort_qdq", "calib_images": self.calib_images, "calibrate": self.calibrate,
                                       "per_channel": self.per_channel, "calib_batch_size": self.batch_size})  # fmt: skip


@dataclass(frozen=True)
class Quantized:
    """An INT8 model written by `quantize_int8`: its file, the pre-processed float graph it was made from (when
    kept), and the record of how it was made."""

    path: Path
    prepared: Path | None
    record: dict[str, Any]


def deploy_layers(model: Any) -> list[tuple[Any, str]]:
    """(node, module name) of every weighted layer of an exported deploy form, in graph order: the module name is
    its weight initializer's name without `.weight` (the exporter keeps PyTorch's parameter names)."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in inits:
            out.append((node, node.input[1].removesuffix(".weight")))
    return out


def float_nodes(model: Any, keep_float: tuple[str, ...]) -> dict[str, str]:
    """module name -> node name of the layers `keep_float` names (`classifier`: the last weighted layer, `stem`:
    the first), refusing a name that is no layer of this model."""
    layers = deploy_layers(model)
    if not layers:
        raise QuantError("the model has no weighted layer (Conv, Gemm, MatMul) to quantize")
    by_module = {module: node.name for node, module in layers}
    roles = {"classifier": layers[-1][1], "stem": layers[0][1]}
    out = {}
    for item in keep_float:
        module = roles.get(item, item)
        if module not in by_module:
            raise QuantError(f"quant.keep_float names {item!r}, not a layer of this model; allowed: "
                             f"{', '.join(KEEP_FLOAT_ROLES)}, {', '.join(by_module)}")  # fmt: skip
        out[module] = by_module[module]
    return out


def quantize_int8(
    float_path: Path, int8_path: Path, images: torch.Tensor, protocol: QuantProtocol | PtqSettings, *,
    cpu: dict[str, Any] | None = None, keep_prepared: bool = False,
) -> Quantized:  # fmt: skip
    """Static INT8 quantization of an ONNX model under `protocol` (QDQ format), its activation ranges calibrated on
    `images` (the first `protocol.calib_images` of them). `cpu` (see `cpu_int8`; default this machine) decides
    `reduce_range: auto`. The pre-processed float graph is kept beside the INT8 file with `keep_prepared`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    p = protocol.as_protocol() if isinstance(protocol, PtqSettings) else protocol
    cpu = cpu_int8() if cpu is None else cpu
    reduce = reduce_range_used(p.reduce_range, cpu)
    int8_path = Path(int8_path)
    prepared = int8_path.with_name(int8_path.stem + ".pre.onnx")
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    method = calibration_method(p.calibrate)
    with _quiet(), tempfile.TemporaryDirectory(prefix="repvgg-quant.") as tmp:
        quant_pre_process(str(float_path), str(prepared))
        import onnx

        kept = float_nodes(onnx.load(str(prepared)), p.keep_float)
        cache = Path(tmp) / "ranges.json"
        calibrate(prepared, images[: p.calib_images], p, cache, Path(tmp))
        quantize_static(
            str(prepared), str(int8_path), None, quant_format=QuantFormat.QDQ, per_channel=p.per_channel,
            reduce_range=reduce, activation_type=qtype[p.activation_type], weight_type=qtype[p.weight_type],
            nodes_to_exclude=list(kept.values()), calibrate_method=method, calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": p.activation_symmetric, "WeightSymmetric": p.weight_symmetric},
        )  # fmt: skip
    if not keep_prepared:
        prepared.unlink(missing_ok=True)
    record = {"protocol": p.fields(), "reduce_range_used": reduce, "cpu": cpu, "kept_float": sorted(kept),
              "calib_images": min(len(images), p.calib_images)}  # fmt: skip
    return Quantized(int8_path, prepared if keep_prepared else None, record)


def calibration_method(name: str) -> Any:
    """onnxruntime's CalibrationMethod for a protocol's `calibrate`."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]  # fmt: skip


def calibrate(prepared: Path, images: torch.Tensor, p: QuantProtocol, cache: Path, workdir: Path) -> None:
    """Activation ranges of `prepared` on `images`, by onnxruntime's own calibrators, written to `cache` (the
    calibration cache `quantize_static` reads): called here because quantize_static cannot pass a histogram's bin
    count, and its entropy default (128 bins) leaves its KL search a single candidate, the full range."""
    from onnxruntime.quantization import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    options: dict[str, Any] = {"symmetric": p.activation_symmetric}
    if p.calibrate != "minmax":  # entropy keeps onnxruntime's 128 quantized bins: 255 (one per int8 level) made
        # its KL search pick the smallest threshold (A0 on digits: INT8 top1 12.5% against 95.8% with 128)
        options |= {"num_bins": p.histogram_bins, "percentile": p.percentile}
    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static calibrates by default
    calibrator = create_calibrator(prepared, ops, augmented_model_path=str(workdir / "augmented.onnx"),
                                   calibrate_method=calibration_method(p.calibrate), extra_options=options)  # fmt: skip
    calibrator.collect_data(_Reader(images, p.calib_batch_size))
    save_tensors_data(calibrator.compute_data(), cache)


class _Reader:
    """onnxruntime's calibration data reader over a tensor of images, in batches."""

    def __init__(self, images: torch.Tensor, batch: int) -> None:
        self.batches = iter(images[i : i + batch].numpy().astype(np.float32) for i in range(0, len(images), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.batches, None)
        return None if x is None else {INPUT: x}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all static calibration needs
        pass


def onnx_top1(session: Any, loader) -> dict[str, float]:
    """top1 (%) of an ONNX model over an evaluation loader (batches moved to the CPU)."""
    correct = total = 0
    for x, y in loader:
        logits = run_onnx(session, x)
        correct += int((logits.argmax(1) == y.cpu().numpy()).sum())
        total += len(y)
    return {"top1": 100.0 * correct / max(total, 1), "total": total}


def reference_device(value: str | torch.device) -> torch.device:
    """The device the exact simulation runs on (`auto`: CUDA when visible; float64 there too), refused by key."""
    try:
        return resolve_device(value)
    except BadInputError as err:
        raise QuantError(f"quant.reference_device: {err}") from None


def evaluate_int8(
    float_path: Path, int8_path: Path, loader, *, reference: bool = True, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """One pass over `loader`: top1 of the float ONNX model and of the INT8 one in onnxruntime, and of the exact
    simulation of the INT8 graph (float64 on `device`; `reference`), on the same images; how the INT8 logits agree
    with the simulation's; and how many images' two top INT8 scores tie (argmax then picks by index)."""
    sessions = {"float": onnx_session(float_path), "int8": onnx_session(int8_path)}
    sim = Graph.load(int8_path, device=reference_device(device)) if reference else None
    correct = dict.fromkeys(("float", "int8", "reference"), 0)
    total, ties, differ, err, scale = 0, 0, 0, 0.0, 0.0
    with torch.inference_mode():
        for x, y in loader:
            labels = y.cpu().numpy()
            out = {k: run_onnx(s, x) for k, s in sessions.items()}
            if sim is not None:
                out["reference"] = sim.logits(x).cpu().numpy()
                differ += int((out["reference"].argmax(1) != out["int8"].argmax(1)).sum())
                err = max(err, float(np.abs(out["int8"] - out["reference"]).max()))
                scale = max(scale, float(np.abs(out["reference"]).max()))
            for k, logits in out.items():
                correct[k] += int((logits.argmax(1) == labels).sum())
            top2 = np.sort(out["int8"], axis=1)[:, -2:]
            ties += int((top2[:, 0] == top2[:, 1]).sum())
            total += len(labels)
    top1 = {k: 100.0 * v / max(total, 1) for k, v in correct.items()}
    agreement = {"int8_ties": ties}
    if sim is not None:
        agreement |= {"int8_vs_reference_max_rel": err / max(scale, 1e-30), "argmax_differ": differ}
    return {"top1": top1, "total": total, "agreement": agreement, "reference": sim is not None}


def ptq(
    model: nn.Module, folder: Path, images: torch.Tensor, val_loader, protocol: QuantProtocol | PtqSettings, *,
    layer_images: int = 64, reference: bool = True, reference_device: str | torch.device = "cpu",
    cpu: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Export `model` (the deploy form, float32), quantize it under `protocol` with `images`, evaluate the float and
    INT8 ONNX models and the exact simulation of the INT8 graph (on `reference_device`) on `val_loader` (every image
    it yields: give rank 0 the whole validation set), and, for `layer_images` > 0, the per-layer sensitivity on that
    many validation images: the record's `quant` block (files relative to the trial folder)."""
    from .sensitivity import layer_sensitivity

    t0 = time.perf_counter()
    out = Path(folder) / EXPORT_DIR
    side = images.shape[-1]
    float_path = export_onnx(model, (images.shape[1], side, side), out / FLOAT_ONNX)
    q = quantize_int8(float_path, out / INT8_ONNX, images, protocol, cpu=cpu, keep_prepared=layer_images > 0)
    found = evaluate_int8(float_path, q.path, val_loader, reference=reference, device=reference_device)
    top1 = found["top1"]
    block = {
        "method": f"onnxruntime {_version('onnxruntime')} quantize_static, QDQ format",
        **q.record,
        "float_onnx_top1": top1["float"],
        "int8_top1": top1["int8"],
        "drop": top1["float"] - top1["int8"],  # same images, the same float32 graph before quantization
        "reference_top1": top1["reference"] if reference else None,  # the exact simulation (float64)
        "runtime_gap": top1["int8"] - top1["reference"] if reference else None,
        "reference_drop": top1["float"] - top1["reference"] if reference else None,
        "val_images": found["total"],
        "agreement": found["agreement"],
        "files": {"float": f"{EXPORT_DIR}/{FLOAT_ONNX}", "int8": f"{EXPORT_DIR}/{INT8_ONNX}"},
    }
    if layer_images > 0:
        try:
            x = torch.cat([xb.cpu() for xb, _ in _first(val_loader, layer_images)])[:layer_images]
            block["layers"] = layer_sensitivity(q.prepared, q.path, images[: q.record["calib_images"]], x)
            block["layer_images"] = len(x)
        finally:
            q.prepared.unlink(missing_ok=True)
    block["quant_s"] = time.perf_counter() - t0
    return block


def _first(loader, n: int) -> Iterator:
    seen = 0
    for batch in loader:
        if seen >= n:
            return
        seen += len(batch[1])
        yield batch


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools log at INFO, print their histograms' progress and warn about
    pre-processing: keep a trial's log readable."""
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)

"""A runtime-independent reference: an ONNX model (float or QDQ-quantized) executed exactly as the ONNX spec defines
it, in float64 with PyTorch, so that an INT8 runtime's figures can be checked against the same quantized graph.

QuantizeLinear is `saturate(round_half_even(x / scale) + zero_point)` and DequantizeLinear `(q - zero_point) * scale`
(ONNX operator spec, opsets 13-21), per tensor or per axis; every other op runs in float64. A dequantized value is a
float32 scale times a small integer, exact in float64, and products and sums of them are exact up to float64
rounding (about 1e-16 relative), far below one quantization step: the only way this differs from exact integer
arithmetic is a value within ~1e-16 of a rounding boundary. A runtime's integer kernels should agree with it up to
their requantization rounding (one step, rarely); where they do not (saturating int16 pair sums of the u8s8 kernels
on x86 CPUs without VNNI, which onnxruntime documents and `reduce_range` avoids), this is the figure to trust.

`FakeQuant` runs the float graph with chosen tensors fake-quantized and weights replaced by their dequantized
values, with the scales and zero points read from a QDQ model: the per-layer sensitivity analysis switches single
layers on with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadInputError

F64 = torch.float64
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")
OUTPUT_SUFFIX = "_QuantizeLinear_Input"  # onnxruntime's name for a quantized graph output before its quantizer
# onnx TensorProto element types of quantized tensors -> their integer range
INT_RANGES = {2: (0, 255), 3: (-128, 127), 4: (0, 65535), 5: (-32768, 32767), 6: (-(2**31), 2**31 - 1)}


class SimulationError(BadInputError):
    """An ONNX model holding an op or attribute the reference simulation does not implement."""


@dataclass(frozen=True)
class QParams:
    """A quantizer's parameters: scale and zero point (per tensor, or per `axis`) and the integer range."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    axis: int = 1

    def shaped(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """`t` broadcast against a tensor of `ndim` dimensions (per-axis parameters along `axis`)."""
        if t.ndim == 0:
            return t
        shape = [1] * ndim
        shape[self.axis % ndim] = t.numel()
        return t.reshape(shape)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        s, z = self.shaped(self.scale, x.ndim), self.shaped(self.zero_point, x.ndim)
        return (torch.round(x / s) + z).clamp(self.qmin, self.qmax)  # torch.round: half to even, as the spec

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        return (q - self.shaped(self.zero_point, q.ndim)) * self.shaped(self.scale, q.ndim)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequantize(self.quantize(x))


@dataclass
class Graph:
    """An ONNX graph ready to run: nodes in order, initializers as float64 (or integer-valued float64) tensors."""

    nodes: list[Any]
    inits: dict[str, torch.Tensor]
    init_types: dict[str, int]
    input: str
    output: str
    producers: dict[str, Any] = field(default_factory=dict)

    dtype: torch.dtype = F64

    @classmethod
    def load(cls, model: Any, device: str | torch.device = "cpu", dtype: torch.dtype = F64) -> Graph:
        """From an `onnx.ModelProto` or a path to one, every tensor as `dtype` (float64: the exact reference;
        float32 serves analyses whose figures are far above its rounding, e.g. an SQNR)."""
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
        g = proto.graph
        inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).astype(np.float64)).to(device, dtype)
                 for i in g.initializer}  # fmt: skip
        types = {i.name: i.data_type for i in g.initializer}
        names = set(inits)
        inputs = [i.name for i in g.input if i.name not in names]
        if len(inputs) != 1 or len(g.output) != 1:
            raise SimulationError(f"the reference simulation runs one-input one-output models (got {inputs})")
        unknown = sorted({n.op_type for n in g.node} - set(OPS))
        if unknown:
            raise SimulationError(f"ops {unknown} are not simulated; allowed: {', '.join(OPS)}")
        producers = {o: n for n in g.node for o in n.output}
        return cls(list(g.node), inits, types, inputs[0], g.output[0].name, producers, dtype)

    def run(
        self, x: torch.Tensor | None, hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
        keep: Iterable[str] | None = (), *, env: dict[str, torch.Tensor] | None = None, start: int = 0,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Run on `x` (cast to the graph's dtype); `hook(name, value)` may replace every tensor as it is produced
        (the input included). Returns the output and the tensors named in `keep` (None: every tensor). With `env`
        (every tensor of an earlier run, e.g. `keep=None`'s result) the run resumes at node `start` instead."""
        if env is None:
            device = next(iter(self.inits.values())).device if self.inits else x.device
            env = dict(self.inits)
            first = x.to(device=device, dtype=self.dtype)
            env[self.input] = hook(self.input, first) if hook else first
        else:
            env = dict(env)
        wanted = None if keep is None else set(keep)
        for node in self.nodes[start:]:
            args = [env[i] if i else None for i in node.input]
            results = OPS[node.op_type](node, args, self)
            for name, value in zip(node.output, results, strict=False):
                env[name] = hook(name, value) if hook else value
        if wanted is None:
            return env
        return {name: env[name] for name in wanted | {self.output}}

    def logits(self, x: torch.Tensor, hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The graph's output on `x`."""
        return self.run(x, hook)[self.output]


def attrs(node: Any) -> dict[str, Any]:
    """A node's attributes as Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def qparams_of(node: Any, args: list[torch.Tensor | None], graph: Graph) -> QParams:
    """The parameters of a QuantizeLinear/DequantizeLinear node (its zero point's type sets the integer range)."""
    a = attrs(node)
    if a.get("block_size", 0):
        raise SimulationError(f"{node.name}: blocked quantization (block_size) is not simulated")
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    elem = graph.init_types.get(zp_name, 2) if zp_name else a.get("output_dtype", 2) or 2
    if elem not in INT_RANGES:
        raise SimulationError(f"{node.name}: zero point type {elem} is not simulated; allowed: int8, uint8, int16, "
                              "uint16, int32")  # fmt: skip
    zero = args[2] if zp_name else torch.zeros((), dtype=args[1].dtype, device=args[1].device)
    return QParams(args[1], zero, *INT_RANGES[elem], axis=a.get("axis", 1))


def _conv(node, args, graph):
    a = attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise SimulationError(f"{node.name}: Conv auto_pad={a['auto_pad']!r} is not simulated; allowed: NOTSET")
    x, w, b = [*args, None][:3]
    pads = list(a.get("pads", [0] * 2 * (w.ndim - 2)))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:  # asymmetric padding: pad explicitly (F.pad wants last dim first)
        x = F.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])
        pads = [0] * len(pads)
    stride, dil = a.get("strides", [1] * half), a.get("dilations", [1] * half)
    return [F.conv2d(x, w, b, stride=stride, padding=pads[:half], dilation=dil, groups=a.get("group", 1))]


def _gemm(node, args, graph):
    a = attrs(node)
    x, w = args[0], args[1]
    x = x.T if a.get("transA", 0) else x
    w = w.T if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return [y + a.get("beta", 1.0) * args[2] if len(args) > 2 and args[2] is not None else y]


def _reduce_mean(node, args, graph):
    a = attrs(node)
    axes = a.get("axes") or ([int(v) for v in args[1].tolist()] if len(args) > 1 and args[1] is not None else None)
    if axes is None:
        axes = [] if a.get("noop_with_empty_axes", 0) else list(range(args[0].ndim))
    if not axes:
        return [args[0]]
    return [args[0].mean(dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))]


def _reshape(node, args, graph):
    shape = [int(v) for v in args[1].tolist()]
    if not attrs(node).get("allowzero", 0):  # 0 copies the input's dimension
        shape = [args[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [args[0].reshape(shape)]


def _batch_norm(node, args, graph):
    x, scale, bias, mean, var = args[:5]
    eps = attrs(node).get("epsilon", 1e-5)
    shape = [1, -1] + [1] * (x.ndim - 2)
    normed = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    return [normed * scale.reshape(shape) + bias.reshape(shape)]


def _quantize(node, args, graph):
    return [qparams_of(node, args, graph).quantize(args[0])]


def _dequantize(node, args, graph):
    return [qparams_of(node, args, graph).dequantize(args[0])]


OPS: Mapping[str, Callable[[Any, list, Graph], list[torch.Tensor]]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda n, a, g: [a[0] @ a[1]],
    "Relu": lambda n, a, g: [a[0].clamp_min(0)],
    "Sigmoid": lambda n, a, g: [torch.sigmoid(a[0])],
    "Add": lambda n, a, g: [a[0] + a[1]],
    "Mul": lambda n, a, g: [a[0] * a[1]],
    "ReduceMean": _reduce_mean,
    "GlobalAveragePool": lambda n, a, g: [a[0].mean(dim=tuple(range(2, a[0].ndim)), keepdim=True)],
    "Reshape": _reshape,
    "Flatten": lambda n, a, g: [a[0].reshape(int(np.prod(a[0].shape[: attrs(n).get("axis", 1)])), -1)],
    "BatchNormalization": _batch_norm,
    "Identity": lambda n, a, g: [a[0]],
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
}


@dataclass
class FakeQuant:
    """The quantization a QDQ model applies, mapped onto its float graph: activation quantizers by the float tensor
    they quantize, and the dequantized values of its quantized initializers (weights, biases) by their float name.

    A QDQ model from onnxruntime names the quantized copy of initializer `W` `W_quantized` (its DequantizeLinear
    output is `W` or `W_DequantizeLinear_Output`), and quantizes activation `t` with a QuantizeLinear whose input is
    `t` (a graph output `y` is renamed `y_QuantizeLinear_Input` before its quantizer); where it folded a ReLU into the following quantizer (asymmetric activations), the conv's output takes the
    ReLU output's name, so every quantizer still names a tensor of the float graph."""

    activations: dict[str, QParams]
    weights: dict[str, torch.Tensor]

    @classmethod
    def from_qdq(cls, qdq: Graph) -> FakeQuant:
        acts, weights = {}, {}
        for node in qdq.nodes:
            if node.op_type == "QuantizeLinear" and node.input[0] not in qdq.inits:
                params = [None, *(qdq.inits[i] for i in node.input[1:] if i)]
                acts[node.input[0].removesuffix(OUTPUT_SUFFIX)] = qparams_of(node, params, qdq)
            elif node.op_type == "DequantizeLinear" and node.input[0] in qdq.inits:
                args = [qdq.inits[i] if i else None for i in node.input]
                weights[node.input[0].removesuffix("_quantized")] = qparams_of(node, args, qdq).dequantize(args[0])
        return cls(acts, weights)

    def graph(self, float_graph: Graph, weights: Iterable[str] | None = None) -> Graph:
        """`float_graph` with the named initializers (None: all this model quantized) replaced by their dequantized
        values."""
        chosen = self.weights if weights is None else {k: self.weights[k] for k in weights}
        missing = sorted(set(chosen) - set(float_graph.inits))
        if missing:
            raise SimulationError(f"quantized initializers {missing[:3]} are not in the float graph")
        return dataclasses.replace(float_graph, inits={**float_graph.inits, **chosen})

    def hook(self, tensors: Iterable[str] | None = None) -> Callable[[str, torch.Tensor], torch.Tensor]:
        """A `Graph.run` hook fake-quantizing the named activations (None: all this model quantizes)."""
        chosen = self.activations if tensors is None else {k: self.activations[k] for k in tensors}
        return lambda name, value: chosen[name].fake(value) if name in chosen else value


def batches(images: torch.Tensor | np.ndarray, batch: int) -> Iterable[torch.Tensor]:
    """`images` in consecutive batches of `batch`."""
    t = torch.as_tensor(images)
    return (t[i : i + batch] for i in range(0, len(t), batch))


def simulate_top1(graph: Graph, loader: Iterable, hook=None) -> dict[str, Any]:
    """top1 (%) of the simulated graph over an evaluation loader of (images, labels), and its logits."""
    correct, total, logits = 0, 0, []
    with torch.inference_mode():
        for x, y in loader:
            out = graph.logits(torch.as_tensor(x), hook).cpu()
            correct += int((out.argmax(1) == torch.as_tensor(y).cpu()).sum())
            total += len(y)
            logits.append(out)
    return {"top1": 100.0 * correct / max(total, 1), "correct": correct, "total": total, "logits": torch.cat(logits)}

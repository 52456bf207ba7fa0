"""Per-layer quantization sensitivity of a deploy form: per weighted layer, the fused kernel's range and spread, the
activation ranges seen in calibration, and the SQNR of the layer's output (and of the logits) when only that layer
is quantized, with the QDQ model's own scales and zero points (simulate.FakeQuant, float64).

SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) in dB over the images given, y the float output, y_q the output with the
layer quantized (the signal-to-quantization-noise ratio used for per-layer analysis e.g. in Nagel et al., "A White
Paper on Neural Network Quantization", arXiv 2106.08295, 2021, section 3.6). Chu et al. (QARepVGG, AAAI 2024,
section 3) trace RepVGG's INT8 collapse to the fused weights' and the activations' distributions: the figures
here are those distributions and the error each layer adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .simulate import OPS, FakeQuant, Graph, batches

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
MODES = ("sqnr_db", "weight_sqnr_db", "input_sqnr_db")  # both quantized | weights only | input only


def graph_layers(graph: Graph) -> list[dict[str, Any]]:
    """The weighted layers of a float graph, in order: node, module name, weight and bias names, input tensor, the
    nodes from the weighted op to the layer's output (the op, then a ReLU when it is the op's only consumer)."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for node in graph.nodes:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in graph.inits:
            continue
        chain = [node]
        after = consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Relu":
            chain.append(after[0])
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in graph.inits else None
        out.append({"node": node, "module": node.input[1].removesuffix(".weight"), "weight": node.input[1],
                    "bias": bias, "input": node.input[0], "chain": chain, "output": chain[-1].output[0]})  # fmt: skip
    return out


def _run_chain(layer: dict, x: torch.Tensor, inits: dict, hook) -> torch.Tensor:
    """The layer alone on its input `x`: the weighted op (with `inits`' weights) and its ReLU, `hook` applied."""
    value = x
    for node in layer["chain"]:
        args = [value] + [inits[i] if i else None for i in node.input[1:]]
        value = hook(node.output[0], OPS[node.op_type](node, args, None)[0])
    return value


def kernel_stats(w: torch.Tensor) -> dict[str, float]:
    """The fused kernel's range and std, and the spread of its output channels' ranges (max over median of the
    channels' max |w|: what a per-tensor scale has to cover)."""
    per_channel = w.reshape(w.shape[0], -1).abs().amax(1)
    median = float(per_channel.median())
    return {"weight_min": float(w.min()), "weight_max": float(w.max()), "weight_std": float(w.std()),
            "channel_absmax_spread": float(per_channel.max()) / median if median > 0 else math.inf}  # fmt: skip


def _sqnr(signal: float, noise: float) -> float | None:
    if signal == 0:
        return None
    return math.inf if noise == 0 else 10.0 * math.log10(signal / noise)


def _observed(graph: Graph, names: set[str], images: torch.Tensor, batch: int) -> dict[str, list[float]]:
    """min and max of the named tensors over `images` (the float graph)."""
    seen: dict[str, list[float]] = {}
    with torch.inference_mode():
        for x in batches(images, batch):
            for name, t in graph.run(x, keep=names).items():
                lo, hi = float(t.min()), float(t.max())
                old = seen.get(name, [lo, hi])
                seen[name] = [min(old[0], lo), max(old[1], hi)]
    return seen


def layer_sensitivity(
    float_path: Path | Any, int8_path: Path | Any, calib_images: torch.Tensor, images: torch.Tensor, *,
    logits: bool = True, batch: int = 16,
) -> list[dict[str, Any]]:  # fmt: skip
    """`quant.layers`: one record per weighted layer of the float graph `float_path` (the graph the INT8 model
    `int8_path` was made from), in order: see the module docstring and `layer_record` for the fields. Runs in
    float32 (an SQNR of tens of dB is far above its rounding); `logits` adds each layer's effect on the logits (one
    run of the rest of the network per layer, resumed from the float run's tensors)."""
    fg = Graph.load(float_path, dtype=torch.float32)
    fq = FakeQuant.from_qdq(Graph.load(int8_path, dtype=torch.float32))
    layers = graph_layers(fg)
    names = {n for layer in layers for n in (layer["input"], layer["output"])}
    ranges = _observed(fg, names, calib_images, batch)
    sums = [dict.fromkeys(("signal", "logit_signal", "logit_noise", *MODES), 0.0) for _ in layers]
    with torch.inference_mode():
        for x in batches(images, batch):
            ref = fg.run(x, keep=None)  # every tensor: each layer's run of the rest starts from them
            for layer, acc in zip(layers, sums, strict=True):
                if layer["weight"] not in fq.weights:
                    continue
                _accumulate_layer(layer, fq, fg, ref, acc)
                if logits:
                    y = _logits_with(layer, fq, fg, ref)
                    acc["logit_signal"] += float((ref[fg.output] ** 2).sum())
                    acc["logit_noise"] += float(((ref[fg.output] - y) ** 2).sum())
    return [layer_record(i, layer, fg, fq, ranges, acc, logits) for i, (layer, acc) in enumerate(zip(layers, sums))]


def _logits_with(layer: dict, fq: FakeQuant, fg: Graph, ref: dict) -> torch.Tensor:
    """The logits with only `layer` quantized: the float run's tensors up to the layer, the rest run again."""
    env = {**ref, **{n: fq.weights[n] for n in _layer_weights(layer, fq)}}
    env[layer["input"]] = fq.hook(_layer_acts(layer, fq, inside=False))(layer["input"], ref[layer["input"]])
    inside = [n for n in _layer_acts(layer, fq) if n != layer["input"]]
    start = next(i for i, node in enumerate(fg.nodes) if node is layer["node"])
    return fg.run(None, fq.hook(inside), env=env, start=start)[fg.output]


def _layer_weights(layer: dict, fq: FakeQuant) -> list[str]:
    return [n for n in (layer["weight"], layer["bias"]) if n and n in fq.weights]


def _layer_acts(layer: dict, fq: FakeQuant, inside: bool = True) -> list[str]:
    """The activation quantizers of a layer: its input's, and (`inside`) any between its op and its output (e.g. a
    pre-ReLU quantizer where the activations are symmetric and the ReLU stays in the graph)."""
    names = [layer["input"]] + ([n.output[0] for n in layer["chain"][:-1]] if inside else [])
    return [n for n in names if n in fq.activations]


def _accumulate_layer(layer: dict, fq: FakeQuant, fg: Graph, ref: dict, acc: dict) -> None:
    x, y = ref[layer["input"]], ref[layer["output"]]
    qinits = {**fg.inits, **{n: fq.weights[n] for n in _layer_weights(layer, fq)}}
    plain = fq.hook([])
    inside = fq.hook([n for n in _layer_acts(layer, fq) if n != layer["input"]])
    fake_x = fq.hook(_layer_acts(layer, fq, inside=False))(layer["input"], x)
    outputs = {"sqnr_db": _run_chain(layer, fake_x, qinits, inside), "weight_sqnr_db": _run_chain(layer, x, qinits, plain),
               "input_sqnr_db": _run_chain(layer, fake_x, fg.inits, plain)}  # fmt: skip
    acc["signal"] += float((y**2).sum())
    for mode, yq in outputs.items():
        acc[mode] += float(((y - yq) ** 2).sum())


def layer_record(
    index: int, layer: dict, fg: Graph, fq: FakeQuant, ranges: dict, acc: dict, logits: bool
) -> dict[str, Any]:
    """One entry of `quant.layers`: index (graph order), name (module), node, op, shape (in/out channels, kernel,
    stride, groups), quantized, the fused kernel's stats, the input's range in calibration (`input_min`,
    `input_max`) and the range its quantizer represents (`input_clip_min`, `input_clip_max`; null when the input
    stays float), the output's range in calibration, and the SQNRs in dB (null for a float layer)."""
    node, w = layer["node"], fg.inits[layer["weight"]]
    quantized = layer["weight"] in fq.weights
    q = fq.activations.get(layer["input"]) if quantized else None
    a = {a.name: a for a in node.attribute}
    rec = {
        "index": index, "name": layer["module"], "node": node.name, "op": node.op_type,
        "out_channels": int(w.shape[0]) if node.op_type == "Conv" else int(w.shape[0 if _trans_b(node) else 1]),
        "in_channels": int(w.shape[1] * (a["group"].i if "group" in a else 1)) if node.op_type == "Conv" else None,
        "kernel": list(w.shape[2:]) if node.op_type == "Conv" else None,
        "stride": list(a["strides"].ints) if "strides" in a else None,
        "groups": a["group"].i if "group" in a else 1,
        "quantized": quantized, **kernel_stats(w),
        "input_min": ranges[layer["input"]][0], "input_max": ranges[layer["input"]][1],
        "input_clip_min": float(q.dequantize(torch.tensor(float(q.qmin))).min()) if q else None,
        "input_clip_max": float(q.dequantize(torch.tensor(float(q.qmax))).max()) if q else None,
        "output_min": ranges[layer["output"]][0], "output_max": ranges[layer["output"]][1],
    }  # fmt: skip
    for mode in MODES:
        rec[mode] = _sqnr(acc["signal"], acc[mode]) if quantized else None
    rec["logits_sqnr_db"] = _sqnr(acc["logit_signal"], acc["logit_noise"]) if quantized and logits else None
    return rec


def _trans_b(node: Any) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)


def summarize_layers(layers: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The layer that hurts most (lowest finite SQNR of its output, and of the logits) and the median SQNR."""
    quantized = [r for r in layers if r["quantized"] and r["sqnr_db"] is not None and math.isfinite(r["sqnr_db"])]
    if not quantized:
        return {"worst_layer": None, "worst_sqnr_db": None, "median_sqnr_db": None, "worst_logits_layer": None}
    worst = min(quantized, key=lambda r: r["sqnr_db"])
    by_logits = [r for r in quantized if r["logits_sqnr_db"] is not None]
    values = sorted(r["sqnr_db"] for r in quantized)
    return {"worst_layer": worst["name"], "worst_sqnr_db": worst["sqnr_db"], "median_sqnr_db": values[len(values) // 2],
            "worst_logits_layer": min(by_logits, key=lambda r: r["logits_sqnr_db"])["name"] if by_logits else None}  # fmt: skip

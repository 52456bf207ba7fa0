"""Quantization protocols (named records, renamed when changed, validated by config key), `reduce_range: auto` from
the CPU's flags, the exact QDQ simulation (the ONNX spec's rounding and saturation, onnxruntime's float graph, the
fake-quant mapping), INT8 models that keep the classifier in float, the per-layer sensitivity record and its
figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import require_gpu

from repvgg_search.analysis.layer_plot import mean_layers, plot_designs, shared_limits, short_name
from repvgg_search.data.loaders import load_digits_split
from repvgg_search.deploy.onnx_io import export_onnx, onnx_session, run_onnx
from repvgg_search.deploy.quant import deploy_layers, evaluate_int8, ptq, quantize_int8
from repvgg_search.deploy.quant_protocols import (
    PROTOCOLS,
    QuantError,
    QuantProtocol,
    cpu_int8,
    parse_label,
    reduce_range_used,
    resolve_quant_protocol,
)
from repvgg_search.deploy.sensitivity import layer_sensitivity, summarize_layers
from repvgg_search.deploy.simulate import FakeQuant, Graph, SimulationError, batches, simulate_top1
from repvgg_search.errors import BadInputError
from repvgg_search.models import build_model, randomize_bn_, reparameterize_model
from repvgg_search.models.arch import arch_config

# /proc/cpuinfo flags of the reference machine's kind (AMD EPYC 7B12, Zen 2: AVX2, no VNNI) and of a Sapphire
# Rapids Xeon (AVX512-VNNI, AMX), abridged to the lines the detection reads.
EPYC = ("model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi1 avx2 bmi2 adx "
        "sha_ni clzero\n")  # fmt: skip
SPR = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512bw avx512_vnni amx_int8\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"


@pytest.fixture(scope="module")
def digits():
    xt, _, xv, yv, _ = load_digits_split(32, 0.2, 0)
    return xt[:64], list(zip(batches(xv, 128), batches(yv, 128)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A seeded small A0 deploy form (random BN statistics, so the fusion matters) exported to ONNX."""
    net = build_model(arch_config("a0", a=0.25, b=0.25, num_classes=10), seed=0)
    randomize_bn_(net, torch.Generator().manual_seed(0))
    return export_onnx(reparameterize_model(net.eval()), (3, 32, 32), tmp_path_factory.mktemp("tiny") / "f.onnx")


@pytest.fixture(scope="module")
def qdq(tiny, digits, tmp_path_factory):
    """`ort_qdq` on a VNNI CPU's flags (reduce_range off, whatever this machine is), the float graph kept."""
    out = tmp_path_factory.mktemp("qdq") / "q.onnx"
    return quantize_int8(tiny, out, digits[0], PROTOCOLS["ort_qdq"], cpu=cpu_int8(SPR, "x86_64"), keep_prepared=True)


@pytest.fixture(scope="module")
def layers(qdq, digits):
    return layer_sensitivity(qdq.prepared, qdq.path, digits[0], digits[1][0][0][:16])


def test_every_protocol_file_loads_and_ort_qdq_is_the_default():
    assert {"ort_qdq", "symmetric", "ort_legacy"} <= set(PROTOCOLS)
    assert PROTOCOLS["ort_qdq"] == QuantProtocol()  # the file states only its name: its fields are the defaults
    sym = PROTOCOLS["symmetric"]
    assert (sym.activation_type, sym.activation_symmetric, sym.calibrate, sym.weight_symmetric) == (
        "int8", True, "entropy", True)  # fmt: skip
    assert PROTOCOLS["ort_legacy"].keep_float == () and PROTOCOLS["ort_legacy"].reduce_range == "false"


def test_a_changed_protocol_is_renamed_by_its_changes_and_the_name_reads_back():
    p = resolve_quant_protocol({"name": "ort_qdq", "calibrate": "entropy", "keep_float": ["classifier", "stem"]})
    assert p.name == "ort_qdq+calibrate=entropy,keep_float=[classifier,stem]"
    assert resolve_quant_protocol(p.name) == p  # the label is the protocol
    assert resolve_quant_protocol({"name": "ort_qdq", "reduce_range": True}).name == "ort_qdq+reduce_range=true"
    assert resolve_quant_protocol("ort_qdq") == QuantProtocol()
    assert parse_label("symmetric+percentile=99.99,calibrate=percentile") == {
        "name": "symmetric", "percentile": 99.99, "calibrate": "percentile"}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "key", "allowed"),
    [
        ({"activation_type": "int4"}, "quant.activation_type", "uint8, int8"),
        ({"weight_type": "fp8"}, "quant.weight_type", "uint8, int8"),
        ({"calibrate": "mse"}, "quant.calibrate", "minmax, entropy, percentile"),
        ({"reduce_range": "maybe"}, "quant.reduce_range", "auto, true, false"),
        ({"per_channel": "yes"}, "quant.per_channel", "true or false"),
        ({"calib_images": 0}, "quant.calib_images", ">= 1"),
        ({"percentile": 20}, "quant.percentile", "(50, 100]"),
        ({"histogram_bins": 16}, "quant.histogram_bins", ">= 256"),
        ({"activation_symmetric": True}, "quant.activation_symmetric", "activation_type=int8"),
        ({"keep_float": [""]}, "quant.keep_float", "classifier, stem"),
        ({"name": "nope"}, "quant.name", "ort_legacy, ort_qdq, symmetric"),
        ({"colour": "red"}, "quant:", "fields: name, activation_type"),
    ],
)
def test_bad_protocol_fields_are_refused_naming_the_key_and_the_allowed_values(fields, key, allowed):
    with pytest.raises(QuantError) as err:
        resolve_quant_protocol({"name": "ort_qdq", **fields} if "name" not in fields else fields)
    assert key in str(err.value) and allowed in str(err.value) and isinstance(err.value, BadInputError)


@pytest.mark.parametrize(
    ("text", "machine", "auto"),
    [(EPYC, "x86_64", True), (SPR, "x86_64", False), (GRAVITON, "aarch64", False), (None, "x86_64", True)],
    ids=["epyc-avx2", "sapphire-rapids", "graviton", "x86-unreadable"],
)
def test_reduce_range_auto_is_on_exactly_for_x86_without_vnni(text, machine, auto):
    cpu = cpu_int8(text if text is not None else "", machine)
    if text is None:
        cpu["cpuinfo_read"] = False
    assert reduce_range_used("auto", cpu) is auto
    assert reduce_range_used("true", cpu) and not reduce_range_used("false", cpu)


def test_this_machine_is_read_from_proc_cpuinfo():
    cpu = cpu_int8()
    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
                .partition(":")[2].split())  # fmt: skip
    assert cpu["cpuinfo_read"] and cpu["x86"] and cpu["vnni"] == sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    assert reduce_range_used("auto", cpu) is (not cpu["vnni"])


def _qdq_model(values: list[float], zp_type: int, scale: float) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear, per tensor, opset 21."""
    zp = numpy_helper.from_array(np.zeros((), dtype=helper.tensor_dtype_to_np_dtype(zp_type)), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(values)])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(values)])],
                              [numpy_helper.from_array(np.array(scale, dtype=np.float32), "s"), zp])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize(
    ("zp_type", "expected"),
    [(TensorProto.UINT8, [0, 2, 2, 0, 0, 255, 0]), (TensorProto.INT8, [0, 2, 2, -0, -2, 127, -128])],
    ids=["uint8", "int8"],
)
def test_quantize_rounds_half_to_even_and_saturates_as_the_spec_and_onnxruntime(zp_type, expected, tmp_path):
    values = [0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0]
    model = _qdq_model(values, zp_type, 1.0)
    got = Graph.load(model).logits(torch.tensor(values)).tolist()
    assert got == [float(v) for v in expected]
    onnx.save(model, tmp_path / "qdq.onnx")
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "qdq.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(["y"], {"x": np.array(values, dtype=np.float32)})[0].tolist() == got


def test_the_simulated_float_graph_matches_onnxruntime(tiny, digits):
    x = digits[1][0][0][:32]
    ours = Graph.load(tiny).logits(x).numpy()
    theirs = run_onnx(onnx_session(tiny), x)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-5


def test_an_op_it_does_not_simulate_is_refused_by_name():
    nodes = [helper.make_node("Softmax", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    with pytest.raises(SimulationError, match=r"\['Softmax'\] are not simulated; allowed: Conv"):
        Graph.load(helper.make_model(graph))


@pytest.mark.parametrize("name", ["ort_qdq", "symmetric", "ort_legacy"])
def test_fake_quant_on_the_float_graph_is_the_qdq_graph_exactly(name, qdq, tiny, digits, tmp_path):
    """Every quantizer of the QDQ model maps onto a tensor of its float graph (folded ReLUs included), so the
    per-layer analysis quantizes what the runtime's graph quantizes."""
    q = qdq if name == "ort_qdq" else quantize_int8(tiny, tmp_path / "q.onnx", digits[0], PROTOCOLS[name],
                                                    keep_prepared=True)  # fmt: skip
    qdq_graph, flat = Graph.load(q.path), Graph.load(q.prepared)
    fq = FakeQuant.from_qdq(qdq_graph)
    x = digits[1][0][0][:64]
    assert torch.equal(qdq_graph.logits(x), fq.graph(flat).logits(x, fq.hook()))
    assert len(fq.weights) == 2 * len(deploy_layers(onnx.load(q.prepared))) - 2 * bool(PROTOCOLS[name].keep_float)


def test_ort_qdq_keeps_the_classifier_float_and_reduce_range_makes_weights_7_bit(qdq, tiny, digits, tmp_path):
    on = quantize_int8(tiny, tmp_path / "on.onnx", digits[0], PROTOCOLS["ort_qdq"], cpu=cpu_int8(EPYC, "x86_64"))
    off = qdq  # the same protocol on a VNNI CPU's flags
    assert on.record["reduce_range_used"] and not off.record["reduce_range_used"]
    assert on.record["protocol"]["reduce_range"] == "auto" and on.record["kept_float"] == ["linear"]

    def weights(path: Path) -> dict[str, np.ndarray]:
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer
                if i.name.endswith(".weight_quantized")}  # fmt: skip

    assert max(int(np.abs(w).max()) for w in weights(on.path).values()) <= 64  # onnxruntime's 7-bit int8 range
    assert max(int(np.abs(w).max()) for w in weights(off.path).values()) == 127
    graph = onnx.load(on.path).graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    assert gemm.output[0] == "logits" and "linear.weight" in gemm.input  # float weights, float logits
    assert "linear.weight_quantized" not in weights(on.path)


def test_keep_float_names_a_layer_or_is_refused_with_the_layers(tiny, digits, tmp_path):
    p = resolve_quant_protocol({"name": "ort_qdq", "keep_float": ["stem", "stage4.0.rbr_reparam"]})
    q = quantize_int8(tiny, tmp_path / "q.onnx", digits[0], p)
    assert q.record["kept_float"] == ["stage0.rbr_reparam", "stage4.0.rbr_reparam"]
    assert "linear.weight_quantized" in {i.name for i in onnx.load(q.path).graph.initializer}
    bad = resolve_quant_protocol({"name": "ort_qdq", "keep_float": ["stage9.rbr_reparam"]})
    with pytest.raises(QuantError, match=r"quant.keep_float names 'stage9.rbr_reparam'.*stage1.0.rbr_reparam"):
        quantize_int8(tiny, tmp_path / "bad.onnx", digits[0], bad)


def test_ptq_records_the_protocol_the_reference_and_the_drop_on_the_same_images(tiny, digits, tmp_path):
    model = build_model(arch_config("a0", a=0.25, b=0.25, num_classes=10), seed=0)
    randomize_bn_(model, torch.Generator().manual_seed(0))
    deploy = reparameterize_model(model.eval())
    block = ptq(deploy, tmp_path, digits[0], digits[1], PROTOCOLS["ort_qdq"], layer_images=8)
    assert block["protocol"] == PROTOCOLS["ort_qdq"].fields() and block["val_images"] == 359
    assert block["drop"] == pytest.approx(block["float_onnx_top1"] - block["int8_top1"])
    assert block["runtime_gap"] == pytest.approx(block["int8_top1"] - block["reference_top1"])
    assert block["reference_drop"] == pytest.approx(block["float_onnx_top1"] - block["reference_top1"])
    assert block["agreement"]["int8_ties"] == 0  # float logits
    assert len(block["layers"]) == 23 and block["layer_images"] == 8
    assert not (tmp_path / "export" / "deploy.int8.pre.onnx").exists()  # the pre-processed graph is cleaned up
    again = evaluate_int8(tmp_path / block["files"]["float"], tmp_path / block["files"]["int8"], digits[1])
    assert again["top1"]["reference"] == block["reference_top1"]  # the simulation is deterministic
    assert simulate_top1(Graph.load(tmp_path / block["files"]["int8"]), digits[1])["top1"] == block["reference_top1"]


def test_layer_records_have_the_fused_kernels_and_calibrated_ranges(qdq, layers):
    names = [module for _, module in deploy_layers(onnx.load(qdq.prepared))]
    assert [r["name"] for r in layers] == names and names[-1] == "linear"
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(qdq.prepared).graph.initializer}
    for r in layers[:-1]:
        w = weights[r["name"] + ".weight"]
        assert (r["weight_min"], r["weight_max"]) == pytest.approx((w.min(), w.max()))
        assert r["weight_std"] == pytest.approx(w.std(ddof=1), rel=1e-4)
        step = (r["input_clip_max"] - r["input_clip_min"]) / 255
        # min-max calibration on the same images: the quantizer covers what calibration saw, to one step
        assert r["input_clip_min"] <= r["input_min"] + step and r["input_max"] <= r["input_clip_max"] + step
        assert abs(r["input_clip_max"] - r["input_max"]) <= step
        assert r["quantized"] and all(np.isfinite(r[k]) for k in ("sqnr_db", "weight_sqnr_db", "logits_sqnr_db"))
    assert not layers[-1]["quantized"] and layers[-1]["sqnr_db"] is None  # the classifier stays float
    assert summarize_layers(layers)["worst_layer"] in names


def test_the_stem_sqnr_is_what_the_qdq_graph_computes(qdq, layers, digits):
    """Independently of FakeQuant: the QDQ graph's own stem output (ReLU folded into its quantizer: apply it)
    against the float graph's, over the same images."""
    x = digits[1][0][0][:16]
    out = "relu"  # the stem's ReLU output (the exporter's name), quantized by the next layer
    flat = Graph.load(qdq.prepared).run(x, keep=[out])[out]
    qdq_out = Graph.load(qdq.path).run(x, keep=[out])[out].clamp_min(0)
    expected = 10 * np.log10(float((flat**2).sum()) / float(((flat - qdq_out) ** 2).sum()))
    assert layers[0]["sqnr_db"] == pytest.approx(expected, abs=1e-3)


def test_per_tensor_weights_lose_more_than_per_channel(layers, tiny, digits, tmp_path):
    p = resolve_quant_protocol({"name": "ort_qdq", "per_channel": False})
    q = quantize_int8(tiny, tmp_path / "t.onnx", digits[0], p, cpu=cpu_int8(SPR, "x86_64"), keep_prepared=True)
    per_tensor = layer_sensitivity(q.prepared, q.path, digits[0], digits[1][0][0][:16], logits=False)
    worse = [r["weight_sqnr_db"] for r in per_tensor if r["quantized"]]
    better = [r["weight_sqnr_db"] for r in layers if r["quantized"]]
    assert np.mean(worse) < np.mean(better)


def _layers(worst: float) -> list[dict]:
    rows = []
    for i, name in enumerate(["stage0.rbr_reparam", "stage1.0.rbr_reparam", "stage1.1.rbr_reparam", "linear"]):
        quantized = name != "linear"
        rows.append({"name": name, "quantized": quantized, "weight_min": -0.5 * (i + 1), "weight_max": 2.0 * (i + 1),
                     "weight_std": 0.05, "input_min": 0.0, "input_max": 4.0 + i, "input_clip_min": 0.0 if quantized
                     else None, "input_clip_max": 4.1 + i if quantized else None, "sqnr_db": worst + i if quantized
                     else None, "weight_sqnr_db": worst + 1 + i if quantized else None, "input_sqnr_db": 40.0 if
                     quantized else None, "logits_sqnr_db": 35.0 if quantized else None})  # fmt: skip
    return rows


def test_a_figure_per_design_on_shared_axes(tmp_path):
    designs = {"full": _layers(20.0), "qarepvgg": _layers(30.0)}
    paths = plot_designs(designs, tmp_path, caption="ort_qdq, digits 32 px, 64 images")
    assert set(paths) == {"full", "qarepvgg"}
    from matplotlib.image import imread

    for path in paths.values():
        image = imread(path)
        assert image.shape[0] > 600 and image.shape[1] > 800 and image[..., :3].std() > 0.05  # drawn, not blank
    limits = shared_limits(designs)
    assert limits["sqnr"][0] < 20.0 and limits["sqnr"][1] > 40.0  # both designs' SQNRs fit on one axis
    assert short_name("stage3.12.rbr_reparam") == "s3.12" and short_name("stage0.rbr_reparam") == "s0"


def test_seeds_average_per_layer_and_other_architectures_are_refused():
    mean = mean_layers([_layers(20.0), _layers(30.0)])
    assert [r["sqnr_db"] for r in mean] == [25.0, 26.0, 27.0, None] and mean[0]["name"] == "stage0.rbr_reparam"
    with pytest.raises(ValueError, match="not one architecture"):
        mean_layers([_layers(20.0), _layers(20.0)[:2]])


def test_the_figure_module_imports_without_torch():
    code = "import sys, repvgg_search.analysis.layer_plot; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_reference_device_that_is_not_there_is_refused_by_key(qdq, tiny, digits):
    absent = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"  # one past the last
    with pytest.raises(QuantError, match=r"quant.reference_device: device='cuda(:\d+)?' but "):
        evaluate_int8(tiny, qdq.path, digits[1][:1], device=absent)


@pytest.mark.gpu
def test_the_reference_on_cuda_is_the_cpus(qdq, tiny, digits):
    require_gpu()
    cpu, cuda = (evaluate_int8(tiny, qdq.path, digits[1], device=d) for d in ("cpu", "cuda"))
    assert cpu["top1"] == cuda["top1"]  # float64 on both: the same argmax on every image

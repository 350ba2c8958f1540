"""INT8 3x3 convs on AVX2 without VNNI run Winograd F(4x4, 3x3) in float32 on the integers
(edgec.codegen.winograd.winograd_for_int8), and convs whose sums float32 holds exactly run
the float kernel. Both must compute what ONNX Runtime computes on the same QDQ model, to
the last requantized step, and the dot-product targets must keep their integer kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_quantize import compile_int8, ort_session

from conftest import save_model
from edgec import build, runtime, targets
from edgec.quant import QuantizeOptions


def _three_by_three_chain(path: Path) -> Path:
    """A 3-channel 5x5 stem, then 3x3 stride-1 convs of 64 channels giving 19x14 (4x4
    tiles do not divide it; uneven padding), a residual add, a 2x2 max pool and a 3x3 conv
    of 128 channels on 9x7, F(2x2, 3x3)'s: 64 x 9 = 576 terms per output, past what float32
    sums exactly."""
    rng = np.random.default_rng(11)

    def weight(name, *shape):
        scale = 1.0 / np.sqrt(np.prod(shape[1:])) if len(shape) > 1 else 0.1
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 2, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w3", "b3"], ["out"], pads=[1, 1, 1, 1]),
    ]
    inits = [weight("w0", 64, 3, 5, 5), weight("b0", 64), weight("w1", 64, 64, 3, 3),
             weight("b1", 64), weight("w2", 64, 64, 3, 3), weight("b2", 64),
             weight("w3", 128, 64, 3, 3), weight("b3", 128)]
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 18, 14])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 128, 9, 7])],
        inits, path)


def _kernel_names(model, target: str) -> list[str]:
    from tvm import tirx

    lowered = build.lower(model, targets.load(target))
    return [g.name_hint for g, f in lowered.functions.items() if isinstance(f, tirx.PrimFunc)]


@pytest.mark.parametrize("layout", ["NHWC", "NCHWc"])
def test_avx2_int8_3x3_convs_run_winograd_and_match_onnxruntime_step_for_step(layout, tmp_path):
    source = _three_by_three_chain(tmp_path / "chain.onnx")
    samples = np.random.default_rng(12).uniform(-1, 1, (8, 1, 3, 18, 14)).astype(np.float32)
    out = tmp_path / "chain.so"
    result = compile_int8(source, out, samples, "x86_64", check=False, layout=layout)
    names = _kernel_names(result.model, "x86_64")
    winograd = [n for n in names if "winograd" in n]
    assert len(winograd) == 3, names  # the three 3x3 convs; the 5x5 stem is direct
    if layout == "NHWC":  # the stem's 75 terms sum exactly in float: no 4-channel dot
        assert not [n for n in names if "int8" in n], names

    session = ort_session(result.model.reference)
    library = runtime.load(out)
    unit = _accumulator_unit(result.model.reference)
    for x in samples[:4]:
        got = library.run({"x": x})["out"]
        want = session.run(None, {"x": x})[0]
        # In units of the last conv's int32 sum (its output is dequantized, not requantized):
        # rounding leaves every sum the exact integer but where float error and upstream
        # requantize steps meet at a rounding boundary; truncating had left half one short.
        units = np.abs(got - want) / unit
        assert (units > 0.5).mean() <= 1e-3, (units > 0.5).mean()
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


def _accumulator_unit(qdq_model) -> np.ndarray:
    """Per output channel (1, C, 1, 1): the value of one unit of the last Conv's int32 sum,
    its input's scale times its weight's, read from the QDQ model's DequantizeLinear nodes."""
    graph = qdq_model.graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    made_by = {out: node for node in graph.node for out in node.output}
    conv = [n for n in graph.node if n.op_type == "Conv"][-1]
    data_scale, weight_scale = (values[made_by[name].input[1]] for name in conv.input[:2])
    return (data_scale * weight_scale).reshape(1, -1, 1, 1)


@pytest.mark.parametrize("target", ["x86_64-avx512-vnni", "rpi5"])
def test_dot_product_targets_keep_their_integer_3x3_kernels(target, tmp_path):
    """VNNI and sdot make 4x the multiply-adds of FMAs per instruction: Winograd in float is
    for the AVX2 dot product only (lowered, not run, so any host can check it)."""
    from edgec import layout, quantized

    source = _three_by_three_chain(tmp_path / "chain.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(12).uniform(-1, 1, (4, 1, 3, 18, 14)).astype(np.float32))
    loaded = targets.load(target)
    imported, _ = quantized.import_quantized(str(source), None,
                                             QuantizeOptions("int8", calib=str(calib)), loaded,
                                             lambda _message: None)
    names = _kernel_names(layout.apply_layout(imported, "default", loaded), target)
    assert [n for n in names if "int8" in n], names
    assert not [n for n in names if "winograd" in n], names

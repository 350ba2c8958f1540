"""INT8 residual adds round as ONNX Runtime's QLinearAdd does, bit for bit.

A QDQ add (dequantize both inputs, add in float, quantize) and ONNX Runtime's fused
QLinearAdd disagree by one step where the sum lies within a few ulps of a half step. The
scale sets below are found by running ONNX Runtime and numpy's QDQ formula on every
(a, b) pair and keeping those where the two disagree, so the test exercises exactly the
near-ties (it fails with the QDQ formula: SSD-Lite INT8 failed compile's check on one).
Among the first three uint8 and two int8 sets, one each also tells a fused multiply-add
from a multiply and an add rounded twice (numpy, checked when the fmas moved to float32).
"""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import build, check, frontend, runtime, targets
from edgec.quant import integer

PAIRS = 256 * 256
ONNX_TYPE = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}


def _pairs(dtype: str) -> dict[str, np.ndarray]:
    """Every (a, b) pair of 8-bit values, as two [1, 65536] inputs."""
    values = np.arange(256).astype(np.uint8).view(dtype)
    a, b = np.meshgrid(values, values, indexing="ij")
    return {"a": a.reshape(1, PAIRS), "b": b.reshape(1, PAIRS)}


def _qdq_add(scales: tuple[float, float, float], zeros: tuple[int, int, int], dtype: str):
    """DQ(a) + DQ(b) -> Q, 8-bit in and out, the graph ONNX Runtime fuses into QLinearAdd
    (x86 MLAS; the same kernel serves int8 and uint8)."""
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["a_f"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["b_f"]),
             helper.make_node("Add", ["a_f", "b_f"], ["sum"]),
             helper.make_node("QuantizeLinear", ["sum", "sc", "zc"], ["c"])]
    inits = [numpy_helper.from_array(np.array(s, np.float32), n)
             for n, s in zip(("sa", "sb", "sc"), scales, strict=True)]
    inits += [numpy_helper.from_array(np.array(z, dtype), n)
              for n, z in zip(("za", "zb", "zc"), zeros, strict=True)]
    graph = helper.make_graph(
        nodes, "qdq_add",
        [helper.make_tensor_value_info(n, ONNX_TYPE[dtype], [1, PAIRS]) for n in "ab"],
        [helper.make_tensor_value_info("c", ONNX_TYPE[dtype], [1, PAIRS])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _near_tie_cases(dtype: str, wanted: int) -> list[tuple[object, np.ndarray, int]]:
    """(model, ORT's output, how many pairs the QDQ formula gets wrong) for random scale sets
    where numpy's QDQ formula and ONNX Runtime disagree somewhere."""
    rng = np.random.default_rng(15)
    pairs, info = _pairs(dtype), np.iinfo(dtype)
    cases = []
    for _ in range(400):
        scales = tuple(np.float32(10 ** rng.uniform(-2.5, -0.5)) for _ in range(3))
        zeros = tuple(int(z) for z in rng.integers(info.min, info.max + 1, 3))
        model = _qdq_add(scales, zeros, dtype)
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        want = session.run(None, pairs)[0]
        f32 = np.float32
        qdq = ((pairs["a"].astype(f32) - f32(zeros[0])) * scales[0]
               + (pairs["b"].astype(f32) - f32(zeros[1])) * scales[1])
        formula = np.clip(np.rint(qdq / scales[2]) + zeros[2], info.min, info.max)
        wrong = int((formula != want).sum())
        if wrong:
            cases.append((model, want, wrong))
        if len(cases) == wanted:
            return cases
    pytest.fail(f"only {len(cases)} of 400 random scale sets put an (a, b) pair on a near-tie")


def _compiled(model, path, target):
    """edgec's lowering of the QDQ add (the decomposition compile applies after calibration)
    built for `target`."""
    path.write_bytes(model.SerializeToString())
    imported = frontend.import_model(str(path))
    lowered = imported.evolve("quantize:int8", ir=integer.decompose_qdq(imported.ir))
    return lowered, build.compile_to_executable(lowered, target, None, {})


def _assert_bit_exact(got: np.ndarray, want: np.ndarray, wrong: int) -> None:
    assert got.dtype == want.dtype
    differ = int((got != want).sum())
    assert differ == 0, (f"{differ} of {PAIRS} sums differ from ONNX Runtime's QLinearAdd "
                         f"(the QDQ formula gets {wrong} wrong)")


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_int8_residual_add_rounds_near_ties_as_onnxruntime(tmp_path, target):
    if target == "x86_64-avx512" and "avx512f" not in targets.cpu_flags():
        pytest.skip("this CPU has no AVX-512: the AVX-512 code cannot run here")
    loaded = targets.load(target)
    for index, (model, want, wrong) in enumerate(_near_tie_cases("uint8", 3)):
        lowered, executable = _compiled(model, tmp_path / f"add{index}.onnx", loaded)
        runnable, _ = check.host_runnable(lowered, loaded, executable)
        _assert_bit_exact(check.run(runnable, lowered, _pairs("uint8"))["c"], want, wrong)
    # The single rounding comes from the FMA unit, in float32: a detour through float64
    # (the first version) converted every value to double and back and halved the MAC
    # rate of ResNet-50's convs that carry a residual add.
    code = build.assembly(executable)
    assert re.search(r"\bvfmadd\w*ps\b", code), "the add's fmas are not fused float32 fmas"
    assert not re.search(r"\bv?cvt\w*pd\b|\bv?cvtpd2\w*", code), "the add converts to float64"


@pytest.mark.slow
def test_int8_residual_add_rounds_near_ties_as_onnxruntime_on_the_emulated_board(tmp_path,
                                                                                  emulated_board):
    """rpi5's INT8 activations are int8 (sdot multiplies int8 by int8): the signed adds,
    compiled for aarch64 and run there."""
    loaded = targets.load("rpi5")
    cases = _near_tie_cases("int8", 2)
    libraries = []
    for index, (model, _want, _wrong) in enumerate(cases):
        lowered, executable = _compiled(model, tmp_path / f"add{index}.onnx", loaded)
        build.export(executable, lowered, loaded, tmp_path / f"add{index}.so")
        libraries.append(tmp_path / f"add{index}.so")
    session = emulated_board.connect(session_timeout=300)
    for library, (_model, want, wrong) in zip(libraries, cases, strict=True):
        on_board = runtime.load_remote(session, library, check=False)
        _assert_bit_exact(on_board.run(_pairs("int8"))["c"], want, wrong)
        del on_board
    del session

"""Codegen: every op edgec has a kernel for gets that kernel's schedule, a kernel that cannot
be scheduled fails loudly, and the shipped tuning logs still match the tasks compile builds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import function_code, save_model
from edgec import build, frontend, layout, pipeline, targets, tune
from edgec.errors import BuildError


@pytest.fixture
def every_kernel_net(tmp_path: Path) -> Path:
    """A 3-channel stem, a Winograd-sized 3x3 conv, a depthwise conv, a 1x1 conv and a
    classifier head: one op for each of edgec's kernels."""
    rng = np.random.default_rng(3)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32),
                                       name)

    inits = [weight("stem", 16, 3, 3, 3), weight("w3", 16, 16, 3, 3),
             weight("dw", 16, 1, 3, 3), weight("pw", 32, 16, 1, 1), weight("fc", 10, 32),
             weight("fcb", 10)]
    nodes = [
        helper.make_node("Conv", ["image", "stem"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["a1"]),
        helper.make_node("Conv", ["a1", "w3"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["b1"]),
        helper.make_node("Conv", ["b1", "dw"], ["c"], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Conv", ["c", "pw"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["e"]),
        helper.make_node("Flatten", ["e"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
    ]
    return save_model(
        nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits,
        tmp_path / "every_kernel.onnx")


@pytest.mark.parametrize("target_name", ["x86_64", "x86_64-avx512", "rpi4"])
def test_no_conv_or_matmul_falls_back_to_the_generic_schedule(every_kernel_net, target_name):
    """A renamed kernel block would leave its function to the generic schedule (45x slower,
    every output still right): the compile report's generic list must hold no conv or
    matmul."""
    target = targets.load(target_name)
    model = layout.apply_layout(frontend.import_model(str(every_kernel_net)), "default", target)
    stats: dict = {}
    build.compile_to_executable(model, target, None, stats)
    assert stats["generic"] == len(stats["generic_names"]) > 0  # pools, flatten: generic
    kernels = [n for n in stats["generic_names"]
               if any(op in n for op in ("conv2d", "matmul", "dense", "winograd"))]
    assert not kernels, stats["generic_names"]


def test_a_kernel_that_cannot_be_scheduled_fails_loudly(every_kernel_net, monkeypatch):
    """Before, any error in a kernel's schedule silently fell back to the generic one."""
    from edgec.codegen import schedules

    def broken(self, *_schedule_arguments):
        raise RuntimeError("loop nest changed")

    monkeypatch.setattr(schedules.PackedConv, "_schedule", broken)
    target = targets.load("x86_64")
    model = layout.apply_layout(frontend.import_model(str(every_kernel_net)), "default", target)
    with pytest.raises(RuntimeError, match=r"schedule for its \w*conv2d_nchwc kernel failed.*"
                                           r"loop nest changed.*bug in edgec") as caught:
        build.compile_to_executable(model, target)
    assert not isinstance(caught.value, BuildError)  # a bug, not a one-line user error


@pytest.mark.slow
@pytest.mark.parametrize(("model", "target_name"), [("mobilenet_v2", "x86_64"),
                                                     ("resnet18", "x86_64-avx512-vnni"),
                                                     ("mobilenet_v3_small", "rpi5")])
def test_shipped_logs_cover_every_function_of_the_models_they_were_tuned_on(model,
                                                                             target_name):
    """The restructure kept TE compute names and workloads: every function of a model the
    shipped database was tuned on still finds its record (MobileNetV2 34 of 34 and ResNet-18
    20 of 20 before the move); those whose record lost in the model (the in-model check's
    verdict, counted as rejected) found theirs too. Except kernels newer than the database
    (2026-12-07, AVX-512): ResNet-18's 512-channel 7x7 convs on Winograd F(2x2, 3x3) and the
    NHWC stem reading the NCHW image (edgec.layout.stems.read_nchw_images), found by what
    they compute, not by name."""
    target = targets.load(target_name)
    assert model in tune.read_metadata(tune.logs_root() / target.name)["models"]
    prepared = pipeline.prepare(f"zoo:{model}", target, None, "default")
    stats: dict = {}
    lowered = build.lower(prepared, target, tune.database_schedule(target, None, stats))
    assert stats["functions"] > 0
    newer = {name for name in stats["without_record"]
             if _newer_than_the_shipped_logs(lowered[name].script())}
    expected = 3 if target_name == "x86_64-avx512-vnni" else 0
    assert len(newer) == expected, (newer, stats["without_record"])
    assert stats["tuned"] + stats["rejected"] + stats["stale"] + len(newer) == stats[
        "functions"], stats


def _newer_than_the_shipped_logs(script: str) -> bool:
    """A Winograd F(2x2, 3x3) conv (a 4x4 transformed input tile) or an NHWC conv reading a
    3-channel NCHW image (its first buffer (1, 3, H, W), its output NHWC)."""
    import re

    f2 = re.search(r"winograd_input = T\.\w*alloc_buffer\(\(T\.int64\(4\)", script)
    image = re.search(r"def main\(\w+: T\.Buffer\(\(T\.int64\(1\), T\.int64\(3\), "
                      r"T\.int64\(224\), T\.int64\(224\)\)", script)
    return bool(f2) or (bool(image) and "conv2d_nhwc_packed" in script)


def test_a_tvm_codegen_failure_names_the_op_and_its_layouts_not_an_ir_line(monkeypatch,
                                                                         tmp_path):
    """An op left un-legalized fails in VM codegen with an IR dump as its last line; the
    error names the stage, the op with its layouts and what to try instead."""
    import tvm
    from tvm import relax

    from edgec.codegen import legalize
    from edgec.model import Model, TensorSpec

    monkeypatch.setattr(legalize, "_by_tvm", lambda bb, call: call)  # the old behaviour
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 8, 8), "float32"))
    weight = relax.const(np.ones((16, 16, 1, 1), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, weight, out_layout="NCHW8c"))
        bb.emit_func_output(y)
    model = Model("mixed", None, bb.get(), (TensorSpec("x", (1, 16, 8, 8)),),
                  (TensorSpec("y", (1, 2, 8, 8, 8)),), layout="NCHW8c")
    monkeypatch.setenv("EDGEC_DEBUG", "1")
    with pytest.raises(BuildError) as caught:
        build.compile_to_executable(model, targets.load("x86_64"))
    message = str(caught.value)
    assert "\n" not in message and "Metadata omitted" not in message
    assert "generate code for mixed" in message and "conv2d NCHW→NCHW8c s1" in message
    assert "--layout NCHW " in message  # the model was packed: the plain layout is the way out
    saved = Path(message.split("the IR that failed is in ")[1].split(";")[0])
    assert "conv2d" in saved.read_text()
    assert isinstance(caught.value.__cause__, tvm.error.InternalError | RuntimeError | ValueError)


def _stem_then(path: Path, seed: int, side: int, nodes: list, out_side: int,
               out_width: int | None = None) -> Path:
    """A 24-channel 3x3/2 conv and ReLU ("r") on a 3 x side x side image, then `nodes`
    ending in "y" of out_side x out_width (out_side wide unless given)."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array((rng.standard_normal((24, 3, 3, 3)) * 0.3)
                                     .astype(np.float32), "w")
    stem = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Relu", ["c"], ["r"])]
    return save_model(
        stem + nodes,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [1, 24, out_side, out_width or out_side])],
        [weight], path)


def pooled_stem(path: Path) -> Path:
    """ShuffleNetV2's stem at 64x64: a 24-channel 3x3/2 conv, ReLU, then 3x3/2 max and
    average pools (padded) over the plain rows, added."""
    return _stem_then(path, 8, 64, [
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["r"], ["a"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["m", "a"], ["y"]),
    ], 16)


@pytest.mark.parametrize(("target_name", "objdump", "vector_max", "scalar_max"), [
    ("x86_64", "objdump", r"vmaxps\s+[^\n]*%ymm", r"vmaxss"),
    ("x86_64-avx512-vnni", "objdump", r"vmaxps\s+[^\n]*%[xyz]mm", r"vmaxss"),
    ("rpi5", "aarch64-linux-gnu-objdump", r"(fmax|fcmgt)\s+v\d+\.4s", r"(fmax|fcsel)\s+s\d+"),
])
def test_channels_last_pools_read_their_padding_in_place_in_channel_vectors(
        tmp_path, target_name, objdump, vector_max, scalar_max):
    """NHWC pools (3x3, stride 2, padded): the window's bounds test depends on the pixel, not
    the channel, so they read the padding in place: the scheduled pool has no padded copy
    of its input (once taken for a pool over plain rows, ResNet-18's stem pool copied 3.3 MB
    and ran 2.3x slower), its maximum is over vectors of channels, and the model matches
    ONNX Runtime (compile's check; for rpi5 through a host build)."""
    import re

    from conftest import run_cli

    model = pooled_stem(tmp_path / "p.onnx")
    out = tmp_path / "pooled.so"
    result = run_cli("compile", str(model), "-t", target_name, "--layout", "NHWC",
                     "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^y\s.*\sok$", result.stdout, re.MULTILINE), result.stdout
    code = function_code(out, objdump, "max_pool2d")
    assert re.search(vector_max, code) and not re.search(scalar_max, code), code[:3000]
    target = targets.load(target_name)
    lowered = build.lower(pipeline.prepare(str(model), target, None, "NHWC"), target)
    pools = [f.script() for g, f in lowered.functions_items() if "pool" in g.name_hint]
    assert len(pools) == 2 and not any("pad_temp" in text for text in pools), pools


@pytest.mark.parametrize(("target_name", "objdump", "vector_add", "deinterleave",
                          "lane_by_lane"), [
    ("x86_64", "objdump", r"vaddps\s+[^\n]*%ymm", r"\b(vshufps|vpermps|vpermpd)\b",
     r"\bvinsertps\b"),
    ("x86_64-avx512", "objdump", r"vaddps\s+[^\n]*%[xyz]mm",
     r"\b(vshufps|vpermt2ps|vpermi2ps|vpermps)\b", r"\bvinsertps\b"),
    ("rpi5", "aarch64-linux-gnu-objdump", r"fadd\s+v\d+\.4s", r"\b(ld2|ld3|uzp1|uzp2)\b",
     None),
])
def test_pools_over_plain_rows_take_a_vector_of_output_columns_per_window_tap(
        tmp_path, target_name, objdump, vector_add, deinterleave, lane_by_lane):
    """NCHW average pools (3x3, stride 2): the pool's code sums whole vectors of output
    columns, and the taps' stride-2 columns are read as wide loads split by shuffles
    (LLVM's interleaved groups, as for rows no vector divides below), not built lane by
    lane: TVM's own vectorized row had inserted each lane (36 vinsertps on x86), ResNet's
    stem pool (a max pool then, now codegen.row_pools') 0.52 ms in ResNet-50 NCHW against
    packed's 0.19 on AVX2, 0.36 left to LLVM (Ice Lake Xeon, 2 threads). The model still
    matches ONNX Runtime (compile's check; for rpi5 through a host build)."""
    import re

    code = _nchw_build_code(pooled_stem(tmp_path / "p.onnx"), target_name, objdump,
                            "avg_pool2d_compute_")
    assert re.search(vector_add, code) and re.search(deinterleave, code), code[:3000]
    assert not (lane_by_lane and re.search(lane_by_lane, code)), code[:3000]


def strided_max_pools(path: Path) -> Path:
    """Max pools of every shape row_pools takes: ResNet's 3x3/2 padded pool (after a conv,
    so it reads a computed tensor), then a 3x2 pool of strides (3, 2), padding (2, 1, 0,
    1) and ceil mode, with a ReLU fused after it."""
    return _stem_then(path, 8, 64, [
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Neg", ["m"], ["n"]),
        helper.make_node("MaxPool", ["n"], ["p"], kernel_shape=[3, 2], strides=[3, 2],
                         pads=[2, 1, 0, 1], ceil_mode=1),
        helper.make_node("Relu", ["p"], ["y"]),
    ], 6, out_width=9)


@pytest.mark.parametrize(("target_name", "objdump", "row_max"), [
    ("x86_64", "objdump", r"vmaxps\s+-?(0x[0-9a-f]+)?\(%[a-z0-9]+,%[a-z0-9]+,4\),%ymm"),
    ("x86_64-avx512", "objdump", r"vmaxps\s+-?(0x[0-9a-f]+)?\(%[a-z0-9]+,%[a-z0-9]+,4\),%[yz]mm"),
    ("rpi5", "aarch64-linux-gnu-objdump", r"(fmax|fcmgt)\s+v\d+\.4s"),
])
def test_strided_nchw_max_pools_take_their_window_rows_first(tmp_path, target_name, objdump,
                                                              row_max):
    """NCHW max pools of column stride 2 or more (codegen.row_pools): each output row's
    window rows are reduced column by column into a row buffer (contiguous vectors of the
    input), then its window columns; no padded copy of the input (clamped indices stand
    for the padding). Padded, asymmetric, ceil-mode and (3, 2)-strided pools, one with a
    ReLU fused after it, match ONNX Runtime (compile's check; rpi5 through a host build).
    ResNet-18 NCHW's stem pool alone 0.212 -> 0.076 ms, SqueezeNet's three 0.250 -> 0.087
    (AVX2, Ice Lake Xeon, 2 threads); by the rpi5 estimate 1.31 -> 0.76 ms."""
    import re

    model = strided_max_pools(tmp_path / "p.onnx")
    code = _nchw_build_code(model, target_name, objdump, "max_pool2d")
    assert re.search(row_max, code), code[:3000]
    target = targets.load(target_name)
    lowered = build.lower(pipeline.prepare(str(model), target, None, "NCHW"), target)
    pools = [f.script() for g, f in lowered.functions_items() if "max_pool" in g.name_hint]
    assert len(pools) == 2, [g.name_hint for g in lowered.functions_items()]
    for text in pools:
        assert "max_pool_rows" in text and "pad_temp" not in text, text


def test_row_pools_take_a_pool_only_where_every_window_holds_an_input_pixel():
    """row_pools clamps indices in place of the padding, which is the padded maximum only
    for a window holding an input pixel; a window of padding alone (padding as wide as the
    kernel, which ONNX Runtime refuses) must stay with TOPI. Checked against counting each
    window's input pixels, over every small geometry, floor and ceil mode."""
    from edgec.codegen.row_pools import _windows_hold_input

    checked = 0
    for size in range(1, 12):
        for kernel in range(1, 5):
            for stride in range(1, 4):
                for before in range(0, 4):
                    for after in range(0, 4):
                        span = size + before + after - kernel
                        if span < 0:
                            continue
                        for out in {span // stride + 1, -(-span // stride) + 1}:
                            starts = [y * stride - before for y in range(out)]
                            expected = all(max(0, s) < min(size, s + kernel) for s in starts)
                            assert _windows_hold_input(out, size, kernel, stride, before) \
                                == expected, (size, kernel, stride, before, after, out)
                            checked += 1
    assert checked > 1000


def _nchw_build_code(model: Path, target_name: str, objdump: str, function: str) -> str:
    """`function`'s disassembly in the NCHW build of `model` for the target, whose compile
    matched ONNX Runtime (for rpi5 through a host build)."""
    import re

    from conftest import run_cli

    out = model.with_suffix(".so")
    result = run_cli("compile", str(model), "-t", target_name, "--layout", "NCHW", "-o",
                     str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^y\s.*\sok$", result.stdout, re.MULTILINE), result.stdout
    code = function_code(out, objdump, function)
    assert code, f"no {function} in the library"
    return code


def ceil_mode_pools(path: Path) -> Path:
    """SqueezeNet's pools: a 24-channel 3x3/2 conv to 55x55, then two 3x3/2 ceil-mode max
    pools to 27 and 13 columns, widths no vector of 4 divides."""
    return _stem_then(path, 11, 110, [
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         ceil_mode=1),
        helper.make_node("MaxPool", ["m"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                         ceil_mode=1),
    ], 13)


@pytest.mark.parametrize(("target_name", "objdump", "vector_max", "deinterleave"), [
    ("x86_64", "objdump", r"vmaxps\s+[^\n]*%ymm", r"\b(vshufps|vpermps|vpermpd)\b"),
    ("x86_64-avx512", "objdump", r"vmaxps\s+[^\n]*%[yz]mm",
     r"\b(vshufps|vpermt2ps|vpermi2ps|vpermps)\b"),
    ("rpi5", "aarch64-linux-gnu-objdump", r"(fmax|fcmgt)\s+v\d+\.4s",
     r"\b(ld2|ld3|uzp1|uzp2)\b"),
])
def test_pools_over_rows_no_vector_divides_run_whole_vectors_and_a_tail(
        tmp_path, target_name, objdump, vector_max, deinterleave):
    """Ceil-mode NCHW max pools to 27 and 13 columns (SqueezeNet's, there 55, 27, 13): each
    row a loop over its columns, the window taps unrolled in it, which LLVM vectorizes with
    the taps' stride-2 columns read as one interleaved group (as one loop over all outputs
    they ran one parallel task per output value, scalar: SqueezeNet NCHW's pools 1.07 ms on
    AVX2, 0.57 on AVX-512, against the packed pools' 0.18-0.23). The 27-column pool shows
    vector maxima and deinterleaving shuffles or loads in the disassembly, no gathers (the
    one loop's AVX-512 code gathered each tap); LLVM may leave 13 columns scalar on NEON.
    The model matches ONNX Runtime."""
    import re

    code = _nchw_build_code(ceil_mode_pools(tmp_path / "p.onnx"), target_name, objdump,
                            "max_pool2d_compute_")
    assert re.search(vector_max, code) and re.search(deinterleave, code), code[:3000]
    assert not re.search(r"\bvgatherdps\b", code), code[:3000]


def fire_module(path: Path) -> Path:
    """SqueezeNet's fire module: a 1x1 squeeze conv, 1x1 and 3x3 expand convs concatenated
    on the channels, and a 1x1 conv reading the concat (so it is a function of its own)."""
    rng = np.random.default_rng(5)
    shapes = {"s": (16, 24, 1, 1), "e1": (32, 16, 1, 1), "e3": (40, 16, 3, 3),
              "c": (16, 72, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in shapes.items()]
    nodes = [helper.make_node("Conv", ["x", "s"], ["s_out"]),
             helper.make_node("Relu", ["s_out"], ["s_relu"]),
             helper.make_node("Conv", ["s_relu", "e1"], ["e1_out"]),
             helper.make_node("Relu", ["e1_out"], ["e1_relu"]),
             helper.make_node("Conv", ["s_relu", "e3"], ["e3_out"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["e3_out"], ["e3_relu"]),
             helper.make_node("Concat", ["e1_relu", "e3_relu"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "c"], ["y"])]
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 27, 27])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 27, 27])], inits, path)


@pytest.mark.parametrize(("target_name", "objdump", "vector_copy", "scalar_copy", "int8"), [
    ("x86_64", "objdump", r"vmov\w+\s+[^\n]*%ymm", r"\b(vmovss|movzbl|movb)\b", False),
    ("x86_64-avx512", "objdump", r"vmov\w+\s+[^\n]*%[yz]mm", r"\b(vmovss|movzbl|movb)\b",
     False),
    ("x86_64-avx512-vnni", "objdump", r"vmov\w+\s+[^\n]*%[yz]mm",
     r"\b(vmovss|movzbl|movb)\b", True),
    ("rpi5", "aarch64-linux-gnu-objdump", r"\b(ldr|ldp|ldur)\s+q\d+",
     r"\b(ldrb|ldr\s+s\d+)", False),
])
def test_channels_last_concats_copy_each_input_in_vectors(
        tmp_path, target_name, objdump, vector_copy, scalar_copy, int8):
    """An NHWC concat on the channels is one plain copy per input (edgec.codegen.concat):
    as TOPI's select per element, vectorized across the seam, LLVM moved every element on
    its own (scalar loads and stores; SqueezeNet INT8's fire concats 0.15 of 0.95 ms, Zen 5).
    The model matches ONNX Runtime (compile's check; INT8 against the QDQ model, rpi5
    through a host build) and the concat's code has vector moves and no scalar ones."""
    import re

    from edgec.quant import QuantizeOptions

    quantization = QuantizeOptions()
    if int8:
        np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal(
            (4, 24, 27, 27)).astype(np.float32))
        quantization = QuantizeOptions("int8", calib=str(tmp_path / "calib.npy"))
    out = tmp_path / "fire.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(fire_module(tmp_path / "fire.onnx")), output=out, layout="NHWC",
        target=target_name, quantization=quantization))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    code = function_code(out, objdump, "concatenate_compute_")  # not the argument checks
    assert code, "no concatenate function in the library"
    assert re.search(vector_copy, code) and not re.search(scalar_copy, code), code[:3000]


@pytest.mark.parametrize(("target_name", "objdump", "vector_fma", "call"), [
    ("x86_64", "objdump", r"vfmadd\w+ps\s+[^\n]*%ymm", r"\bcall\b"),
    ("x86_64-avx512", "objdump", r"vfmadd\w+ps\s+[^\n]*%zmm", r"\bcall\b"),
    ("rpi5", "aarch64-linux-gnu-objdump", r"\bfml[as]\s+v\d+\.4s", r"\bblr?\s"),
])
def test_softmax_exponentials_are_vector_arithmetic_not_libm_calls(
        tmp_path, target_name, objdump, vector_fma, call):
    """A detector's class scores: softmax over the last axis of (1, 100, 21). TOPI's softmax
    called libm's expf per element, twice (SSD-Lite's 3150 x 21 scores 0.14 ms, 8% of the
    INT8 model, Zen 5); edgec.codegen.softmax computes fast_exp's polynomial in vectors,
    once. The model matches ONNX Runtime (compile's check; rpi5 through a host build) and
    the softmax's code has vector FMAs and calls nothing but TVM's parallel launch."""
    rng = np.random.default_rng(9)
    weight = numpy_helper.from_array((rng.standard_normal((21, 24, 1, 1)) * 2).astype(
        np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 100, 21], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["r"]),
             helper.make_node("Softmax", ["r"], ["y"], axis=-1)]
    model = save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100, 21])],
        [weight, shape], tmp_path / "scores.onnx")
    out = tmp_path / "scores.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(model), output=out, target=target_name))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    code = function_code(out, objdump, "softmax_compute_")
    assert code, "no softmax function in the library"
    body = "\n".join(line.split(":", 1)[-1] for line in code.splitlines())
    assert re.search(vector_fma, body), code[:3000]
    assert len(re.findall(call, body)) <= 1, code[:3000]  # the launch of the parallel loop


@pytest.mark.parametrize(("target_name", "objdump", "vector_add", "scalar_add"), [
    ("x86_64", "objdump", r"vaddps\s+[^\n]*%ymm", r"vaddss"),
    ("x86_64-avx512", "objdump", r"vaddps\s+[^\n]*%zmm", r"vaddss"),
    ("rpi5", "aarch64-linux-gnu-objdump", r"\bfadd\s+v\d+\.4s", r"\bfadd\s+s\d+"),
])
def test_nchw_means_over_a_plane_sum_vectors(tmp_path, target_name, objdump, vector_add,
                                             scalar_add):
    """A squeeze-excitation block in NCHW: the mean over each channel's 28x28 plane. Summed
    by TVM's scalar loop it took MobileNetV3-Small NCHW's nine means 0.12 ms of 1.2 (16
    channels at 56x56: 0.023 ms; 0.005 now; Zen 5, avx512-vnni, 2 threads). Now partial
    sums in vector lanes (rfactor), added up once per channel: vector adds in the mean's
    code, scalar ones only for its 16 lanes (it had 56 scalar adds and no vector one). The
    model matches ONNX Runtime (compile's check; rpi5 through a host build)."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * scale,
                                     name)
             for name, shape, scale in (("w", (24, 3, 3, 3), 1.0), ("s1", (8, 24, 1, 1), 0.3),
                                        ("s2", (24, 8, 1, 1), 0.3))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("Conv", ["m", "s1"], ["e1"]),
             helper.make_node("Relu", ["e1"], ["r1"]),
             helper.make_node("Conv", ["r1", "s2"], ["e2"]),
             helper.make_node("Sigmoid", ["e2"], ["g"]),
             helper.make_node("Mul", ["c", "g"], ["y"])]
    model = save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 28, 28])], inits,
        tmp_path / "se.onnx", opset=13)
    out = tmp_path / "se.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(model), output=out, layout="NCHW", target=target_name))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    code = function_code(out, objdump, "mean")
    assert code, "no mean function in the library"
    assert re.search(vector_add, code), code[:3000]
    assert len(re.findall(scalar_add, code)) <= 16, code[:3000]


def _every_weight_pack():
    from edgec.codegen import kernels
    from edgec.codegen import plain_kernels as plain

    rng = np.random.default_rng(3)

    def floats(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def int8s(*shape):
        return rng.integers(-127, 128, shape).astype(np.int8)

    return [  # (pack, weights, arguments): ragged channel counts where a pack pads or clamps
        (kernels.pack_float_kernel, floats(4, 16, 3, 3, 8), (2,)),
        (kernels.pack_float_kernel, floats(4, 16, 3, 3, 8), (1,)),
        (kernels.pack_stem_kernel, floats(32, 3, 7, 7), (16,)),
        (kernels.pack_dense_weight, floats(1000, 72), (16,)),
        (kernels.pack_int8_kernel, int8s(4, 32, 3, 3, 16), (2,)),
        (kernels.pack_int8_stem_kernel, int8s(32, 3, 7, 7), (16,)),
        (plain.pack_nhwc_kernel, floats(40, 3, 3, 24), ("OHWI", 16)),
        (plain.pack_nhwc_kernel, floats(3, 3, 24, 40), ("HWIO", 16)),
        (plain.pack_nhwc_depthwise_kernel, floats(116, 3, 3, 1), ("OHWI", 16)),
        (plain.pack_nhwc_depthwise_kernel, floats(3, 3, 12, 1), ("HWOI", 16)),
        (plain.pack_nhwc_int8_kernel, int8s(40, 1, 1, 30), ("OHWI", 16)),
        (plain.pack_nhwc_int8_kernel, int8s(3, 3, 30, 40), ("HWIO", 32, 16)),
    ]


@pytest.mark.parametrize("case", range(12))
def test_constant_weight_packs_are_computed_in_numpy_as_tvm_runs_the_pack(case):
    """Constant weights are packed at legalization in numpy (tvm_compat.te_gather: no pack
    function left for FoldConstant to build with LLVM); for every pack of edgec's kernels,
    the result must be what TVM computes compiling and running the pack itself."""
    import tvm
    from tvm import te

    from edgec.tvm_compat import te_gather

    pack, weights, arguments = _every_weight_pack()[case]
    placeholder = te.placeholder(weights.shape, str(weights.dtype), name="w")
    packed = pack(placeholder, *arguments)
    run = tvm.compile(te.create_prim_func([placeholder, packed]), target="llvm")
    want = tvm.runtime.tensor(np.zeros([int(d) for d in packed.shape], str(packed.dtype)))
    run(tvm.runtime.tensor(weights), want)
    got = te_gather.evaluate(packed, {placeholder: weights})
    assert got is not None, f"{pack.__name__} is not evaluated in numpy"
    assert got.dtype == weights.dtype
    np.testing.assert_array_equal(got, want.numpy())


def test_legalized_convs_with_constant_weights_leave_no_pack_function():
    import tvm
    from tvm import relax

    from edgec.codegen.legalize import legalize_map

    weights = np.random.default_rng(3).standard_normal((4, 16, 3, 3, 8)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 8, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            # Stride 2: a stride-1 3x3 conv on 8x8 would run Winograd, no packed tile.
            y = bb.emit_output(relax.op.nn.conv2d(
                x, relax.const(weights), strides=2, padding=1, data_layout="NCHW8c",
                kernel_layout="OIHW8o", out_layout="NCHW8c"))
        bb.emit_func_output(y)
    cpu = targets.load("x86_64").cpu
    with tvm.target.Target(targets.load("x86_64").tvm_target()):
        legalized = relax.transform.LegalizeOps(customize_legalize_map=legalize_map(8, cpu))(
            bb.get())
    names = [g.name_hint for g, _ in legalized.functions_items()]
    assert "conv2d_nchwc" in names and not [n for n in names if n.startswith("pack")], names


def _conv_relu_net(path: Path, channels: int, kernel: int, size: int) -> Path:
    """One biased `kernel` x `kernel` conv (same padding) of `channels` -> `channels` on a
    `size` x `size` input, then ReLU."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((rng.standard_normal(
        (channels, channels, kernel, kernel)) * 0.1).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b")]
    pad = kernel // 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[pad] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    shape = [1, channels, size, size]
    return save_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits,
                      path)


@pytest.mark.parametrize(("target_name", "kernel", "size", "function"), [
    ("x86_64-avx512", 3, 56, "conv2d_nhwc_winograd"),  # the crop after F(4x4, 3x3)
    ("x86_64", 3, 56, "conv2d_nhwc_winograd"),
    ("x86_64", 1, 14, "conv2d_nhwc"),  # AVX2's two-vector tiles on rows of 5 + 5 + 4
])
def test_nhwc_epilogues_read_each_tile_in_whole_vectors(tmp_path, target_name, kernel, size,
                                                        function):
    """An NHWC conv whose bias/ReLU epilogue runs after the row (row parts of two lengths)
    or after a Winograd output transform reads the accumulator tiles in vectors of one
    tile's lanes. As one vector over all of a pixel's channels, each lane's tile (channel //
    lanes) was a computed index and LLVM assembled the vector lane by lane (vpextrd +
    vinsertps: 96 per pixel in ResNet-18's 56x56 Winograd convs on AVX-512, whose
    functions ran 0.92x without them). The model matches ONNX Runtime (compile's check) and
    the conv's code (objdump) has no lane-by-lane gather."""
    out = tmp_path / "conv.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(_conv_relu_net(tmp_path / "conv.onnx", 64, kernel, size)), output=out,
        layout="NHWC", target=target_name))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    code = function_code(out, "objdump", f"fused_{function}")
    assert code and "vfmadd" in code, f"no {function} function with FMAs in the library"
    gathers = re.findall(r"\b(vpextrd|vinsertps)\b", code)
    assert not gathers, f"{len(gathers)} lane-by-lane moves in {function}"

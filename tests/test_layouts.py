"""Every layout the layout stage produces lowers and computes what ONNX Runtime computes:
random small conv graphs (kernels 1/3/5/7, strides 1/2, symmetric and uneven padding,
dense, grouped and depthwise, 1-64 channels, odd sizes, batch 1-2) in every layout."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import function_code, save_model, weight_maker
from edgec import build, pipeline, targets

GRAPHS = 6  # x 3 layouts: about 2 minutes on 2 cores


def random_conv_graph(seed: int, path: Path) -> Path:
    """A chain of 3-4 convs (plus a pool) with parameters drawn from the seed."""
    rng = np.random.default_rng(seed)
    batch = int(rng.integers(1, 3))
    channels = int(rng.choice([1, 3, 4, 8, 12, 16, 24, 32]))
    height, width = (int(v) for v in rng.choice([7, 9, 13, 17, 23, 32], size=2))
    shape = [batch, channels, height, width]
    name, nodes, inits = "x", [], []
    for i in range(int(rng.integers(3, 5))):
        kernel = int(rng.choice([1, 3, 5, 7]))
        while kernel > min(height, width) + 2:
            kernel -= 2
        stride = int(rng.choice([1, 1, 2]))
        uneven = rng.random() < 0.3
        half = kernel // 2
        pads = ([half, half + 1, half, max(half - 1, 0)] if uneven
                else [half] * 4 if rng.random() < 0.8 else [0] * 4)
        kind = rng.choice(["dense", "dense", "depthwise", "grouped"])
        if kind == "depthwise" and channels > 1:
            groups, out = channels, channels
        elif kind == "grouped" and channels % 2 == 0 and channels >= 4:
            groups, out = 2, 2 * int(rng.integers(1, 17))
        else:
            groups, out = 1, int(rng.choice([1, 4, 6, 8, 16, 24, 32, 48, 64]))
        new_h = (height + pads[0] + pads[2] - kernel) // stride + 1
        new_w = (width + pads[1] + pads[3] - kernel) // stride + 1
        if new_h < 1 or new_w < 1:
            continue
        weight = rng.standard_normal((out, channels // groups, kernel, kernel)) * 0.3
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(out).astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", [name, f"w{i}", f"b{i}"], [f"c{i}"],
                                      kernel_shape=[kernel, kernel], strides=[stride, stride],
                                      pads=pads, group=groups))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        name, channels, height, width = f"r{i}", out, new_h, new_w
        if i == 1 and min(height, width) >= 4:
            pool = "MaxPool" if rng.random() < 0.5 else "AveragePool"
            nodes.append(helper.make_node(pool, [name], ["pooled"], kernel_shape=[3, 3],
                                          strides=[2, 2], pads=[1, 1, 1, 1]))
            name, height, width = "pooled", (height - 1) // 2 + 1, (width - 1) // 2 + 1
    nodes.append(helper.make_node("Identity", [name], ["y"]))
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels, height, width])],
        inits, path)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NCHWc"])
@pytest.mark.parametrize("seed", range(GRAPHS))
def test_random_conv_graphs_compile_and_match_onnxruntime_in_every_layout(seed, layout,
                                                                          tmp_path):
    # AVX2 (8-lane blocks) and AVX-512 (16) alternate; a target this CPU cannot run is
    # checked through a host build of the same graph.
    target = ("x86_64", "x86_64-avx512")[seed % 2]
    path = random_conv_graph(seed, tmp_path / f"g{seed}.onnx")
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "g.so", layout=layout, target=target))
    assert result.verify is not None and result.verify.ok, result.verify.summary()


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_a_one_channel_head_over_a_prime_width_compiles_and_matches(target, tmp_path):
    """YOLOX's objectness head (ddddocr's detector): a 1x1 conv to one channel at 13x13, then
    a sigmoid. Its output stays NCHW; no register tile divides 13, so the epilogue had no
    loop of its own and was vectorized inside the vectorized row (a TVM codegen failure)."""
    rng = np.random.default_rng(2)
    weight = numpy_helper.from_array(rng.standard_normal((1, 96, 1, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.1], np.float32), "b")
    path = save_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
         helper.make_node("Sigmoid", ["c"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 96, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 13, 13])],
        [weight, bias], tmp_path / "head.onnx")
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "head.so", target=target))
    assert result.verify is not None and result.verify.ok, result.verify.summary()


def test_compile_warns_what_a_slow_layout_costs_and_not_for_the_fast_ones(tmp_path):
    from conftest import run_cli

    path = random_conv_graph(0, tmp_path / "g.onnx")
    said = {}
    for layout in ("NCHW", "NHWC"):
        result = run_cli("compile", str(path), "-o", str(tmp_path / f"{layout}.so"),
                         "--layout", layout, "--no-check")
        assert result.returncode == 0, result.stderr
        said[layout] = result.stdout + result.stderr
    assert "WARNING: NCHW builds ran up to 1.5x slower than the packed layout" in said["NCHW"]
    assert "WARNING" not in said["NHWC"], said["NHWC"]


def _decision_table(text: str) -> dict[str, float]:
    """The rows `--layout auto` printed: {layout: ms}."""
    rows = re.findall(r"^\s+(NCHW\d+c|NHWC|NCHW)\s+([\d.]+)\s+[\d.]+x$", text, re.MULTILINE)
    return {name: float(ms) for name, ms in rows}


@pytest.mark.parametrize(("target", "how", "candidates"), [
    ("x86_64", "measured on", {"NCHW8c", "NCHW4c", "NHWC"}),  # timed here
    ("rpi4", "estimated for cortex-a72", {"NCHW4c", "NHWC"}),  # the emulated board, priced
])
def test_layout_auto_builds_the_candidates_keeps_the_fastest_and_stores_the_decision(
        target, how, candidates, tmp_path):
    from conftest import run_cli

    path = random_conv_graph(3, tmp_path / "g.onnx")
    env = {"EDGEC_TUNING_LOGS": str(tmp_path / "logs")}
    out = tmp_path / "auto.so"
    first = run_cli("compile", str(path), "-t", target, "-o", str(out), "--layout", "auto",
                    env=env)
    assert first.returncode == 0, first.stderr
    said = first.stdout + first.stderr
    table = _decision_table(first.stdout)
    assert set(table) == candidates, said
    assert f"layout auto: {min(table, key=table.get)} ({how}" in said
    # The library is the fastest candidate, and it matches ONNX Runtime (compile's check).
    assert json.loads(out.with_name("auto.so.json").read_text())["layout"] == min(
        table, key=table.get)
    assert re.search(r"^y\s.*\sok$", first.stdout, re.MULTILINE), first.stdout
    stored_in = list((tmp_path / "logs" / target).glob("*/layout_decisions.json"))
    assert len(stored_in) == 1, stored_in  # beside the tuning logs of this machine's CPU
    stored = json.loads(stored_in[0].read_text())
    assert [d["layout"] for d in stored.values()] == [min(table, key=table.get)]
    again = run_cli("compile", str(path), "-t", target, "-o", str(out), "--layout", "auto",
                    "--no-check", env=env)
    assert again.returncode == 0, again.stderr
    assert "stored decision" in again.stdout + again.stderr
    assert "layout auto: building" not in again.stdout + again.stderr
    assert _decision_table(again.stdout) == table


@pytest.mark.slow
def test_layout_auto_times_the_candidates_on_the_board_it_is_given(tmp_path, emulated_board):
    """compile --layout auto --rpc: every candidate is uploaded to the board (the emulated
    one; its own server log shows each library loaded) and timed there; the decision says
    so and is stored for that board, apart from the estimate's."""
    from conftest import board_log_mark, board_log_since, run_cli

    path = random_conv_graph(3, tmp_path / "g.onnx")
    env = {"EDGEC_TUNING_LOGS": str(tmp_path / "logs")}
    out = tmp_path / "auto.so"
    board, mark = emulated_board, board_log_mark(emulated_board)
    first = run_cli("compile", str(path), "-t", "rpi4", "-o", str(out), "--layout", "auto",
                    "--rpc", f"127.0.0.1:{board.port}", env=env, timeout=900)
    server_log = board_log_since(board, mark)
    assert first.returncode == 0, first.stderr
    said = first.stdout + first.stderr
    table = _decision_table(first.stdout)
    assert set(table) == {"NCHW4c", "NHWC"}, said
    best = min(table, key=table.get)
    assert f"layout auto: {best} (measured on rpi4 board (cortex-a72))" in said, said
    assert len(re.findall(r"load_module \S+/edgec_\w+\.so", server_log)) >= 2, server_log
    assert json.loads(out.with_name("auto.so.json").read_text())["layout"] == best
    stored = json.loads(next((tmp_path / "logs" / "rpi4").glob("*/layout_decisions.json"))
                        .read_text())
    assert [d["how"] for d in stored.values()] == ["measured on rpi4 board (cortex-a72)"]


def test_compile_refuses_a_board_when_nothing_is_chosen_by_measurement(tmp_path):
    from conftest import assert_only_error, run_cli

    path = random_conv_graph(3, tmp_path / "g.onnx")
    result = run_cli("compile", str(path), "-t", "rpi4", "-o", str(tmp_path / "x.so"),
                     "--rpc", "127.0.0.1:9")
    assert_only_error(result, "--layout auto", "edgec bench")
    assert not (tmp_path / "x.so").exists()


def test_tune_layout_auto_needs_a_stored_decision(tmp_path):
    from conftest import assert_only_error, run_cli

    path = random_conv_graph(3, tmp_path / "g.onnx")
    result = run_cli("tune", str(path), "--layout", "auto", "--trials", "1",
                     env={"EDGEC_TUNING_LOGS": str(tmp_path / "logs")})
    assert_only_error(result, "no layout was measured yet")


def transposed_conv_graph(path: Path, kernel: int, stride: int, channels: int = 24) -> Path:
    """conv -> ConvTranspose(kernel, stride) with bias -> ReLU: a decoder's upsampling."""
    rng = np.random.default_rng(kernel * 10 + stride)
    inits = [numpy_helper.from_array((rng.standard_normal((channels, 8, 3, 3)) * 0.3)
                                     .astype(np.float32), "w0"),
             numpy_helper.from_array((rng.standard_normal((channels, 16, kernel, kernel)) * 0.3)
                                     .astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")]
    pads = [(kernel - stride) // 2] * 4
    size = (13 - 1) * stride - 2 * pads[0] + kernel
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["c0", "w1", "b1"], ["t"],
                              kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=pads),
             helper.make_node("Relu", ["t"], ["y"])]
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, size, size])],
        inits, path)


@pytest.mark.parametrize("layout", ["NCHWc", "NHWC", "NCHW"])
def test_transposed_convs_whose_kernel_is_their_stride_run_on_edgec_kernels(layout, tmp_path):
    """2x2 stride 2 (DBNet's, CenterFace's): no longer on TOPI's generic conv2d_transpose,
    and still ONNX Runtime's result; 4x4 stride 2 (overlapping patches) stays correct."""
    for kernel in (2, 4):
        path = transposed_conv_graph(tmp_path / f"t{kernel}.onnx", kernel, 2)
        result = pipeline.compile_model(pipeline.CompileOptions(
            model=str(path), output=tmp_path / f"t{kernel}.so", layout=layout))
        assert result.verify is not None and result.verify.ok, result.verify.summary()
        on_topi = [n for n in result.tuning.get("generic_names", []) if "conv2d_transpose" in n]
        assert bool(on_topi) == (kernel == 4), (kernel, result.tuning.get("generic_names"))


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_transposed_convs_whose_kernel_is_their_stride_run_on_edgec_kernels(
        per_channel, tmp_path):
    """In an INT8 model the transposed conv stays float between a dequantize and a quantize
    (integer lowering has no pattern for it), its weights a dequantize of int8 constants:
    folded, it runs as the float 1x1 conv too (U-Net INT8's one 2x2 transposed conv on
    TOPI took 97 of 100 ms, Zen 5). A per-tensor weight's dequantize is already lowered to
    arithmetic by then (PP-OCRv4's detector's first upsampling: 18 of its 50 ms on TOPI).
    Checked against ONNX Runtime running the QDQ model."""
    from edgec.quant import QuantizeOptions

    path = transposed_conv_graph(tmp_path / "t2.onnx", 2, 2)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal(
        (4, 8, 13, 13)).astype(np.float32))
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "t2.so", target="x86_64-avx512-vnni",
        quantization=QuantizeOptions("int8", calib=str(tmp_path / "calib.npy"),
                                     per_channel=per_channel)))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    assert "quantize:int8" in result.info.applied
    on_topi = [n for n in result.tuning.get("generic_names", []) if "conv2d_transpose" in n]
    assert not on_topi, result.tuning.get("generic_names")


def _fma_registers(library: Path, function: str) -> dict[str, int]:
    """FP32 FMA instructions by register class, and gathers, in one function of a library's
    code (objdump, not edgec)."""
    counts = {"xmm": 0, "ymm": 0, "zmm": 0, "gathers": 0}
    for line in function_code(library, "objdump", function).splitlines():
        if re.search(r"\bvfmadd\d+ps\b", line):
            kind = re.search(r"%([xyz]mm)\d+", line)
            if kind:
                counts[kind.group(1)] += 1
        if re.search(r"\b(vgatherdps|vgatherqps|vinsertps)\b", line):
            counts["gathers"] += 1
    return counts


def _fma_accumulators(library: Path, function: str) -> int:
    """How many vector registers FP32 FMAs accumulate into in one function (objdump, AT&T
    order: the last operand is the destination)."""
    code = function_code(library, "objdump", function)
    return len(set(re.findall(r"\bvfmadd\d+ps\s+\S+,%[yz]mm\d+,(%[yz]mm\d+)", code)))


@pytest.mark.parametrize(("target", "layout"), [("x86_64", "NHWC"), ("x86_64-avx512", "NHWC"),
                                                ("x86_64-avx512", "NCHWc")])
def test_convs_on_rows_of_a_prime_width_keep_a_register_tile(target, layout, tmp_path):
    """SqueezeNet's 13-pixel rows: the tile length was the largest divisor of the row up to
    8, so one pixel, and every FMA of a conv waited on the one before (its 512 -> 1000
    classifier conv 2.43 ms; the model 0.37x of that with row tails). Rows of 13 run tiles
    of 7 and 6 pixels (edgec.codegen.row_tails): 1x1, depthwise and dense convs, checked
    against ONNX Runtime; objdump shows at least 6 accumulator registers in each conv. The
    dense one is 5x5: a 3x3 one runs Winograd F(2x2, 3x3) on this map on x86
    (edgec.codegen.winograd.winograd_tile)."""
    path = _conv_chain(tmp_path / "prime.onnx", seed=13, size=13, specs=[
        ("a", 64, 1, 1, 1), ("b", 64, 3, 1, 64), ("c", 40, 5, 1, 1)])
    library = tmp_path / "prime.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout=layout, target=target))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    code = function_code(library, "objdump", "_compute_")  # the parallel loop bodies
    convs = re.findall(r"^[0-9a-f]+ <(\w*conv2d\w*_compute_)>:", code, re.MULTILINE)
    direct = [c for c in convs if "winograd" not in c]
    assert direct == convs and len(direct) >= 3, convs
    for function in direct:
        assert _fma_accumulators(library, function) >= 6, (function, convs)


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_nhwc_stems_read_the_nchw_image_without_a_transpose(target, tmp_path):
    """An NHWC model's image stems read the NCHW input themselves (edgec.layout.stems.
    read_nchw_images): a 3x3/2 stem with uneven padding through the border test and a 7x7/2
    one through a padded copy, on odd image sizes, each fed by its own image input (the
    second also read by a 1x1 conv). The IR keeps only the outputs' transposes back to NCHW
    (the input transposes were two more); the build matches ONNX Runtime."""
    import onnxruntime as ort

    from edgec import runtime
    from edgec.layout.convert import count_layout_transforms

    if target.endswith("avx512") and "avx512f" not in targets.cpu_flags():
        pytest.skip(f"this CPU cannot run {target} code (no AVX-512)")
    rng = np.random.default_rng(11)

    weight = weight_maker(rng, 0.3)

    image = lambda name, h, w: helper.make_tensor_value_info(name, TensorProto.FLOAT,  # noqa: E731
                                                             [1, 3, h, w])
    source = save_model(
        [helper.make_node("Conv", ["a", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 2, 0, 1]),
         helper.make_node("Relu", ["c1"], ["y1"]),
         helper.make_node("Conv", ["b", "w2"], ["y2"], strides=[2, 2], pads=[3, 3, 3, 3]),
         helper.make_node("Conv", ["b", "w3"], ["y3"])],
        [image("a", 33, 31), image("b", 29, 35)],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 32, 16, 16]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 64, 15, 18]),
         helper.make_tensor_value_info("y3", TensorProto.FLOAT, [1, 16, 29, 35])],
        [weight("w1", (32, 3, 3, 3)), weight("b1", (32,)), weight("w2", (64, 3, 7, 7)),
         weight("w3", (16, 3, 1, 1))],
        tmp_path / "stems.onnx")
    model = pipeline.prepare(str(source), targets.load(target), None, "NHWC")
    assert count_layout_transforms(model.ir) == 3  # the three outputs

    library = tmp_path / "stems.so"
    pipeline.compile_model(pipeline.CompileOptions(model=str(source), output=library,
                                                   target=target, layout="NHWC", check=False))
    feeds = {"a": rng.uniform(-1, 1, (1, 3, 33, 31)).astype(np.float32),
             "b": rng.uniform(-1, 1, (1, 3, 29, 35)).astype(np.float32)}
    got = runtime.load(library).run(feeds)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    for name, want in zip(("y1", "y2", "y3"), session.run(None, feeds), strict=True):
        np.testing.assert_allclose(got[name], want, atol=1e-4 * float(np.abs(want).max()),
                                   rtol=0, err_msg=name)


def test_nhwc_conv_epilogues_read_the_register_tile_without_a_stack_copy(tmp_path):
    """The bias/activation epilogue of an NHWC tile looped over its pixels, so LLVM kept the
    tile's array on the stack: a memset of the accumulators before every tile and a store
    of each after it, both dead (the FMAs and the epilogue ran in registers). Unrolled, the
    array is registers only. SSD-Lite FP32 0.93x (its 16 -> 96 conv at 160x160 spent a
    sixth of its time there), MobileNetV1 0.96x (Zen 4, avx512-vnni, 7 interleaved rounds).
    1x1 16 -> 96 and 3x3/2 96 -> 64 on 32x32, against ONNX Runtime; objdump shows no memset
    call in either conv."""
    library, convs = _checked_conv_chain(
        tmp_path / "tile", 3, 32, [("a", 16, 1, 1, 1), ("b", 96, 1, 1, 1), ("c", 64, 3, 2, 1)],
        "NHWC", "x86_64-avx512", r"\w*conv2d_nhwc\w*_compute_")
    assert len(convs) == 3, convs
    memsets = {f: function_code(library, "objdump", f).count("memset") for f in convs}
    assert not any(memsets.values()), memsets


def _checked_conv_chain(stem: Path, seed: int, size: int, specs: list, layout: str,
                        target: str, conv_symbol: str) -> tuple[Path, list[str]]:
    """_conv_chain compiled untuned to `stem`.so and checked against ONNX Runtime; returns
    the library and its conv functions (the parallel bodies whose symbol matches the regex
    `conv_symbol`)."""
    path = _conv_chain(stem.with_suffix(".onnx"), seed=seed, size=size, specs=specs)
    library = stem.with_suffix(".so")
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout=layout, target=target, use_tuning_logs=False))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    code = function_code(library, "objdump", "_compute_")
    return library, re.findall(rf"^[0-9a-f]+ <({conv_symbol})>:", code, re.MULTILINE)


def _check_vnni_int8_convs_lack(tmp_path: Path, name: str, seed: int, specs: list,
                                instructions: str) -> None:
    """_int8_conv_chain on 28x28 pixels, NHWC on x86_64-avx512-vnni, checked against ONNX
    Runtime where this CPU has VNNI; asserts that no conv's objdump holds `instructions`
    (a regex), then skips, saying so, where the code could not run."""
    library, result = _int8_conv_chain(
        tmp_path, name, seed=seed, size=28, specs=specs, layout="NHWC",
        target="x86_64-avx512-vnni", use_tuning_logs=False,
        check="avx512_vnni" in targets.cpu_flags())
    if result.verify is not None:
        assert result.verify.ok, result.verify.summary()
    code = function_code(library, "objdump", "_compute_")
    convs = re.findall(r"^[0-9a-f]+ <(\w*conv2d\w*int8\w*_compute_)>:", code, re.MULTILINE)
    assert len(convs) >= 2, re.findall(r"^[0-9a-f]+ <(\w+)>:", code, re.MULTILINE)
    for function in convs:
        found = re.findall(instructions, function_code(library, "objdump", function))
        assert not found, (function, len(found))
    if result.verify is None:
        pytest.skip("this CPU has no AVX-512 VNNI: the code was inspected but cannot run here")


def test_int8_tile_epilogues_requantize_on_vectors(tmp_path):
    """The other side of the unrolled float epilogue: INT8 tiles keep the pixel loop, since
    unrolled, TVM's vectorizer scalarized their requantization (a cast, multiply, round and
    clamp per value: U-Net INT8's 16-channel convs at 224x224 ran 2.1x slower). 16-channel
    3x3 convs on 28x28 pixels on VNNI, against ONNX Runtime on the QDQ model; objdump
    shows no scalar float arithmetic in the convs."""
    _check_vnni_int8_convs_lack(tmp_path, "narrow8", 16,
                                [("a", 16, 3, 1, 1), ("b", 16, 3, 1, 1)],
                                r"\b(vmulss|vroundss|vcvtsi2ss|vmaxss|vminss)\b")


def test_int8_padded_copies_of_96_channels_move_whole_vectors(tmp_path):
    """A 3x3 INT8 conv's padded copy of 96 uint8 channels (U-Net's decoder concat) was one
    <96 x i8> guarded select per pixel, built byte by byte by LLVM (96 vpextrb and 96
    vpinsrb per pixel); it now copies 32-byte vectors (conv_prologue._vectorize_in_registers).
    24 -> 96 (1x1) -> 32 (3x3) on 28x28 pixels on VNNI, against ONNX Runtime on the QDQ
    model; objdump shows no byte inserts or extracts in the convs."""
    _check_vnni_int8_convs_lack(tmp_path, "wide8", 96,
                                [("a", 96, 1, 1, 1), ("b", 32, 3, 1, 1)],
                                r"\b(vpinsrb|vpextrb)\b")


@pytest.mark.parametrize(("target", "layout", "dot"), [
    ("x86_64", "NHWC", r"vpaddd\s+%ymm\d+,%ymm\d+,(%ymm\d+)"),
    ("x86_64-avx512-vnni", "NHWC", r"vpdpbusd\s+\S+,%zmm\d+,(%zmm\d+)"),
    ("x86_64-avx512-vnni", "NCHWc", r"vpdpbusd\s+\S+,%zmm\d+,(%zmm\d+)")])
def test_int8_convs_on_rows_of_a_prime_width_keep_a_register_tile(target, layout, dot,
                                                                   tmp_path):
    """The INT8 side of SqueezeNet's 13-pixel rows: tiles of one pixel (two accumulators on
    VNNI's 32-channel tiles) ran its 13x13 3x3 convs at 0.29 of the classifier's MAC rate.
    Those rows compute 14 pixels in tiles of 7 (row_tails.int8_padded_width; the dots
    cannot be tensorized in a loop partition): SqueezeNet INT8 0.75x. Checked against ONNX
    Runtime on the QDQ model; objdump shows >= 6 accumulator registers in each conv."""
    # On AVX2 a stride-1 3x3 conv runs Winograd in float and the 1x1 conv's 64 terms sum
    # exactly in float (edgec.codegen.legalize_plain): there a stride-2 3x3 conv, on rows of
    # 7, is the one left on the dot product.
    avx2 = target == "x86_64"
    library, result = _int8_conv_chain(
        tmp_path, "prime8", seed=14, size=13,
        specs=[("a", 64, 1, 1, 1), ("b", 64, 3, 2 if avx2 else 1, 1)],
        layout=layout, target=target)
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    code = function_code(library, "objdump", "_compute_")
    convs = re.findall(r"^[0-9a-f]+ <(\w*conv2d\w*int8\w*_compute_)>:", code, re.MULTILINE)
    expected = 1 if avx2 else 2
    assert len(convs) >= expected, re.findall(r"^[0-9a-f]+ <(\w+)>:", code, re.MULTILINE)
    for function in convs:
        registers = set(re.findall(dot, function_code(library, "objdump", function)))
        assert len(registers) >= 6, (function, registers)


@pytest.mark.parametrize(("channels", "stride"), [(20, 2), (58, 1), (116, 1)])
def test_nhwc_depthwise_convs_no_register_divides_run_on_full_registers(channels, stride,
                                                                        tmp_path):
    """MediaPipe's and ShuffleNetV2's channel counts (20, 58, 116) on AVX-512's 16 lanes: the
    last channel tile overlaps the one before instead of narrowing every vector to the
    widest divisor (4 lanes for 20 and 116, 0.46 of ShuffleNetV2's 2.4 ms) or gathering
    clamped channels (58). Checked against ONNX Runtime; objdump shows the FMAs on zmm
    registers and no gathers in the conv's loop."""
    rng = np.random.default_rng(channels)
    weight = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    size = 15
    out = (size + 2 - 3) // stride + 1
    path = save_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3],
                          strides=[stride, stride], pads=[1, 1, 1, 1], group=channels)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, out, out])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
        tmp_path / "depthwise.onnx")
    library = tmp_path / "depthwise.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout="NHWC", target="x86_64-avx512"))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    fmas = _fma_registers(library, "fused_depthwise_conv2d_nhwc")
    # Before, 20 and 116 channels ran on xmm FMAs and 58 had 60 gathers.
    assert fmas["zmm"] > 0 and fmas["xmm"] == fmas["ymm"] == 0, fmas
    assert fmas["gathers"] == 0, fmas


def _int8_conv_chain(tmp_path: Path, name: str, seed: int, size: int, specs: list, **options):
    """(library, CompileResult) of _conv_chain's graph compiled INT8, calibrated on 4 seeded
    random inputs; `options` go to CompileOptions."""
    from edgec.quant import QuantizeOptions

    path = _conv_chain(tmp_path / f"{name}.onnx", seed=seed, size=size, specs=specs)
    np.save(tmp_path / "calib.npy", np.random.default_rng(seed).standard_normal(
        (4, 24, size, size)).astype(np.float32))
    library = tmp_path / f"{name}.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, time_fp32=False,
        quantization=QuantizeOptions("int8", calib=str(tmp_path / "calib.npy")), **options))
    return library, result


def _conv_chain(path: Path, seed: int, specs: list, size: int = 29) -> Path:
    """Conv + ReLU layers (label, out channels, kernel, stride, groups) on a 1x24xSxS
    input (S = `size`), each padded by half its kernel."""
    rng = np.random.default_rng(seed)
    nodes, inits, name, channels, side = [], [], "x", 24, size
    for label, out, kernel, stride, groups in specs:
        weight = rng.standard_normal((out, channels // groups, kernel, kernel)) * 0.3
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"w{label}"),
                  numpy_helper.from_array(rng.standard_normal(out).astype(np.float32),
                                          f"b{label}")]
        nodes += [helper.make_node("Conv", [name, f"w{label}", f"b{label}"], [label],
                                   kernel_shape=[kernel, kernel], strides=[stride, stride],
                                   pads=[kernel // 2] * 4, group=groups),
                  helper.make_node("Relu", [label], [f"r{label}"])]
        name, channels = f"r{label}", out
        side = (side + 2 * (kernel // 2) - kernel) // stride + 1
    nodes.append(helper.make_node("Identity", [name], ["y"]))
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, side, side])],
        inits, path)


def _scheduled_functions(path: Path, target_name: str, contains: str) -> dict[str, str]:
    """The scheduled TIR (TVMScript) of the NCHW build's functions whose names contain
    `contains`, by name."""
    target = targets.load(target_name)
    lowered = build.lower(pipeline.prepare(str(path), target, None, "NCHW"), target)
    return {g.name_hint: f.script() for g, f in lowered.functions_items()
            if contains in g.name_hint}


def _checked_build(path: Path, library: Path, target: str, layout: str = "NCHW") -> Path:
    """`library` compiled from the model at `path`, its check against ONNX Runtime passed."""
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout=layout, target=target))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    return library


@pytest.mark.parametrize(("target", "register"), [("x86_64", "ymm"), ("x86_64-avx512", "zmm")])
def test_nchw_convs_vectorize_over_contiguous_output_pixels_at_every_stride(target, register,
                                                                             tmp_path):
    """Depthwise NCHW convs run on flat output planes (edgec.codegen.nchw_planes): at stride
    2 (MobileNetV2's 96 channels at 112x112 took 0.51 ms of 5.8 with every lane a strided
    load) and 5x5; then a 1x1 conv to a channel count no tile divides (the packed tile).
    Checked against ONNX Runtime; objdump shows full-width FMAs in every conv (the kernel
    the flat planes replaced ran a 15-pixel row on partial vectors). The stride-2 phase copy's
    vectors: test_nchw_depthwise_phase_copies_move_whole_vectors."""
    path = _conv_chain(tmp_path / "nchw.onnx", seed=7, specs=[
        ("dw2", 24, 3, 2, 24), ("dw5", 24, 5, 1, 24), ("pw", 20, 1, 1, 1)])
    library = _checked_build(path, tmp_path / "nchw.so", target)
    # TVM numbers the functions in graph order: dw2, dw5 (nchw1), then the 1x1 conv.
    for function in ("fused_depthwise_conv2d_nchw_", "fused_depthwise_conv2d_nchw1_",
                     "fused_conv2d_nchw_"):
        fmas = _fma_registers(library, function)
        assert fmas[register] > 0 and fmas["xmm"] == 0, (function, fmas)


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_nchw_depthwise_phase_copies_move_whole_vectors(target, tmp_path):
    """The flat planes' padded copy of each channel (MobileNetV2's first two depthwise
    convs: 112x112, stride 1 and 2). At stride 1 its guarded load was scalarized even where
    only the row's test was left: 3724 lane moves (AVX-512; 588 AVX2) in the conv, 0.27 ms
    of MobileNetV2 NCHW's 3.4 (now a select of a clamped load: 0.13). At stride 2 each
    phase was read at stride 2 lane by lane; the column phases now go innermost for LLVM
    to read as one interleaved group: contiguous loads and permutes (0.235 -> 0.166 ms).
    Its rows go in input order, each phase row pair of input rows before the next (copied
    phase by phase, the plane was read in two passes over every other row: 96 channels
    112 -> 56 0.90x, MobileNetV2 NCHW 1.35 -> 1.27x of packed; Zen 4, 2 threads). LLVM
    then read each phase on its own, a masked load of every other lane and a permute per 8
    pixels; now each piece of a row's inner columns is one load of 2 x lanes pixels and two
    shuffles (edgec.codegen.vector_rewrites): the scheduled TIR holds them, and the 56-pixel
    phase rows end in a piece that overlaps the one before on AVX-512 (56 = 3 x 16 + 8).
    Checked against ONNX Runtime."""
    path = _conv_chain(tmp_path / "phases.onnx", seed=7, size=112, specs=[
        ("dw1", 24, 3, 1, 24), ("dw2", 24, 3, 2, 24)])
    library = tmp_path / "phases.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout="NCHW", target=target))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    stride1 = function_code(library, "objdump", "fused_depthwise_conv2d_nchw_add")
    stride2 = function_code(library, "objdump", "fused_depthwise_conv2d_nchw1_add")
    lane_moves = len(re.findall(r"\b(vinsertps|vpinsrd|vmovss)\b", stride1))
    assert stride1 and lane_moves <= 32, lane_moves
    assert re.search(r"\b(vperm\w*ps|vshufps|vunpck\w*ps)\b", stride2), stride2[:3000]
    from edgec import build, targets

    target_data = targets.load(target)
    lowered = build.lower(pipeline.prepare(str(path), target_data, None, "NCHW"), target_data)
    text = next(f.script() for g, f in lowered.functions_items()
                if "depthwise_conv2d_nchw1" in g.name_hint)
    rows = re.search(r"for \w+, \w+ in T\.grid\(T\.int64\((\d+)\), T\.int64\(2\)\):\s*"
                     r'with T\.sblock\("phase_planes', text)
    assert rows and int(rows.group(1)) > 2, text[text.find("phase_planes"):][:1500]
    lanes = 16 if target == "x86_64-avx512" else 8
    evens, odds = (", ".join(str(i) for i in range(pw, 2 * lanes, 2)) for pw in (0, 1))
    copy = text[text.find('T.sblock("phase_planes'):text.find("depthwise_conv2d_nchw_planes[")]
    assert f"[{evens}])" in copy and f"[{odds}])" in copy, copy[:3000]


def test_nchw_depthwise_rewrites_apply_to_plane_convs_scheduled_by_tuning_records(tmp_path):
    """A plane conv scheduled by a tuning record (a kernel-space variant, marked scheduled as
    MetaSchedule's database marks it) gets the same whole-vector rewrites as the default
    schedule: build.lower rewrites the module after both. Before, only default-scheduled
    functions were rewritten and a tuned one kept LLVM's masked per-phase loads. Built with
    the record (AVX2 code, which runs on every x86 machine) and run against ONNX Runtime."""
    import onnxruntime as ort
    import tvm

    from edgec import check
    from edgec.codegen import schedule_space

    path = _conv_chain(tmp_path / "tuned.onnx", seed=7, size=56, specs=[("dw2", 24, 3, 2, 24)])
    target = targets.load("x86_64")
    applied = []

    def records(mod):
        for gvar, func in list(mod.functions_items()):
            if "depthwise_conv2d_nchw" in gvar.name_hint:
                found = schedule_space.variants(func, tvm.target.Target.current())
                mod[gvar] = found[-1].mod["main"].with_attr("tirx.is_scheduled", True)
                applied.append(len(found))
        return mod

    model = pipeline.prepare(str(path), target, None, "NCHW")
    lowered = build.lower(model, target, records)
    text = next(f.script() for g, f in lowered.functions_items()
                if "depthwise_conv2d_nchw" in g.name_hint)
    assert applied and "T.Shuffle([x[" in text, text[text.find("phase_planes"):][:2000]
    x = np.random.default_rng(7).standard_normal((1, 24, 56, 56)).astype(np.float32)
    got = check.run(build.compile_to_executable(model, target, records), model, {"x": x})["y"]
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_nchw_depthwise_output_rows_are_whole_vectors_overlapping_the_next(target, tmp_path):
    """The crop of a flat plane into output rows no vector divides (58 pixels: 3 x 16 + 10
    on AVX-512, 7 x 8 + 2 on AVX2): a row that is not the last of its block or of the plane
    is stored as whole vectors (64 lanes), its extra lanes written into the next row, which
    that row's own store overwrites; the last rows stay exact (vector_rewrites). The
    58-row plane runs in several row blocks (parallel tasks), so a wrong last row would
    overwrite another task's output or the next channel's. LLVM had split rows of 14 into
    8 + 4 + 2 lanes (PP-LCNet NCHW 0.972x, V3-Small 0.985x on AVX-512). Checked against
    ONNX Runtime."""
    path = _conv_chain(tmp_path / "rows.onnx", seed=11, size=58, specs=[
        ("dw", 24, 3, 1, 24), ("dw5", 24, 5, 1, 24)])
    for text in _scheduled_functions(path, target, "depthwise_conv2d_nchw").values():
        epilogue = text[text.rfind("depthwise_conv2d_nchw_planes[v_b"):]
        assert re.search(r"if .* < T\.int64\(57\) and .* % T\.int64\(\d+\) < T\.int64",
                         epilogue), epilogue[:2500]
        assert "_wide in T.vectorized(T.int64(64))" in epilogue, epilogue[:2500]
        blocks = re.search(r'"edgec_blocks": (\d+)', text)
        assert blocks and int(blocks.group(1)) > 1, text[:1500]
    _checked_build(path, tmp_path / "rows.so", target)


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512", "rpi5"])
def test_nchw_depthwise_runs_copy_small_planes_before_using_any(target, tmp_path):
    """Depthwise NCHW convs run at most 64 parallel runs of (channel, row block) tasks, so
    the phase-copy buffer is allocated once per run, not taken from TVM's workspace pool
    per channel (~7000 pool calls per MobileNetV2 inference). Planes of one block copy all
    of a run's channels first: copied per channel, 7x7 planes were written in 4+2+1-lane
    pieces and read back at once by 16-lane loads that span them (store forwarding fails):
    960 channels at 7x7 0.044 -> 0.033 ms on one thread, MobileNetV2 NCHW 1.37x -> 1.34x of
    packed, MobileNetV3-Small 1.67x -> 1.59x (Zen 5, avx512-vnni, 2 threads, interleaved).
    A 7x7 and a 112x112 plane (seven row blocks: copied per task), against ONNX Runtime."""
    from edgec import build, targets

    for size, channels in ((7, 96), (112, 24)):
        path = _conv_chain(tmp_path / f"dw{size}.onnx", seed=size, size=size,
                           specs=[("dw", 24, 3, 1, 24), ("pw", channels, 1, 1, 1),
                                  ("dw2", channels, 3, 1, channels)])
        result = pipeline.compile_model(pipeline.CompileOptions(
            model=str(path), output=tmp_path / f"dw{size}.so", layout="NCHW", target=target))
        assert result.verify is not None and result.verify.ok, result.verify.summary()
        target_data = targets.load(target)
        lowered = build.lower(pipeline.prepare(str(path), target_data, None, "NCHW"),
                              target_data)
        convs = [f for g, f in lowered.functions_items() if "depthwise" in g.name_hint]
        assert convs, [g.name_hint for g in lowered.functions]
        for func in convs:
            # The runs: a parallel loop of at most 64 (split from the fused task loop, var
            # ..._0), each a serial loop over its tasks (..._1).
            text = func.script()
            runs = re.search(r"for (\w+)_0 in T\.parallel\(T\.int64\((\d+)\)\)", text)
            assert runs and int(runs.group(2)) <= 64, text[text.find("T.parallel") - 200:][:2000]
            tasks = text.find(f"for {runs.group(1)}_1 in range(", runs.end())
            copy = text.find('T.sblock("phase_planes', runs.end())
            assert tasks > 0 and copy > 0, text[runs.start():][:2000]
            assert (copy > tasks) == (size == 112), (size, text[runs.start():][:2000])


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_nchw_depthwise_convs_read_nothing_outside_their_input(target, tmp_path):
    """The flat planes' padded copy selects zero above and below the plane, of a load whose
    row TVM's simplifier had unclamped under that select's condition: the first channel's
    copy read the row before the tensor, the last one's the rows after it, and a 56x56
    stride-1 conv (and a masked 7x7 one) segfaulted on an input that touched an unmapped
    page. Each conv's input here starts, then ends, at an inaccessible page
    (tests/guarded_run.py, its own process); outputs against ONNX Runtime."""
    import subprocess
    import sys

    from conftest import REPO, skip_unless_this_cpu_runs
    from edgec import reference

    skip_unless_this_cpu_runs(target)
    for stride, size in ((1, 56), (2, 56), (1, 7), (1, 14)):
        rng = np.random.default_rng(size + stride)
        weight = numpy_helper.from_array(
            rng.standard_normal((16, 1, 3, 3)).astype(np.float32), "w")
        side = (size - 1) // stride + 1
        path = save_model(
            [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3],
                              strides=[stride] * 2, pads=[1] * 4, group=16)],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, size, size])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, side, side])],
            [weight], tmp_path / f"dw{stride}_{size}.onnx")
        library = tmp_path / f"dw{stride}_{size}.so"
        pipeline.compile_model(pipeline.CompileOptions(
            model=str(path), output=library, layout="NCHW", target=target, check=False))
        data = rng.standard_normal((1, 16, size, size)).astype(np.float32)
        np.save(tmp_path / "x.npy", data)
        run = subprocess.run([sys.executable, str(REPO / "tests" / "guarded_run.py"),
                              str(library), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, (stride, size, run.returncode, run.stderr[-2000:])
        expected = reference.onnxruntime_outputs(str(path), {"x": data})["y"]
        for got in np.load(tmp_path / "y.npy"):  # the input at the start, then at the end
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

def test_nchw_depthwise_convs_on_rows_of_half_a_vector_read_and_write_whole_vectors(
        tmp_path):
    """7x7 NCHW depthwise planes on AVX-512 (16 lanes) run masked (nchw_planes: the plane's
    own pitch, taps that wrap across a row's end zeroed by a column mask): padded to a pitch
    of 9, their copy and crop moved rows of 7 as 4+2+1-lane pieces (64 such moves in a 3x3
    conv, 70 in a 5x5) and computed 63 pixels for 49; 960 channels 3x3 0.65x, 576 5x5
    0.74x. Then their copy still gathered each vector lane by lane (its clamps made every
    load a gather: 12 vpextrd index extracts per conv here) and every tap multiplied a
    mask tensor in (36 and 20 vmulps); 576 channels 5x5 58.5 -> 32.7 us, one thread, with
    both gone. A 3x3 and a 5x5 depthwise conv (a tap two columns out wraps too) against
    ONNX Runtime; objdump: at most 16 narrow stores in each (LLVM may build a tap vector
    from the copy it just stored, with scalar loads and inserts: that is its choice, and
    faster here than the gathers), no index extracts, no multiply beside the FMAs."""
    path = _conv_chain(tmp_path / "seven.onnx", seed=11, size=7, specs=[
        ("a", 24, 3, 1, 24), ("b", 24, 5, 1, 24)])
    library = tmp_path / "seven.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout="NCHW", target="x86_64-avx512"))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    narrow_store = r"\b(vmovss|vmovlps|vmovq|vextractps|vmovsd|vmovups|vmovaps)\s+%xmm\d+,[^%]*\("
    for function in ("fused_depthwise_conv2d_nchw_add", "fused_depthwise_conv2d_nchw1_add"):
        code = function_code(library, "objdump", function)
        assert code.count("vfmadd"), function
        assert len(re.findall(narrow_store, code)) <= 16, (function, code[:3000])
        assert not re.findall(r"\b(vpextrd|vpinsrd|vmulps)\b", code), (function, code[:3000])


def test_nchw_masked_depthwise_planes_taller_than_one_short_run_compile(tmp_path):
    """A masked plane 6 pixels wide and 100 tall (600 pixels, one task) is copied one
    storage row at a time, not as the short run of a 7x7 plane: the schedule had fused
    the copy's loops before deciding, then vectorized the loop the fusion removed, and
    compile failed ("The loop no longer exists"). Against ONNX Runtime."""
    weight = numpy_helper.from_array(
        np.random.default_rng(6).standard_normal((24, 1, 3, 3)).astype(np.float32), "w")
    path = save_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1] * 4,
                          group=24)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 100, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 100, 6])],
        [weight], tmp_path / "tall.onnx")
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "tall.so", layout="NCHW", target="x86_64-avx512"))
    assert result.verify is not None and result.verify.ok, result.verify.summary()


def test_nchw_masked_depthwise_planes_keep_a_wrapped_neighbours_infinity_out(tmp_path):
    """A masked plane's tap past a row's end reads the next row's first pixel, and the mask
    must drop it, not multiply it by 0: 0 x inf is NaN. With +inf at the start of a row of
    a 7x7 input and -inf at the end of another, a 3x3 and a 5x5 depthwise conv (one conv
    each: a second one would sum infinities of both signs, whose NaN a ReLU keeps or drops
    as each runtime's max happens to) give infinite outputs exactly where ONNX Runtime does
    and its values elsewhere. The mask-tensor multiply made a wrapped neighbour's sum NaN,
    which the fused ReLU (max with 0) turned into 0: a wrong finite output, 0.0 for 0.33.
    Masked planes are AVX-512's (rows of 7 in 16 lanes): it runs where AVX-512 does."""
    from conftest import skip_unless_this_cpu_runs
    from edgec import reference, runtime

    skip_unless_this_cpu_runs("x86_64-avx512")
    for kernel in (3, 5):
        path = _conv_chain(tmp_path / f"wrap{kernel}.onnx", seed=kernel, size=7,
                           specs=[("a", 24, kernel, 1, 24)])
        library = tmp_path / f"wrap{kernel}.so"
        pipeline.compile_model(pipeline.CompileOptions(
            model=str(path), output=library, layout="NCHW", target="x86_64-avx512",
            check=False))
        data = np.random.default_rng(kernel).standard_normal((1, 24, 7, 7)).astype(np.float32)
        data[0, 3, 4, 0] = np.inf
        data[0, 17, 2, 6] = -np.inf
        expected = reference.onnxruntime_outputs(str(path), {"x": data})["y"]
        got = runtime.load(library, check=False).run({"x": data})["y"]
        finite = np.isfinite(expected)
        assert 0.9 * expected.size < finite.sum() < expected.size, kernel
        np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=f"{kernel}x{kernel}")
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_nchw_depthwise_planes_of_whole_vector_rows_share_each_input_load(target, tmp_path):
    """Depthwise NCHW planes whose rows pad to whole vectors (nchw_planes' aligned planes:
    56 at a pitch of 64, the input's first column at a vector's start, its left padding the
    row above's zero columns) run a register tile of several output rows, whose taps load
    each input row's vector once for every row that uses it. Flat, every FMA loaded its
    own tap (a memory operand), most split across two cache lines: loads per FMA 1.0-1.1
    at stride 1 and 1.4-1.7 at stride 2; MobileNetV2 NCHW 0.96x (AVX-512, sums of per-op
    minimums, 5 interleaved rounds). A 3x3, a 5x5 and a 3x3 stride-2 conv at 56x56
    against ONNX Runtime; objdump: vector loads (FMA memory operands included, the copy's
    and the epilogue's too) per FMA."""
    path = _conv_chain(tmp_path / "aligned.onnx", seed=5, size=56, specs=[
        ("a", 24, 3, 1, 24), ("b", 24, 5, 1, 24), ("c", 24, 3, 2, 24)])
    library = _checked_build(path, tmp_path / "aligned.so", target)
    most = {"fused_depthwise_conv2d_nchw_add": 0.6, "fused_depthwise_conv2d_nchw1_add": 0.75,
            "fused_depthwise_conv2d_nchw2_add": 1.2}
    for function, most_loads in most.items():
        code = function_code(library, "objdump", function)
        fmas = re.findall(r"\bvfmadd\d+ps\s+([^\n]*)", code)
        loads = len(re.findall(r"\bvmov[au]ps\s+-?(0x[0-9a-f]+)?\([^)]*\),%[yz]mm", code))
        loads += sum("(" in operands for operands in fmas)
        assert fmas and loads <= most_loads * len(fmas), (function, loads, len(fmas))


@pytest.mark.parametrize(("target", "lanes", "registers"),
                         [("x86_64", 8, 16), ("x86_64-avx512", 16, 32)])
def test_nchw_aligned_depthwise_planes_read_zeros_past_every_border(target, lanes,
                                                                     registers, tmp_path):
    """An aligned plane's left padding is the zero columns ending the row above (a guard
    row above the first), its taps at negative column offsets: asymmetric pads (TF's SAME
    at stride 2, pads after only), odd sizes whose column phases hold different counts
    (57 at stride 2) and a 5x5 at stride 2, against ONNX Runtime. Each case is checked to
    take the aligned path first, so a change of rules cannot leave it testing the flat one."""
    from edgec.codegen import nchw_plane_geometry

    cases = [(112, 3, 2, [0, 0, 1, 1]), (57, 3, 2, [1, 1, 1, 1]), (56, 3, 1, [0, 0, 2, 2]),
             (56, 5, 2, [1, 1, 2, 2])]
    for size, kernel, stride, pads in cases:
        geometry = nchw_plane_geometry.plane_geometry(
            (1, 8, size, size), (kernel, kernel), (stride, stride), pads, (1, 1), lanes, 1,
            registers)
        assert geometry.aligned, (size, kernel, stride, pads)
        rng = np.random.default_rng(size + kernel)
        weight = numpy_helper.from_array(
            rng.standard_normal((8, 1, kernel, kernel)).astype(np.float32), "w")
        out_h = (size + pads[0] + pads[2] - kernel) // stride + 1
        out_w = (size + pads[1] + pads[3] - kernel) // stride + 1
        path = save_model(
            [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[kernel] * 2,
                              strides=[stride] * 2, pads=pads, group=8)],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, size, size])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, out_h, out_w])],
            [weight], tmp_path / f"b{size}_{kernel}_{stride}.onnx")
        _checked_build(path, tmp_path / f"b{size}_{kernel}_{stride}.so", target)


def test_nchw_depthwise_rows_share_their_zero_columns_between_rows(tmp_path):
    """A stride-1 depthwise plane stores each row with its zero columns, and a tap past a
    row's end reads the next row's left padding, so rows need max(left, right) zeros
    between them, not left + right: 14-pixel rows with a 5x5 kernel at a pitch of 16 (one
    vector a row, 224 pixels computed), not 18 (252). A 5x5 and a 3x3 conv at 14x14 and a
    5x5 at 28x28 against ONNX Runtime: wrapped taps that read anything but zeros would
    show in their border pixels."""
    from edgec.codegen import nchw_plane_geometry

    geometry = nchw_plane_geometry.plane_geometry((1, 240, 14, 14), (5, 5), (1, 1), (2, 2, 2, 2),
                                          (1, 1), 16, 2)
    assert (geometry.pitch, geometry.length) == (16, 224), geometry
    path = _conv_chain(tmp_path / "rows.onnx", seed=3, size=14, specs=[
        ("a", 24, 5, 1, 24), ("b", 24, 3, 1, 24)])
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "rows.so", layout="NCHW",
        target="x86_64-avx512"))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    path = _conv_chain(tmp_path / "rows28.onnx", seed=4, size=28, specs=[("a", 24, 5, 1, 24)])
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "rows28.so", layout="NCHW", target="x86_64"))
    assert result.verify is not None and result.verify.ok, result.verify.summary()


def _pointwise_chain_fmas(tmp_path: Path, size: int, first: int, second: int,
                         target: str = "x86_64-avx512") -> dict:
    """24 -> first -> second channels by 1x1 convs on a size x size map, compiled NCHW for
    `target` and checked against ONNX Runtime; _fma_registers of both convs."""
    path = _conv_chain(tmp_path / "pointwise.onnx", seed=size, size=size,
                       specs=[("a", first, 1, 1, 1), ("b", second, 1, 1, 1)])
    library = tmp_path / "pointwise.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout="NCHW", target=target))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    return {function: _fma_registers(library, function)
            for function in ("fused_conv2d_nchw_pixels_", "fused_conv2d_nchw_pixels1_")}


@pytest.mark.parametrize(("target", "register"), [("x86_64-avx512", "zmm"), ("x86_64", "ymm")])
@pytest.mark.parametrize("size", [40, 32])
def test_nchw_1x1_convs_with_few_input_channels_write_pixel_vectors_on_x86(size, target,
                                                                          register, tmp_path):
    """1x1 NCHW convs with few input channels run on pixel-vector tiles
    (edgec.codegen.nchw_pixels) on AVX-512 and AVX2: 24 -> 29 channels (tiles of 15 or
    10, the last cropped), then 29 -> 24; rows of 40 pixels (on AVX-512 two vectors and an
    8-lane tail, a loop partition of their own; five vectors on AVX2) and of 32. Checked
    against ONNX Runtime; objdump shows full-width FMAs and no lane-by-lane vector
    building in the convs: the transposed packed tile they replace builds each output
    vector of a row with vinsertps (MobileNetV2 NCHW 0.94x on a Zen 5 with AVX-512,
    0.76-0.92x on a Zen 1 with AVX2)."""
    for function, fmas in _pointwise_chain_fmas(tmp_path, size, 29, 24, target).items():
        # AVX-512's 8-lane tail of a 40-pixel row is ymm: no FMA narrower than that.
        assert fmas[register] > 0 and fmas["xmm"] == fmas["gathers"] == 0, (function, fmas)


@pytest.mark.parametrize("target_name", ["x86_64", "x86_64-avx512"])
def test_nchw_dense_conv_tasks_go_row_by_row_over_every_channel_tile(target_name, tmp_path):
    """NCHW dense convs (the pixel-vector tile, 24 -> 14 -> 38 channels, and the transposed
    packed tile, 38 -> 58) run their parallel tasks row-major: a thread's share is a band
    of rows across every channel tile, the rows the next conv reads, so they stay in its
    core's cache (tile-major shares had each thread write its own channels over all rows:
    MobileNetV2 NCHW 0.887x, SSD-Lite 0.878x on a Zen 1). Read from the scheduled TIR: the
    task index divided by the tile count is the row."""
    # Rows (36 pixels), not flat planes; channels no pixel panel of nchw_panels divides (on
    # AVX2 every square plane of whole vectors is whole panels).
    path = _conv_chain(tmp_path / "rows.onnx", seed=5, size=36,
                       specs=[("a", 14, 1, 1, 1), ("b", 38, 1, 1, 1), ("c", 58, 1, 1, 1)])
    convs = _scheduled_functions(path, target_name, "conv2d_nchw")
    assert any("pixels" in name for name in convs), sorted(convs)
    assert any("pixels" not in name for name in convs), sorted(convs)
    tiled = 0
    for name, text in convs.items():
        task = re.search(r"for (\w+) in T\.parallel\(T\.int64\((\d+)\)\)", text)
        assert task, (name, text[:2000])
        if int(task[2]) == 36:  # one channel tile: one task per row either way
            continue
        tiled += 1
        rows = re.findall(rf"v_y = T\.axis\.spatial\(T\.int64\(36\), {task[1]} (//|%)", text)
        assert rows and set(rows) == {"//"}, (name, rows)
    assert tiled >= 2, sorted(convs)


@pytest.mark.parametrize(("target", "tile"), [("x86_64-avx512", 28), ("x86_64", 14)])
@pytest.mark.parametrize("size", [14, 27])
def test_nchw_transposed_tiles_cover_a_row_in_one_pass_over_the_channels(target, tile, size,
                                                                        tmp_path):
    """NCHW dense convs on the transposed packed tile read each input channel's row a plane
    apart; a row in tiles of 7 pixels ran the reduction twice over those lines, and the
    second pass found them evicted (PP-LCNet's 256 -> 256 1x1 convs at 14x14: 0.162 ms,
    0.112 in one pass). Rows of 14 pixels (and of 27, as 14 + 13) run tiles of 14 pixels x
    2 channel vectors on AVX-512, 14 x 1 on AVX2: objdump shows that many accumulators in
    every such conv of 64 input channels or more (7-pixel tiles: 14 and 7); below 128 (from
    there AVX-512 reads a packed copy, test_nchw_1x1_convs_of_many_channels_read_a_packed_...).
    Checked against ONNX Runtime."""
    path = _conv_chain(tmp_path / "rows.onnx", seed=size, size=size, specs=[
        ("a", 96, 1, 1, 1), ("b", 96, 1, 1, 1), ("c", 64, 1, 1, 1)])
    library = _checked_build(path, tmp_path / "rows.so", target)
    code = function_code(library, "objdump", "_compute_")
    convs = [c for c in re.findall(r"^[0-9a-f]+ <(\w*conv2d_nchw\w*_compute_)>:", code,
                                   re.MULTILINE) if "pixels" not in c and "winograd" not in c]
    # 96 -> 96 and 96 -> 64 (24 -> 96, 24 terms, keeps 7-pixel tiles or runs pixels)
    accumulators = {function: _fma_accumulators(library, function) for function in convs}
    assert sum(count >= tile for count in accumulators.values()) >= 2, accumulators


@pytest.mark.parametrize(("target", "size", "order"), [
    ("x86_64-avx512", 7, "b_oc_y"), ("x86_64-avx512", 14, "b_oc_y"),
    ("x86_64-avx512", 28, "b_y_oc"), ("x86_64", 7, "b_y_oc")])
def test_nchw_transposed_tiles_of_small_planes_run_channel_major_on_avx512(target, size,
                                                                          order, tmp_path):
    """MobileNetV3-Small's 96 -> 576 conv at 7x7 (the packed tile transposed into planes):
    on AVX-512 planes of up to 14 rows run their tasks channel-major, each thread's weight
    tiles kept in L1 over the rows (0.055 -> 0.039 ms a call); 28 rows and AVX2's narrower
    tiles stay row-major (ResNet-50 and MobileNetV2 lost otherwise). Read from the fused
    parallel loop of the scheduled TIR; the build matches ONNX Runtime."""
    path = _conv_chain(tmp_path / "expand.onnx", seed=5, size=size, specs=[
        ("a", 96, 1, 1, 1), ("b", 576, 1, 1, 1)])
    expands = [text for text in _scheduled_functions(path, target, "conv2d_nchw").values()
               if 'T.sblock("conv2d_nchw_packed_out_update"' in text and "T.int64(576)" in text]
    assert len(expands) == 1, len(expands)
    loop = re.search(r"for (\w+)_fused in T\.parallel", expands[0])
    assert loop and loop.group(1) == order, expands[0][:2000]
    _checked_build(path, tmp_path / "expand.so", target)


def test_nchw_1x1_convs_of_many_channels_read_a_packed_copy_of_their_input(tmp_path):
    """The transposed tile of an NCHW 1x1 conv broadcasts its input channels a plane apart:
    a pass over many of them reads from more lines than L1 holds (AVX2, 16 registers:
    MobileNetV1's 512 -> 512 convs at 14x14 ran 1.6x of packed; AVX-512: PP-LCNet's 256 ->
    256 at 14x14 1.5x). Such convs copy their input to whole-line channel blocks first:
    NCHW8c from 256 channels on AVX2 (1.00 -> 0.63 ms, packed 0.62), NCHW16c from 128 on
    AVX-512 (0.150 -> 0.119 ms; MobileNetV1 0.84x). In the scheduled TIR the 256 -> 64
    conv reads a copy on both, the 128 -> 256 one on AVX-512 alone, the 24 -> 128 one on
    neither; builds for both (rows of 15 pixels need a tail tile) match ONNX Runtime."""
    path = _conv_chain(tmp_path / "deep.onnx", seed=5, size=15, specs=[
        ("a", 128, 1, 1, 1), ("b", 256, 1, 1, 1), ("c", 64, 1, 1, 1)])
    for target, expected in (("x86_64", [(256, 8)]),
                             ("x86_64-avx512", [(128, 16), (256, 16)])):
        convs = _scheduled_functions(path, target, "conv2d_nchw")
        inputs = {name: int(re.search(r"T\.Buffer\(\(T\.int64\(1\), T\.int64\((\d+)\)",
                                      text)[1]) for name, text in convs.items()}
        assert sorted(inputs.values()) == [24, 128, 256], (target, inputs)
        copied = sorted((inputs[name], _copy_block(text)) for name, text in convs.items()
                        if '"data_pack"' in text)
        assert copied == expected, (target, copied)
        _checked_build(path, tmp_path / f"deep_{target}.so", target)


def test_nchw_strided_convs_read_a_packed_copy_of_the_pixels_they_use(tmp_path):
    """Strided NCHW convs broadcast their input at stride 2 from planes a plane apart
    (ResNet-50's 512 -> 1024 downsample at 28 -> 14 took 3.10 ms against packed's 1.40 on
    AVX2). They copy it to whole-line channel blocks too: a 1x1 conv only the pixels it
    reads (then a stride-1 conv), a 3x3 conv its padded input where the output rows are 14
    or longer; from 64 channels on AVX2, 128 on AVX-512 (nchw_packed_input._STRIDED). By
    (input channels, input side), the convs that read a copy and its block; every build
    matches ONNX Runtime, which fails on a copy that takes the wrong pixels or padding."""
    path = _conv_chain(tmp_path / "strided.onnx", seed=7, size=57, specs=[
        ("a", 128, 1, 1, 1), ("b", 128, 3, 2, 1), ("c", 64, 1, 1, 1), ("d", 64, 3, 2, 1),
        ("e", 128, 1, 2, 1), ("f", 128, 3, 2, 1), ("g", 256, 1, 2, 1)])
    for target, expected in (
            ("x86_64", [(64, 15, 8), (64, 29, 8), (128, 4, 8), (128, 57, 8)]),
            ("x86_64-avx512", [(128, 4, 16), (128, 29, 16), (128, 57, 16)])):
        convs = _scheduled_functions(path, target, "conv2d_nchw")
        inputs = {name: tuple(int(d) for d in re.search(
            r"T\.Buffer\(\(T\.int64\(1\), T\.int64\((\d+)\), T\.int64\((\d+)\)", text).groups())
            for name, text in convs.items()}
        assert sorted(inputs.values()) == [(24, 57), (64, 15), (64, 29), (128, 4), (128, 8),
                                           (128, 29), (128, 57)], (target, inputs)
        copied = sorted((*inputs[name], _copy_block(text)) for name, text in convs.items()
                        if '"data_pack"' in text)
        assert copied == expected, (target, copied)
        _checked_build(path, tmp_path / f"strided_{target}.so", target)


def _copy_block(text: str) -> int:
    """The channel block of the packed input copy (data_pack) in a function's TIR."""
    line = re.search(r"data_pack = T\.sblock_alloc_buffer\(.*", text)
    assert line, text[:2000]
    return int(re.findall(r"T\.int64\((\d+)\)", line[0])[-1])


def test_nchw_pixel_convs_whose_output_outgrows_the_caches_go_tile_by_tile(tmp_path):
    """An expanding NCHW 1x1 conv whose output is past the caches (32 -> 192 channels at
    100x100: 7.7 MB written from 1.3 MB read; MobileNetV2's 16 -> 96 expand conv, 4.8 MB,
    ran 0.35 -> 0.20 ms so on an Emerald Rapids Xeon, 2 threads) runs its tasks tile-major:
    each thread writes its channel tiles over every row, 24 output planes at a time, not
    all of them; the conv before it (24 -> 32, 1.3 MB) stays row-major. Rows of 6 vectors
    and a 4-lane tail: a plane of whole pixel panels (112x112) runs on
    edgec.codegen.nchw_panels, each task all channel tiles over its panel. Read from the
    scheduled TIR: the task index modulo the rows is the row."""
    path = _conv_chain(tmp_path / "expand.onnx", seed=7, size=100,
                       specs=[("a", 32, 1, 1, 1), ("b", 192, 1, 1, 1)])
    convs = _scheduled_functions(path, "x86_64-avx512", "conv2d_nchw_pixels")
    assert len(convs) == 2, sorted(convs)
    orders = {}
    for name, text in convs.items():
        task = re.search(r"for (\w+) in T\.parallel\(T\.int64\((\d+)\)\)", text)
        assert task and int(task[2]) > 100, (name, text[:2000])
        rows = set(re.findall(rf"v_y = T\.axis\.spatial\(T\.int64\(100\), {task[1]} (//|%)",
                              text))
        assert len(rows) == 1, (name, rows)
        orders[int(re.search(r"T\.Buffer\(\(T\.int64\(1\), T\.int64\((\d+)\)", text)[1])] = (
            rows.pop())
    assert orders == {24: "//", 32: "%"}, orders


def _adds_from_memory(library: Path, function: str) -> list[str]:
    """A function's vector adds that take an operand from memory other than the stack
    (objdump): where the epilogue reads accumulators back from a workspace (its bias add),
    not from registers. Biases hoisted to the stack do not count."""
    code = function_code(library, "objdump", function)
    return [line for line in code.splitlines()
            if re.search(r"\bvaddps\s+-?(?:0x[0-9a-f]+)?\((?!%rsp)", line)]


@pytest.mark.parametrize(("target_name", "register", "lanes"),
                         [("x86_64", "ymm", 8), ("x86_64-avx512", "zmm", 16)])
def test_nchw_pixel_tiles_finish_each_vector_in_registers(target_name, register, lanes,
                                                          tmp_path):
    """A pixel-vector tile whose rows are whole vectors runs its bias/activation epilogue on
    each vector's accumulators as soon as they are summed: the epilogue's column is the
    conv's vector loop (scheduled TIR), and in the objdump of the 24 -> 14 conv on 32-pixel
    rows the epilogue's adds take no accumulator from memory (14 and 38 output channels:
    no panel tile of edgec.codegen.nchw_panels divides them). Over the task's whole row
    the accumulators went to a workspace and back (SSD-Lite NCHW 0.908-0.929x,
    MobileNetV2 0.932-0.946x with this on a Zen 1 with AVX2; on AVX-512, Xeon, 0.979x and
    0.980x). Checked against ONNX Runtime."""
    path = _conv_chain(tmp_path / "vectors.onnx", seed=6, size=32,
                       specs=[("a", 14, 1, 1, 1), ("b", 38, 1, 1, 1)])
    pixels = _scheduled_functions(path, target_name, "conv2d_nchw_pixels")
    assert len(pixels) == 2, sorted(pixels)
    for name, text in pixels.items():
        vector = re.search(rf"v_x = T\.axis\.spatial\(T\.int64\(32\), (\w+) \* "
                           rf"T\.int64\({lanes}\)", text)
        assert vector, (name, text[:3000])
        epilogue = re.findall(rf"v_\w+ = T\.axis\.spatial\(T\.int64\(32\), {vector[1]} \* "
                              rf"T\.int64\({lanes}\) \+ ax\d\)", text)
        assert epilogue, (name, text[:3000])
    library = _checked_build(path, tmp_path / "vectors.so", target_name)
    reloads = _adds_from_memory(library, "fused_conv2d_nchw_pixels_")
    assert not reloads, reloads[:5]
    assert _fma_registers(library, "fused_conv2d_nchw_pixels_")[register] > 0


@pytest.mark.parametrize(("target_name", "register", "lanes", "vectors"),
                         [("x86_64", "ymm", 8, 2), ("x86_64-avx512", "zmm", 16, 4)])
def test_nchw_1x1_convs_on_planes_of_whole_panels_run_as_a_gemm_over_pixel_panels(
        target_name, register, lanes, vectors, tmp_path):
    """1x1 NCHW convs on 56x56 planes (whole panels: 4 pixel vectors on AVX-512, 2 on AVX2)
    run on edgec.codegen.nchw_panels at any channel counts: 24 -> 96 and 96 -> 48 (the
    one-vector pixel tile before), 48 -> 144 (the packed tile transposed into the planes
    before; MobileNetV2 NCHW 0.89x with this on AVX-512, 0.946x on AVX2 code, Xeon). Read
    from the scheduled
    TIR: each parallel task is a panel of the plane (the conv's pixel index starts at the
    task index times a panel) whose `vectors` vectors are unrolled in the register tile;
    objdump: `vectors` x 6 accumulators of full-width FMAs, no lane-by-lane vector
    building, and the epilogue takes no accumulator back from memory. Checked against ONNX
    Runtime."""
    path = _conv_chain(tmp_path / "panels.onnx", seed=9, size=56,
                       specs=[("a", 96, 1, 1, 1), ("b", 48, 1, 1, 1), ("c", 144, 1, 1, 1)])
    convs = _scheduled_functions(path, target_name, "conv2d_nchw")
    assert len(convs) == 3 and all("pixels" in name for name in convs), sorted(convs)
    for name, text in convs.items():
        task = re.search(r"for (\w+) in T\.parallel\(T\.int64\((\d+)\)\)", text)
        unrolled = re.search(rf"for (\w+) in T\.unroll\(T\.int64\({vectors}\)\):\n\s*for \w+ "
                             r"in T\.vectorized",
                             text[text.index("conv2d_nchw_pixels_update") - 600:])
        assert task and unrolled, (name, text[:3000])
        pixel = re.search(rf"v_x = T\.axis\.spatial\(T\.int64\(3136\), {task[1]} \* "
                          rf"T\.int64\(\d+\) \+ (?:\w+ \* T\.int64\(\d+\) \+ )?"  # a panel's group
                          rf"{unrolled[1]} \* T\.int64\({lanes}\) \+ \w+\)",
                          text)
        assert pixel, (name, text[:3000])
    library = _checked_build(path, tmp_path / "panels.so", target_name)
    for function in ("fused_conv2d_nchw_pixels_", "fused_conv2d_nchw_pixels1_",
                     "fused_conv2d_nchw_pixels2_"):
        fmas = _fma_registers(library, function)
        assert fmas[register] == vectors * 6 and fmas["gathers"] == 0, (function, fmas)
        assert _fma_accumulators(library, function) == vectors * 6, function
        assert not _adds_from_memory(library, function), function


@pytest.mark.parametrize("size", [28, 14])
def test_nchw_1x1_convs_on_rows_no_vector_divides_run_on_one_flat_plane(size, tmp_path):
    """1x1 NCHW convs whose rows no vector divides (28, 14 pixels) run on pixel vectors of
    the whole plane where pixel vectors pay (nchw_pixels.flat_pays and pays), on AVX-512:
    24 -> 58 channels (few inputs; tiles of 20, the last one padded, as ShuffleNetV2's),
    58 -> 20 (16-channel packed tiles would pad 12 of 32), 20 -> 64; but 64 -> 48 (many
    inputs, no padding) keeps the packed tile transposed into the planes: pixel vectors
    re-read every input plane per tile of outputs (MobileNetV2's 192 -> 32 at 28x28: 0.234
    against 0.097 ms; gated, MobileNetV2 NCHW 0.905x, PP-LCNet 0.942x, Xeon). objdump: zmm
    FMAs and no lane-by-lane vector building. On 28x28 (49 whole vectors) the unpadded
    tiles run their epilogue per vector from registers: no add reads a workspace.
    Checked against ONNX Runtime."""
    path = _conv_chain(tmp_path / "flat.onnx", seed=size, size=size, specs=[
        ("a", 58, 1, 1, 1), ("b", 20, 1, 1, 1), ("c", 64, 1, 1, 1), ("d", 48, 1, 1, 1)])
    library = tmp_path / "flat.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout="NCHW", target="x86_64-avx512"))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    names = _symbols(library, r"fused_conv2d_nchw\w*")
    pixels = sorted(n for n in names if "pixels" in n)
    assert len(pixels) == 3 and len(names) == 4, sorted(names)
    for function in ("fused_conv2d_nchw_pixels_", "fused_conv2d_nchw_pixels1_",
                     "fused_conv2d_nchw_pixels2_"):
        fmas = _fma_registers(library, function)
        # 14x14 = 12 vectors and a 4-pixel tail (a loop of its own, as many xmm FMAs in
        # the code as the main loop has zmm ones); 28x28 = 49 vectors, no tail.
        narrow = fmas["xmm"] if size == 28 else fmas["xmm"] - fmas["zmm"]
        assert fmas["zmm"] > 0 and narrow <= 0 and fmas["gathers"] == 0, (function, fmas)
    if size == 28:
        for function in ("fused_conv2d_nchw_pixels1_", "fused_conv2d_nchw_pixels2_"):
            reloads = _adds_from_memory(library, function)
            assert not reloads, (function, reloads[:5])


def _symbols(library: Path, pattern: str, objdump: str = "objdump") -> set[str]:
    """The names of `library`'s disassembled symbols that match `pattern` whole."""
    return set(re.findall(rf"<({pattern})>:", subprocess.run(
        [objdump, "-d", str(library)], capture_output=True, text=True, check=True).stdout))


def _winograd_functions(library: Path, objdump: str = "objdump") -> set[str]:
    """The NCHW Winograd conv functions in `library` (by its disassembly; a function and
    its parallel body, `_compute_`, count once)."""
    return {name.removesuffix("_compute_")
            for name in _symbols(library, r"fused_conv2d_nchw_winograd\w*", objdump)}


def test_nchw_3x3_convs_with_four_vectors_of_channels_run_winograd(tmp_path):
    """3x3 stride-1 NCHW convs with four vectors of output channels and (x86) two of input
    channels run Winograd F(4x4, 3x3) (ResNet-18 NCHW 0.81x, ResNet-50 0.90x of the direct
    packed tile; AVX2's 8 lanes, AVX-512's 16): 24 -> 32 channels (Winograd with AVX2 only:
    24 input channels are under two AVX-512 vectors), 32 -> 64 and 64 -> 72 (Winograd on
    both, the last output-channel tile padded), 72 -> 16 (direct on both: too few output
    channels) on an 18x18 map (4x4 tiles do not divide it), and a 1x1 head, checked against
    ONNX Runtime."""
    path = _conv_chain(tmp_path / "wino.onnx", seed=3, size=18, specs=[
        ("a", 32, 3, 1, 1), ("b", 64, 3, 1, 1), ("c", 72, 3, 1, 1), ("d", 16, 3, 1, 1),
        ("e", 10, 1, 1, 1)])
    for target, expected in (("x86_64", 3), ("x86_64-avx512", 2)):
        library = tmp_path / f"wino-{target}.so"
        result = pipeline.compile_model(pipeline.CompileOptions(
            model=str(path), output=library, layout="NCHW", target=target))
        assert result.verify is not None and result.verify.ok, result.verify.summary()
        functions = _winograd_functions(library)
        assert len(functions) == expected, (target, sorted(functions))
        code = function_code(library, "objdump", "fused_conv2d_nchw_winograd")
        assert code.count("vfmadd") > 0, f"no Winograd FMAs in the {target} build"


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512", "rpi5"])
def test_nchw_winograd_transforms_read_a_transposed_copy_of_the_planes(target, tmp_path):
    """An NCHW Winograd conv copies its input once into one block of all channels (NHWC
    order: the nhwc_as_one_block stage, a buffer of its own here, filled in parallel rows)
    and its input transform reads that copy; NHWC's stage stays a view (inlined). Read
    through a view, every NCHW transform vector gathered its channels from their planes,
    each input pixel once per overlapping 6x6 tile: ResNet-18 NCHW's 64-channel convs at
    56x56 0.65-0.69 -> 0.49-0.53 ms (AVX-512), ResNet-18 0.91x (AVX2 and AVX-512). The
    64 -> 64 conv on a 22x22 map is checked against ONNX Runtime (for rpi5 through a host
    build)."""
    path = _conv_chain(tmp_path / "wino_copy.onnx", seed=9, size=22, specs=[
        ("a", 64, 1, 1, 1), ("b", 64, 3, 1, 1)])
    winograd = _scheduled_functions(path, target, "winograd")
    assert len(winograd) == 1, sorted(winograd)
    text = next(iter(winograd.values()))
    assert re.search(r"nhwc_as_one_block = T\.sblock_alloc_buffer\(\(T\.int64\(1\), "
                     r"T\.int64\(1\), T\.int64\(22\), T\.int64\(22\), T\.int64\(64\)\)", text), \
        text[:3000]
    copy = text[text.index('T.sblock("nhwc_as_one_block")') - 600:]
    assert "T.parallel" in copy[:600] and "T.vectorized" in copy[:800], copy[:1500]
    assert re.search(r"T\.reads\(nhwc_as_one_block\[", text), text[:3000]
    _checked_build(path, tmp_path / f"wino_copy_{target}.so", target)
    loaded = targets.load(target)
    lowered = build.lower(pipeline.prepare(str(path), loaded, None, "NHWC"), loaded)
    nhwc = [f.script() for g, f in lowered.functions_items() if "winograd" in g.name_hint]
    assert nhwc and not any("nhwc_as_one_block" in text for text in nhwc), nhwc


@pytest.mark.slow
def test_nchw_winograd_on_neon_matches_onnxruntime_on_the_emulated_board(tmp_path,
                                                                          emulated_board):
    """The NCHW Winograd convs on aarch64 from 16 channels (four NEON vectors) in and out:
    by the rpi5 estimate ResNet-18 NCHW 136 -> 82 ms (packed 74), U-Net (128x128) 47 -> 26
    (packed 22). A chain of 24 -> 16 -> 72 channel 3x3 convs on an 18x18 map (4x4 tiles do
    not divide it) and a 1x1 head, built for rpi5, has two Winograd convs of full 4-lane
    fmla (aarch64 objdump), and run on the emulated aarch64 board it matches ONNX Runtime on
    the host."""
    path = _conv_chain(tmp_path / "wino.onnx", seed=3, size=18, specs=[
        ("a", 16, 3, 1, 1), ("b", 72, 3, 1, 1), ("c", 10, 1, 1, 1)])
    library = tmp_path / "wino-rpi5.so"
    fmas = _neon_fmas(path, library, "rpi5", "fused_conv2d_nchw_winograd")
    assert fmas and any(f.endswith(".4s") for f in fmas), sorted(set(fmas))
    functions = _winograd_functions(library, "aarch64-linux-gnu-objdump")
    assert len(functions) == 2, sorted(functions)
    _matches_onnxruntime_on_the_board(path, library, emulated_board, seed=4, size=18)


def _neon_fmas(path: Path, library: Path, target: str, function: str) -> list[str]:
    """The float FMAs (fmla by vector, fmadd scalar) of `function` in the unchecked NCHW
    build of `path` for an aarch64 `target` (aarch64 objdump)."""
    pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=library, layout="NCHW", target=target, check=False))
    return re.findall(r"\b(fmla\s+v\d+\.\d+s|fmadd\s+s)", function_code(
        library, "aarch64-linux-gnu-objdump", function))


def _matches_onnxruntime_on_the_board(path: Path, library: Path, emulated_board, seed: int,
                                      size: int) -> None:
    """`library` run on the emulated aarch64 board on a random 1x24xSxS input matches ONNX
    Runtime running `path` on the host."""
    import onnxruntime as ort

    from edgec import runtime

    x = np.random.default_rng(seed).standard_normal((1, 24, size, size)).astype(np.float32)
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    on_board = runtime.load_remote(emulated_board.connect(session_timeout=300), library)
    got = on_board.run({"x": x})["y"]
    del on_board
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_nchw_depthwise_flat_planes_on_neon_match_onnxruntime_on_the_emulated_board(tmp_path,
                                                                                     emulated_board):
    """The flat-plane depthwise kernel with NEON's 4 lanes (stride 2, 5x5, 3x3 on a 29-pixel
    plane: tiles and row blocks that divide nothing evenly), run on the emulated aarch64
    board, against ONNX Runtime on the host. Every FMA is a full 4-lane fmla (aarch64
    objdump); along rows of 15 the kernel before it ran 2-lane and scalar ones. The stride-2
    conv's phase copy runs on the board as 8-pixel loads and two shuffles (vector_rewrites)."""
    path = _conv_chain(tmp_path / "depthwise.onnx", seed=3, specs=[
        ("a", 24, 3, 2, 24), ("b", 24, 5, 1, 24), ("c", 24, 3, 1, 24)])
    library = tmp_path / "depthwise-rpi4.so"
    stride2 = _scheduled_functions(path, "rpi4", "depthwise_conv2d_nchw_")
    assert any("T.Shuffle([x[" in text for text in stride2.values()), list(stride2)
    fmas = _neon_fmas(path, library, "rpi4", "fused_depthwise_conv2d_nchw")
    assert fmas and all(f.endswith(".4s") for f in fmas), sorted(set(fmas))
    _matches_onnxruntime_on_the_board(path, library, emulated_board, seed=3, size=29)


def _two_convs(path: Path, channels: int) -> Path:
    rng = np.random.default_rng(channels)
    inits = [numpy_helper.from_array((rng.standard_normal((channels, 3, 3, 3)) * 0.3)
                                     .astype(np.float32), "w0"),
             numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) * 0.3)
                                     .astype(np.float32), "w1")]
    return save_model(
        [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c0"], ["r0"]),
         helper.make_node("Conv", ["r0", "w1"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 16, 16])],
        inits, path)


@pytest.mark.parametrize(("target", "channels", "layout", "why"), [
    ("x86_64", 32, "NCHW8c", "(x86_64's default)"),
    ("x86_64", 58, "NHWC", "(not x86_64's packed default: the model's channel counts fit "
                           "NCHW8c badly)"),  # ShuffleNetV2's branch width
    ("x86_64-avx512", 32, "NHWC", "(x86_64-avx512's default for float models)"),
])
def test_compile_says_why_the_default_layout_is_what_it_is(target, channels, layout, why,
                                                           tmp_path):
    from conftest import run_cli

    path = _two_convs(tmp_path / "m.onnx", channels)
    out = tmp_path / "m.so"
    result = run_cli("compile", str(path), "-t", target, "-o", str(out), "--no-check")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.with_name("m.so.json").read_text())["layout"] == layout
    assert f"layout {layout} {why}," in result.stdout, result.stdout
    named = run_cli("compile", str(path), "-t", target, "-o", str(out), "--no-check",
                    "--layout", "NHWC" if layout == "NHWC" else "NCHWc")
    assert f"layout {layout}," in named.stdout, named.stdout  # asked for by name: no reason


def _shuffle_graph(path: Path, parts: int, groups: int, part_channels: int) -> Path:
    """`parts` 1x1 convs of a 1x6x9x11 input concatenated, shuffled in `groups` (reshape,
    transpose, reshape), split in halves, each half through a 1x1 conv, the two added."""
    rng = np.random.default_rng(parts * 10 + groups)
    channels, size = parts * part_channels, (9, 11)
    half = channels // 2

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", f"w{k}"], [f"p{k}"]) for k in range(parts)]
    nodes += [
        helper.make_node("Concat", [f"p{k}" for k in range(parts)], ["cat"], axis=1),
        helper.make_node("Reshape", ["cat", "grouped_shape"], ["grouped"]),
        helper.make_node("Transpose", ["grouped"], ["swapped"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["swapped", "flat_shape"], ["shuffled"]),
        helper.make_node("Split", ["shuffled", "halves"], ["h0", "h1"], axis=1),
        helper.make_node("Conv", ["h0", "v0"], ["c0"]),
        helper.make_node("Conv", ["h1", "v1"], ["c1"]),
        helper.make_node("Add", ["c0", "c1"], ["y"]),
    ]
    inits = [weight(f"w{k}", part_channels, 6, 1, 1) for k in range(parts)]
    inits += [weight("v0", 8, half, 1, 1), weight("v1", 8, half, 1, 1),
              numpy_helper.from_array(np.array([1, groups, channels // groups, *size],
                                               np.int64), "grouped_shape"),
              numpy_helper.from_array(np.array([1, channels, *size], np.int64), "flat_shape"),
              numpy_helper.from_array(np.array([half, half], np.int64), "halves")]
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, *size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, *size])], inits, path)


@pytest.mark.parametrize(("target", "parts", "groups", "part_channels"), [
    ("x86_64", 2, 2, 58),  # ShuffleNetV2's 28x28 stage: halves start on an odd channel
    ("x86_64-avx512", 2, 2, 116),
    ("x86_64-avx512", 3, 3, 6),  # ShuffleNetV1's three groups
    ("x86_64", 3, 2, 4),  # a concat of 3 shuffled in 2: read through the concat
])
def test_nhwc_channel_shuffles_and_their_splits_run_as_one_kernel(target, parts, groups,
                                                                  part_channels, tmp_path):
    """A channel shuffle (reshape, transpose, reshape) with the concat before it and the
    split after it compiles to edgec's shuffle kernel in NHWC: no transposes left in the
    graph, no function of it on the generic schedule (as reshape/transpose/reshape, fused,
    they ran as div/mod gathers: 0.40 of ShuffleNetV2's 1.37 ms INT8), and ONNX Runtime's
    result."""
    path = _shuffle_graph(tmp_path / "shuffle.onnx", parts, groups, part_channels)
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "shuffle.so", layout="NHWC", target=target))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    # The input's, once per conv reading it (ConvertLayout does not share them), the output's.
    assert result.layout_transforms <= parts + 1, result.layout_transforms
    generic = result.tuning.get("generic_names", [])
    assert not [n for n in generic if not n.startswith("transpose")], generic
    names = [gv.name_hint for gv in result.model.ir.functions]
    assert any(name.startswith("channel_shuffle") for name in names), names


def _learned_affine_graph(path: Path) -> Path:
    """PaddlePaddle's learnable hard-swish between two convs: conv -> x * w0 + w1 (shape (1,)
    values, as Paddle2ONNX writes them) -> x * clip(x + 3, 0, 6) / 6 -> conv."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) * 0.3)
                                     .astype(np.float32), "w0"),
             numpy_helper.from_array((rng.standard_normal((8, 16, 1, 1)) * 0.3)
                                     .astype(np.float32), "w1"),
             numpy_helper.from_array(np.array([0.94], np.float32), "scale"),
             numpy_helper.from_array(np.array([0.5], np.float32), "shift"),
             numpy_helper.from_array(np.array([3.0], np.float32), "three"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["scale", "c0"], ["m"]),
             helper.make_node("Add", ["m", "shift"], ["a"]),
             helper.make_node("Add", ["a", "three"], ["a3"]),
             helper.make_node("Clip", ["a3", "zero", "six"], ["clipped"]),
             helper.make_node("Mul", ["a", "clipped"], ["gated"]),
             helper.make_node("Div", ["gated", "six"], ["h"]),
             helper.make_node("Conv", ["h", "w1"], ["y"])]
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 20, 20])], inits, path)


@pytest.mark.parametrize(("target", "quantize"), [
    ("x86_64", None), ("x86_64-avx512-vnni", None), ("x86_64", "int8")])
def test_nhwc_keeps_ops_with_single_value_operands_in_nhwc(target, quantize, tmp_path):
    """Adds and multiplies by a (1,)-shaped value (PaddlePaddle's learned activation scales)
    stay NHWC between NHWC convs: ConvertLayout could not lay out a rank-1 operand and
    transposed there and back around each (69 transposes in PP-OCRv4's detector, 0.82x its
    latency without them). Output checked against ONNX Runtime."""
    from edgec.quant import QuantizeOptions

    path = _learned_affine_graph(tmp_path / "affine.onnx")
    quantization = QuantizeOptions()
    if quantize:
        np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal(
            (4, 8, 20, 20)).astype(np.float32))
        quantization = QuantizeOptions(quantize, calib=str(tmp_path / "calib.npy"))
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(path), output=tmp_path / "affine.so", layout="NHWC", target=target,
        quantization=quantization))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    assert result.layout_transforms <= 2, result.layout_transforms  # the input's, the output's


def _fmas_per_broadcast(library: Path, function: str) -> float:
    """FP32 FMAs over scalar broadcasts (vbroadcastss) in one function (objdump)."""
    code = function_code(library, "objdump", function)
    fmas = len(re.findall(r"\bvfmadd\d+ps\b", code))
    return fmas / max(1, len(re.findall(r"\bvbroadcastss\b", code)))


@pytest.mark.parametrize(("layout", "conv_symbol"), [
    ("NCHWc", r"\w*conv2d_nchwc\d*_add\d*_relu\d*_compute_"),
    ("NHWC", r"\w*conv2d_nhwc\w*_compute_")])
def test_avx2_dense_convs_pair_two_channel_vectors_per_tile(layout, conv_symbol, tmp_path):
    """With 16 registers (AVX2) a dense tile was up to 8 pixels x one vector: every FMA had
    a broadcast of its own (9 loads per 8 FMAs). Rows that 4 divides now run 4 pixels x 2
    channel vectors, other rows balanced tiles of up to 5 x 2 (14: 5 + 5 + 4), each
    broadcast feeding two FMAs (untuned, Zen 1, x86_64, 5 interleaved rounds: MobileNetV1
    0.867x, MobileNetV2 0.929x, ResNet-18 0.928x, SqueezeNet 0.913x; NHWC tiles too).
    1x1 24 -> 32 on 56x56, 3x3/2 32 -> 32 to 28x28 and to 14x14 (4 chunks: paired), then
    1x1 32 -> 24 (3 chunks: one vector), against ONNX Runtime; objdump counts FMAs per
    broadcast in each conv."""
    library, convs = _checked_conv_chain(
        tmp_path / "pair", 5, 56, [("a", 32, 1, 1, 1), ("b", 32, 3, 2, 1), ("c", 32, 3, 2, 1),
                                   ("d", 24, 1, 1, 1)],
        layout, "x86_64", conv_symbol)
    ratios = {f: _fmas_per_broadcast(library, f) for f in convs}
    assert len(ratios) == 4, ratios
    paired = sorted(r for r in ratios.values() if r >= 1.9)
    single = sorted(r for r in ratios.values() if r < 1.2)
    assert (len(paired), len(single)) == (3, 1), ratios


def test_avx512_nhwc_convs_tile_two_blocks_of_channels_where_their_weights_fit(tmp_path):
    """With AVX-512's 32 registers an NHWC dense tile was up to 8 pixels x one 32-channel
    block (two registers): 9 loads per 14 FMAs on 7-pixel rows. Where the channels make two
    blocks and their weights fit 512 KB, a tile is now up to 6 pixels x two blocks (24
    accumulators, each broadcast feeding four FMAs; 14: 5 + 5 + 4, 7: 4 + 3), which ran
    MobileNetV1 0.949x and SqueezeNet 0.837x (untuned, Ice Lake Xeon, 9 interleaved
    rounds). A chain on 14x14: 1x1 24 -> 64 and 3x3/2 64 -> 256 (two blocks: four FMAs per
    broadcast), 3x3/2 256 -> 64 (590 KB for two blocks: one block, two FMAs per broadcast;
    stride 2, as at stride 1 on 7x7 it runs Winograd F(2x2, 3x3)) and 1x1 64 -> 32 (one
    block), against ONNX Runtime; objdump counts FMAs per broadcast."""
    library, convs = _checked_conv_chain(
        tmp_path / "wide", 6, 14, [("a", 64, 1, 1, 1), ("b", 256, 3, 2, 1),
                                   ("c", 64, 3, 2, 1), ("d", 32, 1, 1, 1)],
        "NHWC", "x86_64-avx512", r"\w*conv2d_nhwc\d*_add\d*_relu\d*_compute_")
    ratios = {f: _fmas_per_broadcast(library, f) for f in convs}
    assert len(ratios) == 4, ratios
    wide = [r for r in ratios.values() if 3.8 <= r <= 4.2]
    narrow = [r for r in ratios.values() if 1.8 <= r <= 2.2]
    assert (len(wide), len(narrow)) == (2, 2), ratios


def test_constant_packing_folds_in_numpy_to_what_tvms_foldconstant_computes():
    """Weights packed OIHW -> OIHW8o, a bias reshaped then packed (a variable bound to a
    constant), a transposed matrix, a pack that pads (16 -> 24: left to FoldConstant) and
    one of an activation (left alone), against TVM's own FoldConstant of the same module;
    the covered calls must be gone before FoldConstant runs."""
    import tvm_ffi
    from tvm import relax

    from edgec.tvm_compat.constant_layouts import fold_constant_layouts

    rng = np.random.default_rng(4)
    weight = relax.const(rng.standard_normal((16, 4, 3, 3)).astype("float32"))
    bias = relax.const(rng.standard_normal(16).astype("float32"))
    matrix = relax.const(rng.standard_normal((5, 7)).astype("float32"))
    pack = lambda o, i, h, w: (o // 8, i, h, w, o % 8)  # noqa: E731
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 2, 2), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            outputs = [
                builder.emit(relax.op.layout_transform(weight, pack)),
                builder.emit(relax.op.layout_transform(
                    builder.emit(relax.op.reshape(bias, (1, 16, 1, 1))),
                    lambda n, c, h, w: (n, c // 8, h, w, c % 8))),
                builder.emit(relax.op.permute_dims(matrix, [1, 0])),
                builder.emit(relax.op.layout_transform(
                    weight, lambda o, i, h, w: (o // 24, i, h, w, o % 24), pad_value=0.0)),
                builder.emit(relax.op.layout_transform(
                    x, lambda n, c, h, w: (n, c // 8, h, w, c % 8))),
            ]
            result = builder.emit_output(relax.Tuple(outputs))
        builder.emit_func_output(result)
    module = builder.get()

    def calls(ir) -> int:
        found = []
        relax.analysis.post_order_visit(ir["main"], lambda e: found.append(e) if isinstance(
            e, relax.Call) and getattr(e.op, "name", "") != "relax.call_tir" else None)
        return len(found)

    folded = fold_constant_layouts(module)
    assert calls(module) == 6 and calls(folded) == 2  # the padded pack and the activation's
    want = relax.transform.FoldConstant()(module)
    got = relax.transform.FoldConstant()(folded)
    assert tvm_ffi.structural_equal(got, want, map_free_vars=True)


def test_deep_packed_1x1_convs_on_avx2_reduce_in_blocks_over_the_whole_plane(tmp_path):
    """A packed 1x1 conv of 512+ input channels on AVX2 streamed its weight panel from L2 for
    every row of pixels (1024 -> 1024 at 7x7: 1.08 ms a call, weights from L3); one task per
    pair of output chunks now runs the whole plane per block of 64 input channels, whose
    weights stay in L1 (0.77 ms; ResNet-50 0.892x; edgec.codegen.reduction_blocks). In the
    scheduled TIR the 512-channel convs' update loops start (task over chunk pairs, reduction
    blocks, pixel tiles of the 7x7 plane) on x86_64; the 256-channel conv and every conv on
    AVX-512 keep the row tile. The AVX2 build matches ONNX Runtime."""
    from tvm import s_tir, tirx

    path = _conv_chain(tmp_path / "deep.onnx", seed=3, size=13, specs=[
        ("a", 512, 3, 2, 1), ("b", 256, 1, 1, 1), ("c", 512, 1, 1, 1), ("d", 64, 1, 1, 1)])
    for target_name, expected in (("x86_64", [(24, False), (256, False), (512, True),
                                              (512, True)]),
                                  ("x86_64-avx512", [(24, False), (256, False), (512, False),
                                                     (512, False)])):
        target = targets.load(target_name)
        lowered = build.lower(pipeline.prepare(str(path), target, None, "NCHWc"), target)
        found = []
        for _, func in lowered.functions_items():
            names = [n for n in re.findall(r'T\.sblock\("(conv2d_nchwc\w*)"\)',
                                           func.script() if isinstance(func, tirx.PrimFunc)
                                           else "") if not n.endswith("_init")]
            if not names:
                continue
            sch = s_tir.Schedule(func)
            loops = sch.get_loops(sch.get_sblock(names[0]))  # row tiles: the first part
            extents = [int(sch.get(loop).extent) for loop in loops]
            data, weight = (func.params[i].shape for i in (0, 1))
            channels = int(data[1]) * int(data[-1])
            chunks = int(weight[0])
            blocked = (sch.get(loops[0]).kind == tirx.ForKind.PARALLEL
                       and extents[:3] == [chunks // 2, channels // 64, 13])  # 49 px in 4s
            found.append((channels, blocked))
        assert sorted(found) == expected, (target_name, found)
    _checked_build(path, tmp_path / "deep.so", "x86_64", layout="NCHWc")

"""INT8 and FP16: the artifacts agree with FP32 and with ONNX Runtime's own run of the same
QDQ model, the INT8 graph really computes conv2d in integers, and bad calibration data gets
one clear error and no artifact.

Evaluation images are scikit-image's bundled photos, preprocessed here with numpy and
scikit-image (not edgec's reader), so the references share no code with edgec.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_clean_failure, leftovers, run_cli, save_classifier
from edgec import pipeline, runtime, targets, zoo
from edgec.quant import QuantizeOptions

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                  "hubble_deep_field.jpg", "ihc.png", "color.png", "motorcycle_left.png",
                  "retina.jpg", "camera.png", "coins.png", "moon.png")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
# INT8 vs ORT running the same QDQ model: both round each requantization independently and a
# one-step difference propagates, so outputs differ by a few steps of the output scale.
QDQ_MIN_COSINE, QDQ_RTOL, QDQ_MIN_TOP1 = 0.995, 0.05, 0.9
# INT8 vs FP32: a cosine floor, and top-1 agreement at least ONNX Runtime's own INT8 run of
# the QDQ model less one image. The zoo's weights are seeded-random: their logits have small
# margins, so 8-bit rounding flips top-1 on some photos in ORT as well (MobileNetV3-Small:
# about half of them), and the QDQ model, not edgec's lowering, sets that level.
FP32_MIN_COSINE = 0.97


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Real photos as files, exactly as a user would point --calib at them."""
    import skimage.data

    source = Path(skimage.data.__file__).parent
    folder = tmp_path_factory.mktemp("photos")
    for name in SKIMAGE_PHOTOS:
        shutil.copy(source / name, folder / name)
    return folder


def photo_inputs(folder: Path, size: int = 224) -> list[np.ndarray]:
    """The same photos preprocessed independently: RGB, resized, ImageNet mean/std, NCHW."""
    from skimage import color, io, transform

    batches = []
    for path in sorted(folder.iterdir()):
        image = io.imread(path)
        image = color.gray2rgb(image) if image.ndim == 2 else image[..., :3]
        image = transform.resize(image, (size, size), preserve_range=True, anti_aliasing=False)
        image = ((image / 255.0).astype(np.float32) - MEAN) / STD
        batches.append(image.transpose(2, 0, 1)[None].astype(np.float32))
    return batches


def ort_session(model) -> ort.InferenceSession:
    """ONNX Runtime on `model`; QDQ groups left unfused where its fused QLinearConv would
    saturate u8 x s8 pair sums at int16: x86 hosts without VNNI, weights past 7 bits
    (test_the_reference_computes_full_range_int8_weights_exactly_on_avx2_too)."""
    options = ort.SessionOptions()
    weights = [numpy_helper.to_array(i).astype(int) for i in model.graph.initializer
               if i.data_type == TensorProto.INT8]
    wide = any(w.size and np.abs(w).max() > 64 for w in weights)
    if wide and not {"avx512_vnni", "avx_vnni"} & targets.cpu_flags():
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def ort_outputs(model, inputs: list[np.ndarray]) -> np.ndarray:
    session = ort_session(model)
    return np.concatenate([session.run(None, {"input": x})[0] for x in inputs])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def integer_convs(ir, op: str = "relax.nn.conv2d") -> list[tuple[str, str, str]]:
    """(data, weight, accumulator) dtypes of every conv2d (or `op`) in the Relax graph."""
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == op:
            found.append((str(expr.args[0].ty.dtype), str(expr.args[1].ty.dtype),
                          str(expr.ty.dtype)))

    relax.analysis.post_order_visit(ir["main"], visit)
    return found


def disassembly(library: Path) -> str:
    """The library's machine code as binutils' objdump reads it (CI installs binutils)."""
    assert shutil.which("objdump"), "objdump (binutils) is needed to inspect the code"
    return subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small"])
def test_int8_artifact_agrees_with_fp32_and_with_onnxruntime_on_the_same_qdq_model(
        name, photo_folder, tmp_path):
    out = tmp_path / f"{name}-int8.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=f"zoo:{name}", output=out, time_fp32=False,  # speed: bench/compare.py
        quantization=QuantizeOptions("int8", calib=str(photo_folder))))
    assert "quantize:int8" in result.info.applied
    convs = integer_convs(result.model.ir)
    assert convs and all(c[0] in ("uint8", "int8") and c[1] == "int8" and c[2] == "int32"
                         for c in convs), convs

    inputs = photo_inputs(photo_folder)
    compiled = runtime.load(out)
    # Off 64-byte alignment on purpose: the first cast's aligned vector loads crashed the
    # process (SIGSEGV) when the loader handed numpy's memory to TVM as it was.
    got = np.concatenate([compiled.run({"input": misaligned(x)})["logits"] for x in inputs])
    fp32 = ort_outputs(zoo.build(name), inputs)
    qdq = ort_outputs(result.model.reference, inputs)
    assert result.model.reference.graph.node[0].op_type in ("QuantizeLinear", "DequantizeLinear")

    assert cosine(got, qdq) >= QDQ_MIN_COSINE
    assert np.abs(got - qdq).max() <= QDQ_RTOL * max(1.0, float(np.abs(qdq).max()))
    assert np.mean(got.argmax(1) == qdq.argmax(1)) >= QDQ_MIN_TOP1
    assert cosine(got, fp32) >= FP32_MIN_COSINE
    ort_agreement = np.mean(qdq.argmax(1) == fp32.argmax(1))
    assert np.mean(got.argmax(1) == fp32.argmax(1)) >= ort_agreement - 1 / len(inputs)


@pytest.mark.slow
def test_fp16_stays_close_to_fp32(photo_folder, tmp_path):
    out = tmp_path / "mobilenet_v2-fp16.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model="zoo:mobilenet_v2", output=out,
        quantization=QuantizeOptions("fp16", calib=str(photo_folder))))
    assert "quantize:fp16" in result.info.applied
    assert {c[0] for c in integer_convs(result.model.ir)} == {"float16"}
    inputs = photo_inputs(photo_folder)
    compiled = runtime.load(out)
    # Off 64-byte alignment on purpose: the first cast's aligned vector loads crashed the
    # process (SIGSEGV) when the loader handed numpy's memory to TVM as it was.
    got = np.concatenate([compiled.run({"input": misaligned(x)})["logits"] for x in inputs])
    fp32 = ort_outputs(zoo.build("mobilenet_v2"), inputs)
    assert cosine(got, fp32) >= 0.999
    assert np.abs(got - fp32).max() <= 0.02 * max(1.0, float(np.abs(fp32).max()))
    assert np.mean(got.argmax(1) == fp32.argmax(1)) >= 0.9


def misaligned(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `array` that starts 4 bytes past a 64-byte boundary."""
    raw = np.empty(array.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data % 64) + 4
    view = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    view[...] = array
    assert view.ctypes.data % 64 == 4 and view.flags.c_contiguous
    return view


def assert_agrees_with_qdq(compiled, qdq_model, samples) -> None:
    """edgec's INT8 logits against ONNX Runtime running the same QDQ model, sample by sample."""
    session = ort_session(qdq_model)
    for x in samples:
        got = compiled.run({"input": x})["logits"]
        want = session.run(None, {"input": x})[0]
        assert cosine(got, want) >= QDQ_MIN_COSINE
        assert np.abs(got - want).max() <= QDQ_RTOL * max(1.0, float(np.abs(want).max()))


def seeded_weights(seed: int):
    """weight(name, *shape): an initializer of normal values x 0.3 from one seeded stream."""
    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32),
                                       name)

    return weight


@pytest.fixture
def small_net(tmp_path: Path) -> Path:
    """Image stem, conv3x3 (padded) + ReLU, conv1x1, residual add, global pool, Gemm:
    every INT8 path."""
    weight = seeded_weights(3)

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["sum"]),
    ]
    inits = [weight("w0", 8, 3, 1, 1), weight("b0", 8), weight("w1", 8, 8, 3, 3), weight("b1", 8),
             weight("w2", 8, 8, 1, 1),
             weight("b2", 8), weight("w3", 10, 8), weight("b3", 10)]
    return save_classifier(nodes, "sum", ("w3", "b3"), inits, 16,
                           tmp_path / "small.onnx")


@pytest.mark.parametrize(("method", "per_channel", "layout"), [
    ("minmax", True, "NCHWc"), ("entropy", False, "NCHW"), ("percentile", True, "NHWC")])
def test_int8_small_net_computes_in_integers_and_matches_onnxruntime_qdq(
        small_net, tmp_path, method, per_channel, layout):
    rng = np.random.default_rng(5)
    samples = rng.uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", samples)
    out = tmp_path / "out" / "small.so"
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=str(small_net), output=out, layout=layout,
        quantization=QuantizeOptions("int8", calib=str(tmp_path / "calib.npy"), method=method,
                                     per_channel=per_channel)))
    convs = integer_convs(result.model.ir)
    assert len(convs) == 3 and all(c[1:] == ("int8", "int32") for c in convs), convs
    # The classifier's logits stay float, but its sum is still computed in integers, on
    # the dot product (a 1x1 NHWC conv), not TVM's generic int32 matmul.
    assert integer_convs(result.model.ir, "relax.matmul") == [("uint8", "int8", "int32")]
    assert [n for n in result.tuning["generic_names"] if "matmul" in n] == []
    if layout == "NCHWc":  # the packed 1x1 conv runs on AVX2's u8 x s8 multiply-add
        assert disassembly(out).count("vpmaddubsw") > 0
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


def compile_int8(model: Path, out: Path, samples: np.ndarray, target: str = "x86_64",
                 check: bool = True, layout: str = "default"):
    """`model` compiled to INT8 for `target`, calibrated on `samples` (saved beside `out`)."""
    calib = out.with_suffix(".calib.npy")
    np.save(calib, samples)
    return pipeline.compile_model(pipeline.CompileOptions(
        model=str(model), output=out, target=target, check=check, layout=layout,
        time_fp32=False, quantization=QuantizeOptions("int8", calib=str(calib))))


def compile_small_int8(small_net: Path, out: Path, target: str, check: bool = True,
                       layout: str = "default"):
    """The small net compiled to INT8 for `target`, calibrated on 16 seeded random inputs;
    returns (those inputs, the compile result)."""
    samples = np.random.default_rng(6).uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    return samples, compile_int8(small_net, out, samples, target, check, layout)


@pytest.mark.parametrize("layout", ["NCHWc", "NHWC"])
def test_int8_on_a_vnni_target_uses_vpdpbusd_with_full_8_bit_weights(small_net, tmp_path,
                                                                     layout):
    out = tmp_path / "small.so"
    samples, result = compile_small_int8(small_net, out, "x86_64-avx512-vnni", check=False,
                                         layout=layout)
    assert result.model.layout == ("NHWC" if layout == "NHWC" else "NCHW8c")
    code = disassembly(out)
    assert code.count("vpdpbusd") > 0 and code.count("vpmaddubsw") == 0
    weights = [v for v in result.model.reference.graph.initializer
               if v.data_type == TensorProto.INT8]
    assert max(int(np.abs(numpy_helper.to_array(w).astype(int)).max()) for w in weights) > 64
    if "avx512_vnni" not in targets.cpu_flags():
        pytest.skip("this CPU has no AVX-512 VNNI: the code was inspected but cannot run here")
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


@pytest.mark.slow
def test_int8_for_a_dotprod_board_runs_on_sdot_and_matches_onnxruntime_there(small_net, tmp_path,
                                                                             emulated_board):
    out = tmp_path / "small-rpi5.so"
    samples, result = compile_small_int8(small_net, out, "rpi5")
    assert shutil.which("aarch64-linux-gnu-objdump"), "binutils-aarch64-linux-gnu is needed"
    code = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(out)], capture_output=True,
                          text=True, check=True).stdout
    assert code.count("sdot") > 0
    graph = result.model.reference.graph
    zero_points = {i.name: i.data_type for i in graph.initializer}
    activation_types = {zero_points[n.input[2]] for n in graph.node
                        if n.op_type == "QuantizeLinear"}
    assert activation_types == {TensorProto.INT8}  # sdot multiplies int8 by int8
    # qemu's default CPU has dotprod
    on_board = runtime.load_remote(emulated_board.connect(session_timeout=300), out)
    assert_agrees_with_qdq(on_board, result.model.reference, samples[:3])
    del on_board


def test_random_calibration_warns_loudly_and_the_report_reaches_json(small_net, tmp_path):
    import json

    out, report = tmp_path / "small.so", tmp_path / "report.json"
    result = run_cli("compile", str(small_net), "-o", str(out), "--quantize", "int8",
                     "--calib", "random", "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert "accuracy numbers mean nothing" in result.stderr
    assert "warning: calibrating on random data" in result.stdout
    quantization = json.loads(report.read_text())["quantization"]
    assert quantization["mode"] == "int8" and quantization["outputs"][0]["name"] == "logits"
    assert quantization["integer_layers"]
    # By default the float build is timed beside it here, both figures in the report.
    assert quantization["fp32_ms"] > 0 and quantization["quantized_ms"] > 0
    assert "latency here: FP32" in result.stdout
    # verify holds an INT8 build to what compile measured against the float model (here on
    # random inputs, like verify's own), not to the float builds' 1e-3, which it misses.
    verify = run_cli("verify", str(out), "--reference", str(small_net))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "int8 build vs the float model: twice the disagreement" in verify.stdout
    strict = run_cli("verify", str(out), "--reference", str(small_net), "--rtol", "1e-4")
    assert_clean_failure(strict, "differs")
    assert "MISMATCH" in strict.stdout
    # Metadata from before the recorded tolerance: a fixed INT8 bound, said so.
    meta = out.with_name(out.name + ".json")
    info = json.loads(meta.read_text())
    del info["check"]
    meta.write_text(json.dumps(info))
    old = run_cli("verify", str(out), "--reference", str(small_net))
    assert old.returncode == 0 and "records no tolerance" in old.stdout


def test_calib_samples_says_its_photos_are_not_real_data_and_no_time_fp32_skips_fp32(
        small_net, tmp_path):
    import json

    out, report = tmp_path / "small.so", tmp_path / "report.json"
    result = run_cli("compile", str(small_net), "-o", str(out), "--quantize", "int8",
                     "--calib", "samples", "--calib-limit", "6", "--no-time-fp32",
                     "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert "calibrate a model you deploy on a few hundred inputs" in result.stderr
    quantization = json.loads(report.read_text())["quantization"]
    assert quantization["samples"] == 6
    assert quantization["fp32_ms"] is None and quantization["quantized_ms"] is None
    assert "latency against FP32: not timed: --no-time-fp32" in result.stdout
    assert quantization["sample_source"] == "scikit-image's stock photos"


def test_int8_without_calibration_data_is_refused(small_net, tmp_path):
    result = run_cli("compile", str(small_net), "-o", str(tmp_path / "m.so"),
                     "--quantize", "int8")
    assert_clean_failure(result, "--calib")
    assert leftovers(tmp_path) == []


def test_empty_calibration_folder_is_refused(small_net, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("compile", str(small_net), "-o", str(tmp_path / "m.so"),
                     "--quantize", "int8", "--calib", str(empty))
    assert_clean_failure(result, str(empty), "no images")
    assert leftovers(tmp_path) == []


def test_calibration_array_of_the_wrong_shape_is_refused(small_net, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 3, 32, 32), np.float32))
    result = run_cli("compile", str(small_net), "-o", str(tmp_path / "m.so"),
                     "--quantize", "int8", "--calib", str(bad))
    assert_clean_failure(result, "bad.npy", "[1, 3, 32, 32]", "[1, 3, 16, 16]")
    assert leftovers(tmp_path) == []


def test_unreadable_calibration_image_is_refused(small_net, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = run_cli("compile", str(small_net), "-o", str(tmp_path / "m.so"),
                     "--quantize", "int8", "--calib", str(folder))
    assert_clean_failure(result, "broken.png", "cannot be read")
    assert leftovers(tmp_path) == []


@pytest.fixture
def unpackable_net(tmp_path: Path) -> Path:
    """A stem, then a 6-channel middle (1x1 conv, depthwise 3x3 at stride 2, 1x1 conv) that
    no packed block divides, as ShuffleNetV2's 58-channel stage, then a classifier."""
    weight = seeded_weights(11)

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=6, strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
    ]
    inits = [weight("w0", 16, 3, 3, 3), weight("b0", 16), weight("w1", 6, 16, 1, 1),
             weight("b1", 6), weight("w2", 6, 1, 3, 3), weight("b2", 6),
             weight("w3", 16, 6, 1, 1), weight("b3", 16), weight("w4", 10, 16),
             weight("b4", 10)]
    return save_classifier(nodes, "r3", ("w4", "b4"), inits, 20,
                           tmp_path / "unpackable.onnx")


@pytest.mark.parametrize("layout", ["default", "NHWC"])
def test_int8_convs_no_packed_block_divides_run_on_edgec_kernels_and_match_the_qdq_model(
        unpackable_net, tmp_path, layout):
    """Convs whose channels the block does not divide stay NCHW in the packed layout (and
    every conv is plain in NHWC): they sum exactly in float on the plain layouts' kernels
    instead of TVM's generic int32 conv, which took half of ShuffleNetV2's INT8 time."""
    samples = np.random.default_rng(12).uniform(-1, 1, (16, 1, 3, 20, 20)).astype(np.float32)
    out = tmp_path / "unpackable.so"
    result = compile_int8(unpackable_net, out, samples, layout=layout)
    convs = integer_convs(result.model.ir)
    assert len(convs) == 4 and all(c[1:] == ("int8", "int32") for c in convs), convs
    generic = [name for name in result.tuning["generic_names"] if "conv2d" in name]
    assert generic == [], generic
    if layout == "NHWC":  # the dense NHWC convs on AVX2's u8 x s8 multiply-add
        assert disassembly(out).count("vpmaddubsw") > 0
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


@pytest.fixture
def depthwise_net(tmp_path: Path) -> Path:
    """MobileNet's block on 64 channels: 1x1 conv + ReLU, 3x3 depthwise + ReLU, 1x1 conv:
    16-lane requantize epilogues after both INT8 kernels."""
    weight = seeded_weights(4)
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=64),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
    ]
    inits = [weight("w0", 64, 3, 1, 1), weight("b0", 64), weight("w1", 64, 1, 3, 3),
             weight("b1", 64), weight("w2", 64, 64, 1, 1), weight("b2", 64),
             weight("w3", 10, 64), weight("b3", 10)]
    return save_classifier(nodes, "c2", ("w3", "b3"), inits, 16, tmp_path / "dw.onnx")


@pytest.mark.parametrize("target", ["x86_64-avx512", "x86_64-avx512-vnni"])
def test_int8_requantize_epilogues_convert_in_512_bit_vectors_on_avx512(
        depthwise_net, tmp_path, target):
    """LLVM's tuning for these mcpus prefers 256-bit vectors and split each 16-lane
    int32 -> float -> 8-bit epilogue into ymm halves (146 ymm converts against 16 zmm ones
    in this net); INT8 builds turn that off ([int8] mattr in the target file)."""
    samples = np.random.default_rng(13).uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    out = tmp_path / "dw.so"
    result = compile_int8(depthwise_net, out, samples, target, check=False)
    code = disassembly(out)
    halves = re.findall(r"\tvcvt\w+\s+%ymm", code)
    assert len(re.findall(r"\tvcvt\w+\s+%zmm", code)) > 0 and halves == [], len(halves)
    if not targets.load(target).is_native:
        pytest.skip(f"this CPU cannot run {target}'s code: it was inspected, not run")
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


def stores_to_the_stack_between_dots(code: str) -> dict[str, int]:
    """Per function with vpdpbusd: the vector stores to the stack between its first and last
    dot (an accumulator LLVM could not keep in a register goes there and back every step)."""
    found = {}
    for function in re.split(r"\n(?=[0-9a-f]+ <)", code):
        lines = function.splitlines()
        dots = [i for i, line in enumerate(lines) if "vpdpbusd" in line]
        if dots:
            body = lines[dots[0]:dots[-1] + 1]
            found[lines[0]] = sum(bool(re.search(r"\tvmov\w+\s+%[xyz]mm\d+,.*\(%rsp\)", line))
                                  for line in body)
    return found


@pytest.mark.parametrize(("kernel", "channels", "side"), [(1, 32, 28), (3, 64, 14)],
                         ids=["1x1-accumulators", "3x3-broadcasts"])
def test_int8_vnni_tiles_keep_their_accumulators_and_broadcasts_in_registers(
        tmp_path, kernel, channels, side):
    """No vector goes to the stack and back between a VNNI tile's dots. 1x1 on 28x28: a
    32-channel-wide NHWC tile of 14 pixels took 28 of the 32 registers and LLVM kept one
    accumulator on the stack, stored and reloaded around every dot; tiles now hold at most
    14 accumulators (7 pixels). 3x3 on 14x14: with the kernel's taps inside each 16-channel
    block, LLVM unrolled a block's taps and 4-channel steps together, kept every input
    pixel's broadcast live across the taps reading it (9 x 4) and spilled them (ResNet-50's
    256-channel 3x3 convs at 14x14 0.317 ms against 0.218 with the taps outside the
    blocks). Both builds match ONNX Runtime's QDQ model."""
    weight = seeded_weights(5 + kernel)
    pads = [kernel // 2] * 4
    nodes = [helper.make_node("Conv", ["input", "w0", "b0"], ["c0"]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=pads),
             helper.make_node("Relu", ["c1"], ["r1"])]
    inits = [weight("w0", channels, 3, 1, 1), weight("b0", channels),
             weight("w1", 64, channels, kernel, kernel), weight("b1", 64),
             weight("w3", 10, 64), weight("b3", 10)]
    net = save_classifier(nodes, "r1", ("w3", "b3"), inits, side, tmp_path / "net.onnx")
    samples = np.random.default_rng(13 + kernel).uniform(
        -1, 1, (16, 1, 3, side, side)).astype(np.float32)
    out = tmp_path / "net.so"
    result = compile_int8(net, out, samples, "x86_64-avx512-vnni", check=False)
    spilled = stores_to_the_stack_between_dots(disassembly(out))
    assert len(spilled) >= 2 and not any(spilled.values()), spilled
    if "avx512_vnni" not in targets.cpu_flags():
        pytest.skip("this CPU has no AVX-512 VNNI: the code was inspected but cannot run here")
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


@pytest.fixture
def shuffle_unit(tmp_path: Path) -> Path:
    """ShuffleNetV2's unit on 12 channels (packs in no block wider than 4): a stem, a
    channel split, a 1x1 / depthwise / 1x1 branch on one half, the concat, the channel
    shuffle (reshape, transpose, reshape), a 1x1 conv and a classifier."""
    weight = seeded_weights(13)

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Split", ["r0", "halves"], ["x1", "x2"], axis=1),
        helper.make_node("Conv", ["x2", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=6, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Concat", ["x1", "r3"], ["cat"], axis=1),
        helper.make_node("Reshape", ["cat", "groups"], ["grouped"]),
        helper.make_node("Transpose", ["grouped"], ["swapped"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["swapped", "flat_shape"], ["shuffled"]),
        helper.make_node("Conv", ["shuffled", "w4", "b4"], ["c4"]),
        helper.make_node("Relu", ["c4"], ["r4"]),
    ]
    inits = [weight("w0", 12, 3, 3, 3), weight("b0", 12), weight("w1", 6, 6, 1, 1),
             weight("b1", 6), weight("w2", 6, 1, 3, 3), weight("b2", 6),
             weight("w3", 6, 6, 1, 1), weight("b3", 6), weight("w4", 12, 12, 1, 1),
             weight("b4", 12), weight("w5", 10, 12), weight("b5", 10),
             numpy_helper.from_array(np.array([6, 6], np.int64), "halves"),
             numpy_helper.from_array(np.array([1, 2, 6, 16, 16], np.int64), "groups"),
             numpy_helper.from_array(np.array([1, 12, 16, 16], np.int64), "flat_shape")]
    return save_classifier(nodes, "r4", ("w5", "b5"), inits, 16,
                           tmp_path / "shuffle_unit.onnx")


def permutes(ir) -> list[tuple[tuple[int, ...], str, list[int]]]:
    """(input shape, dtype, axes) of each permute_dims on an activation in main."""
    import tvm
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if (isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.permute_dims"
                and not isinstance(expr.args[0], tvm.ir.Constant)):
            data = expr.args[0].ty
            found.append((tuple(int(d) for d in data.shape), str(data.dtype),
                          [int(a) for a in expr.attrs.axes]))

    relax.analysis.post_order_visit(ir["main"], visit)
    return found


def shuffle_kernels(ir) -> list[list[tuple[tuple[int, ...], str]]]:
    """The (shape, dtype) of each input of each channel shuffle kernel called in main."""
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if (isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir"
                and expr.args[0].name_hint.startswith("channel_shuffle")):
            found.append([(tuple(int(d) for d in field.ty.shape), str(field.ty.dtype))
                          for field in expr.args[1].fields])

    relax.analysis.post_order_visit(ir["main"], visit)
    return found


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512-vnni"])
def test_int8_channel_shuffles_move_8_bit_values_in_nhwc(shuffle_unit, tmp_path, target):
    """An INT8 model the packed block serves badly defaults to NHWC; its split, concat and
    channel shuffle run on the 8-bit values (only the concat's half quantized otherwise is
    requantized) and stay NHWC (one transpose: the input's), the dense convs on the dot
    product. Each of these had bounced through float or NCHW: ShuffleNetV2 INT8 took 8.1 ms,
    now 1.8 (x86_64-avx512-vnni, this Xeon)."""
    samples = np.random.default_rng(14).uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    out = tmp_path / "shuffle.so"
    result = compile_int8(shuffle_unit, out, samples, target, check=False)
    assert result.model.layout == "NHWC"
    moves = permutes(result.model.ir)
    # The input's transpose and the pooled 1x1 map; the shuffle is one NHWC kernel on the
    # 8-bit values, reading the concat's two halves (edgec.codegen.channel_shuffle).
    assert moves == [((1, 3, 18, 18), "uint8", [0, 2, 3, 1]),
                     ((1, 1, 1, 12), "uint8", [0, 3, 1, 2])], moves
    assert shuffle_kernels(result.model.ir) == [[((1, 16, 16, 6), "uint8")] * 2]
    left = result.quantization.qdq_left
    # Float bounces left: the input's quantize, the requantized concat half and the
    # global pool (dequantize, pool, quantize). The split, concat and shuffle add none.
    assert left == {"quantize": 3, "dequantize": 2}, left
    dot = "vpdpbusd" if target.endswith("vnni") else "vpmaddubsw"
    assert disassembly(out).count(dot) > 0
    if target.endswith("vnni") and "avx512_vnni" not in targets.cpu_flags():
        pytest.skip("this CPU has no AVX-512 VNNI: the code was inspected but cannot run here")
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


def test_8_bit_convs_without_a_dot_kernel_sum_exactly_in_float():
    """Stems and depthwise convs sum 8-bit x int8 products in float32 (vpmulld is several
    times slower than an FMA). At the bound, 513 terms of 255 x -128, every sum must still
    be numpy's integer result exactly."""
    import tvm
    from tvm import te

    from edgec.codegen import kernels, schedules

    channels, block, out_channels, size = 57, 8, 16, 6
    assert channels * 9 == kernels.MAX_FLOAT_EXACT_TERMS - 1
    data = te.placeholder((1, channels, size, size), "uint8", name="data")
    kernel = te.placeholder((out_channels // block, channels, 3, 3, block), "int8", name="w")
    conv = kernels.integer_sums_in_float(kernels.conv2d_nchw_packed_out)
    out = conv(data, kernel, [1, 1], [0, 0, 0, 0], [1, 1], 1, "int32", 0)
    target = targets.load("x86_64").tvm_target()
    sch = schedules.schedule_function(te.create_prim_func([data, kernel, out]), target)
    assert sch is not None
    run = tvm.compile(sch.mod, target=target)

    rng = np.random.default_rng(8)
    x = rng.integers(0, 256, (1, channels, size, size), dtype=np.uint8)
    w = rng.integers(-128, 128, (out_channels, channels, 3, 3), dtype=np.int8)
    x[..., :3, :] = 255  # the top output rows sum the extremes, -16,744,320 each
    w[:block] = -128
    packed = w.reshape(out_channels // block, block, channels, 3, 3).transpose(0, 2, 3, 4, 1)
    got = tvm.runtime.tensor(np.zeros((1, out_channels, size - 2, size - 2), np.int32))
    run(tvm.runtime.tensor(x), tvm.runtime.tensor(np.ascontiguousarray(packed)), got)
    windows = np.lib.stride_tricks.sliding_window_view(x[0].astype(np.int64), (3, 3), (1, 2))
    want = np.einsum("cyxij,ocij->oyx", windows, w.astype(np.int64))[None]
    assert want[0, 0, 0, 0] == -16_744_320
    np.testing.assert_array_equal(got.numpy(), want)


def test_the_reference_computes_full_range_int8_weights_exactly_on_avx2_too():
    """The check's ONNX Runtime reference on a QDQ conv whose u8 x s8 pair sums pass int16
    (255 x 127 x 2 = 64770), against numpy's integer sums. Fused into QLinearConv, ONNX
    Runtime's AVX2 kernel (hosts without VNNI: Zen 1-3, pre-Ice Lake Intel) saturates them:
    on Zen 1 the channels of positive sums came out 10.3 instead of 20.3. VNNI hosts are
    exact either way, so only an AVX2-only host can catch the fused reference."""
    from edgec import reference

    channels, out_channels = 16, 8
    rng = np.random.default_rng(11)
    w = rng.choice(np.array([-127, 127], np.int8), (out_channels, channels, 1, 1))
    w[0] = 127  # channel 0 sums 16 x 255 x 127 = 518,160
    x_scale, w_scale, y_scale = 1 / 255, 0.01, 0.1
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"]),
    ]
    inits = [numpy_helper.from_array(np.float32(v), n) for n, v in
             (("xs", x_scale), ("ws", w_scale), ("ys", y_scale))]
    inits += [numpy_helper.from_array(np.uint8(0), n) for n in ("xz", "yz")]
    inits.append(numpy_helper.from_array(w, "wq"))
    graph = helper.make_graph(
        nodes, "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, out_channels, 4, 4])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)

    x = np.ones((1, channels, 4, 4), np.float32)  # quantizes to 255 everywhere
    got = reference.outputs(model, {"x": x})["out"]
    sums = np.einsum("c,oc->o", np.full(channels, 255, np.int64), w[:, :, 0, 0].astype(np.int64))
    levels = np.clip(np.round(sums * x_scale * w_scale / y_scale), 0, 255)
    want = np.broadcast_to((levels * y_scale)[None, :, None, None], got.shape)
    assert sums[0] == 518_160 and levels[0] == 203
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _precision_table(text: str) -> tuple[dict[str, float], set[str]]:
    """The rows `--quantize auto` printed: ({precision: ms}, {rejected precisions})."""
    rows = re.findall(r"^\s+(fp32|fp16|int8)\s+([\d.]+)\s+[\d.]+x$", text, re.MULTILINE)
    rejected = re.findall(r"^\s+(fp32|fp16|int8)\s+rejected: ", text, re.MULTILINE)
    return {name: float(ms) for name, ms in rows}, set(rejected)


@pytest.mark.parametrize(("target", "how", "int8_mac"), [
    ("x86_64", "measured on", "vpmaddubsw"),  # timed here, interleaved rounds
    ("rpi5", "estimated for cortex-a76", "sdot"),  # priced on the emulated board
])
def test_quantize_auto_keeps_the_fastest_precision_that_passes_and_stores_it(
        small_net, tmp_path, target, how, int8_mac):
    samples = np.random.default_rng(6).uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", samples)
    env = {"EDGEC_TUNING_LOGS": str(tmp_path / "logs")}
    out = tmp_path / "auto.so"
    args = ("compile", str(small_net), "-t", target, "-o", str(out), "--quantize", "auto",
            "--calib", str(tmp_path / "calib.npy"))
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    said = first.stdout + first.stderr
    table, rejected = _precision_table(first.stdout)
    assert "fp32" in table and set(table) | rejected == {"fp32", "fp16", "int8"}, said
    chosen = min(table, key=table.get)
    assert f"quantize auto: {chosen} ({how}" in said
    not_faster = "int8" in table and table["int8"] >= table["fp32"]
    assert ("WARNING: INT8 is not faster than FP32" in first.stdout) == not_faster, said
    # The library written is the chosen precision: its code multiplies in 8-bit integers
    # exactly when INT8 won (ELF disassembly, not edgec's metadata) ...
    objdump = "objdump" if target == "x86_64" else "aarch64-linux-gnu-objdump"
    code = subprocess.run([objdump, "-d", str(out)], capture_output=True, text=True,
                          check=True).stdout
    assert (int8_mac in code) == (chosen == "int8"), (chosen, int8_mac)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".edgec-")] == []
    if target == "x86_64":  # ... and stays close to FP32 in ONNX Runtime on the float model
        session = ort.InferenceSession(str(small_net), providers=["CPUExecutionProvider"])
        compiled = runtime.load(out)
        for x in samples[:4]:
            assert cosine(compiled.run({"input": x})["logits"],
                          session.run(None, {"input": x})[0]) >= 0.99
    # The decision is stored beside the tuning logs and reused, by compile and by tune.
    again = run_cli(*args, "--no-check", env=env)
    assert again.returncode == 0, again.stderr
    assert "stored decision" in again.stdout and "compiling fp16" not in again.stderr
    assert _precision_table(again.stdout) == (table, rejected)
    fresh = run_cli("tune", str(small_net), "-t", target, "--quantize", "auto", "--calib",
                    str(tmp_path / "calib.npy"), "--status",
                    env={"EDGEC_TUNING_LOGS": str(tmp_path / "other")})
    assert_clean_failure(fresh, "no precision was measured yet")


@pytest.mark.slow
def test_quantize_auto_times_the_precisions_on_the_board_it_is_given(small_net, tmp_path,
                                                                     emulated_board):
    """compile --quantize auto --rpc: the precisions that pass are uploaded to the (emulated)
    board and timed there (its server log shows each loaded); the decision names the board,
    and the library written runs there close to ONNX Runtime on the float model."""
    from conftest import board_log_mark, board_log_since

    samples = np.random.default_rng(7).uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", samples)
    out = tmp_path / "auto.so"
    board, mark = emulated_board, board_log_mark(emulated_board)
    result = run_cli("compile", str(small_net), "-t", "rpi5", "-o", str(out), "--quantize",
                     "auto", "--calib", str(tmp_path / "calib.npy"), "--rpc",
                     f"127.0.0.1:{board.port}",
                     env={"EDGEC_TUNING_LOGS": str(tmp_path / "logs")}, timeout=900)
    assert result.returncode == 0, result.stderr
    on_board = runtime.load_remote(board.connect(session_timeout=300), out)
    got = [on_board.run({"input": x})["logits"] for x in samples[:2]]
    del on_board
    server_log = board_log_since(board, mark)
    table, _rejected = _precision_table(result.stdout)
    assert "fp32" in table, result.stdout
    chosen = min(table, key=table.get)
    assert f"quantize auto: {chosen} (measured on rpi5 board (cortex-a76)" in result.stdout
    assert len(re.findall(r"load_module \S+/edgec_\w+\.so", server_log)) >= len(table) + 1
    session = ort.InferenceSession(str(small_net), providers=["CPUExecutionProvider"])
    for x, logits in zip(samples[:2], got, strict=True):
        assert cosine(logits, session.run(None, {"input": x})[0]) >= 0.99


def test_int8_detector_passes_the_check_within_its_own_quantization_error(photo_folder,
                                                                          tmp_path):
    """SSD-Lite (66 convs, 10 residual adds) in INT8: a one-step rounding difference from
    ONNX Runtime grows along the box head (once 0.61 apart on boxes up to 9.7, where the QDQ
    model itself is 3.7 from FP32), so the check allows a quarter of the QDQ model's own
    error against FP32. The outputs are compared here with ONNX Runtime running the float
    model: INT8 stays as close to it as ORT's own INT8 run."""
    from skimage import color, io, transform

    photos = []  # as bench/compare.py prepares them: centre-cropped, resized with filtering
    for name in SKIMAGE_PHOTOS[:6] + ("color.png", "camera.png"):
        image = io.imread(photo_folder / name)
        image = color.gray2rgb(image) if image.ndim == 2 else image[..., :3]
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        image = transform.resize(image[top:top + side, left:left + side], (320, 320),
                                 anti_aliasing=True)
        photos.append(((image - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None])
    calib = tmp_path / "photos.npy"
    np.save(calib, np.concatenate(photos))
    result = pipeline.compile_model(pipeline.CompileOptions(
        model="zoo:ssd_lite", output=tmp_path / "ssd.so", time_fp32=False,
        quantization=QuantizeOptions("int8", calib=str(calib))))
    assert result.verify is not None and result.verify.ok, result.verify.summary()
    assert "own error against the float model" in result.verify.note
    assert all(o.cosine >= QDQ_MIN_COSINE for o in result.verify.outputs)
    model = runtime.load(tmp_path / "ssd.so")
    fp32 = zoo.build("ssd_lite")
    session = ort.InferenceSession(fp32.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for x in photo_inputs(photo_folder, 320)[:3]:
        got, want = model.run({"input": x}), session.run(None, {"input": x})
        for name, expected in zip(("boxes", "scores"), want, strict=True):
            assert cosine(np.asarray(got[name]), expected) >= 0.9, name

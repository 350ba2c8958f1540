"""Every zoo model compiles for x86_64 in every layout and matches ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest

from edgec import package, pipeline, runtime, targets, zoo
from edgec.errors import BuildError

# Models with symbolic H/W need their shape fixed, as a user would with --input-shape.
SHAPES = {"pp_lcnet": {"input": (1, 3, 224, 224)}, "unet": {"input": (1, 3, 128, 128)}}
# Packed layouts need transforms only at the graph's borders (input stem, flatten), plus where
# a model permutes channels itself: channel shuffles, detector heads, transposed convs.
# ShuffleNetV2 packs by 4 (58/116 channels): its channel shuffles need transforms around
# them, but it still runs 2.6x faster than at block 8 with half its convs left in NCHW.
MAX_TRANSFORMS = {"shufflenet_v2": 32, "ssd_lite": 8, "unet": 12}


def onnxruntime_reference(name: str, inputs: dict) -> dict:
    model = zoo.build(name)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


# Every model in the packed layout compile defaults to; the plain layouts on the models whose
# ops set them apart (SE and hard-swish, channel shuffle, Resize and ConvTranspose, detector
# heads, a flatten chain). Plain convolutions in NCHW and NHWC are covered by
# test_layouts.py's random graphs; ResNet-50 in them cost CI minutes and proved nothing new.
DISTINCT_OPS = ("mobilenet_v3_small", "shufflenet_v2", "unet", "ssd_lite", "pp_lcnet")
MATRIX = [(name, "NCHWc") for name in zoo.names()] + [
    (name, layout) for name in DISTINCT_OPS for layout in ("NCHW", "NHWC")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "layout"), MATRIX)
def test_zoo_model_compiles_for_x86_and_matches_onnxruntime(name, layout, tmp_path):
    out = tmp_path / f"{name}.so"
    # The built-in check runs once per model; the test's own comparison covers every layout.
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=f"zoo:{name}", output=out, target="x86_64", layout=layout,
        input_shapes=SHAPES.get(name, {}), check=layout == "NCHWc"))
    assert package.elf_arch(out) == "x86_64"
    compiled = runtime.load(out)
    rng = np.random.default_rng(11)
    inputs = {s["name"]: rng.uniform(-1, 1, s["shape"]).astype(np.float32)
              for s in compiled.info.inputs}
    got = compiled.run(inputs)
    want = onnxruntime_reference(name, inputs)
    assert set(got) == set(want)
    for key, ref in want.items():
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got[key], ref, atol=1e-3 * scale, rtol=0, err_msg=key)
    if layout != "NCHWc":  # plain layouts: every conv on an edgec kernel, none on TOPI's
        generic = result.tuning.get("generic_names", [])
        assert not [n for n in generic if "conv2d" in n and "transpose" not in n], generic
    if layout == "NCHWc":
        assert compiled.info.layout == ("NCHW4c" if name == "shufflenet_v2" else "NCHW8c")
        assert result.layout_transforms <= MAX_TRANSFORMS.get(name, 3), result.layout_transforms
    if layout == "NHWC" and name == "shufflenet_v2":
        # Its channel shuffles, concats and splits run in NHWC too (edgec.layout.nhwc_regions):
        # only the input's transpose is left (35 before, ~15% of its time).
        assert result.layout_transforms <= 1, result.layout_transforms


@pytest.mark.parametrize(("name", "target", "layout"), [
    ("resnet18", "x86_64-avx512", "NCHW16c"),  # 64..512 channels: one AVX-512 register
    ("mobilenet_v2", "x86_64-avx512", "NCHW8c"),  # 24-channel layers: 16 does not divide
    ("mobilenet_v2", "rpi4", "NCHW4c"),  # NEON: 4 floats per register
])
def test_packed_block_is_the_widest_that_divides_the_model_channels(name, target, layout):
    model = pipeline.prepare(f"zoo:{name}", targets.load(target), None, "NCHWc")
    assert model.layout == layout


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512", "rpi4"])
def test_the_default_layout_is_nhwc_where_packing_leaves_convs_behind(target):
    """ShuffleNetV2's 58-channel branches pack in no block wider than 2, its 116-channel
    ones only by 4: packed, it ran 3.80 ms against NHWC's 1.9 (AVX-512, side by side). Its
    FP16 build stays packed, where the float16 kernels are; its INT8 build goes NHWC on x86
    too (every conv sums exactly in float there, at full vector width: 2.99 against 4.42 ms
    packed, AVX-512), packed on NEON, where NCHW4c fills a register."""
    from tvm import relax

    from edgec.layout.blocks import block_of
    from edgec.layout.convert import resolve

    model = pipeline.prepare("zoo:shufflenet_v2", targets.load(target), None, "default")
    assert model.layout == "NHWC"
    ir = relax.transform.DecomposeOpsForInference()(
        pipeline.prepare("zoo:shufflenet_v2", targets.load(target), None, "NCHW").ir)
    assert block_of(resolve("default", targets.load(target), ir, quantized="fp16")), target
    int8 = resolve("default", targets.load(target), ir, quantized="int8")
    assert int8 == ("NCHW4c" if target == "rpi4" else "NHWC"), (target, int8)


@pytest.mark.parametrize("target", ["x86_64-avx512", "x86_64-avx512-vnni"])
def test_avx512_targets_default_to_nhwc_for_float_and_int8_models_and_pack_fp16(target):
    """On AVX-512, NHWC measured 0.56-0.99x of the packed layout on all ten zoo models
    (bench/layouts.py), so the AVX-512 targets default to it; INT8 goes NHWC on every x86
    target (0.41-1.01x of packed INT8, its dense convs on the dot product there); FP16 and
    NEON INT8 keep the packed layout, where their kernels are."""
    from tvm import relax

    from edgec.layout.convert import resolve

    model = pipeline.prepare("zoo:resnet18", targets.load(target), None, "default")
    assert model.layout == "NHWC"
    ir = relax.transform.DecomposeOpsForInference()(
        pipeline.prepare("zoo:resnet18", targets.load(target), None, "NCHW").ir)
    assert resolve("default", targets.load(target), ir, quantized="int8") == "NHWC"
    assert resolve("default", targets.load(target), ir, quantized="fp16") == "NCHW16c"
    assert resolve("default", targets.load("x86_64"), ir) == "NCHW8c"  # AVX2: packed
    assert resolve("default", targets.load("x86_64"), ir, quantized="int8") == "NHWC"
    assert resolve("default", targets.load("rpi5"), ir, quantized="int8") == "NCHW4c"


def test_a_library_recompiled_to_the_same_path_runs_its_new_code_in_the_same_process(tmp_path):
    """dlopen caches by path: without care the second load would run the first model."""
    out = tmp_path / "model.so"
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    for seed in (1, 2):
        source = tmp_path / f"seed{seed}.onnx"
        zoo.save("squeezenet1_1", source, seed=seed)
        pipeline.compile_model(pipeline.CompileOptions(model=str(source), output=out,
                                                       check=False))
        got = next(iter(runtime.load(out).run({"input": x}).values()))
        session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        want = session.run(None, {"input": x})[0]
        np.testing.assert_allclose(got, want, atol=1e-3 * max(1.0, float(np.abs(want).max())))


def test_compile_refuses_to_write_an_artifact_that_differs_from_onnxruntime(tmp_path,
                                                                            monkeypatch):
    """Compile the graph of other weights than the reference: the built-in check must refuse."""
    import dataclasses

    from edgec import frontend

    other_weights = tmp_path / "seed7.onnx"
    zoo.save("squeezenet1_1", other_weights, seed=7)
    real_import = frontend.import_model

    def swapped_import(source, input_shapes=None):
        model = real_import(source, input_shapes)
        return dataclasses.replace(model, ir=real_import(str(other_weights)).ir)

    monkeypatch.setattr(frontend, "import_model", swapped_import)
    out = tmp_path / "out" / "bad.so"
    with pytest.raises(BuildError, match="differs from ONNX Runtime on output logits"):
        pipeline.compile_model(pipeline.CompileOptions(model="zoo:squeezenet1_1", output=out))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.parametrize(("name", "target", "chain"), [
    ("resnet18", "x86_64-avx512", "conv, bias, ReLU, max pool"),
    ("mobilenet_v3_small", "x86_64", "conv, bias, hard-swish"),
])
def test_image_stems_write_the_packed_layout_themselves(name, target, chain):
    """The 3-channel stem and its epilogue run packed: no NCHW copy of the largest
    activation and no transform after it, only the one before the classifier's flatten."""
    from tvm import relax

    from edgec.layout import count_layout_transforms

    model = pipeline.prepare(f"zoo:{name}", targets.load(target), None, "NCHWc")
    stems = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            if expr.attrs.data_layout == "NCHW":
                stems.append(expr.attrs.out_layout)

    relax.analysis.post_order_visit(model.ir["main"], visit)
    assert stems == [model.layout], chain
    assert count_layout_transforms(model.ir) == 1


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
def test_winograd_convs_match_onnxruntime_on_partial_tiles(target, tmp_path):
    """3x3 stride-1 convs run as Winograd F(4x4, 3x3): batch 2, uneven padding and output
    sizes that 4x4 tiles do not divide (18x14), then a 9x7 one as F(2x2, 3x3) on AVX2 and
    AVX-512, whose 2x2 tiles do not divide it either."""
    from onnx import TensorProto, helper
    from tvm import tirx

    from conftest import save_model, weight_maker
    from edgec import build

    if target.endswith("avx512") and "avx512f" not in targets.cpu_flags():
        pytest.skip(f"this CPU cannot run {target} code (no AVX-512)")
    rng = np.random.default_rng(5)

    weight = weight_maker(rng, 0.1)

    source = save_model(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], pads=[1, 0, 2, 1]),
         helper.make_node("Relu", ["y1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["y2"], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["y2", "r1"], ["s"]),
         helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Conv", ["p", "w3"], ["out"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32, 17, 15])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 32, 9, 7])],
        [weight("w1", (32, 32, 3, 3)), weight("b1", (32,)), weight("w2", (32, 32, 3, 3)),
         weight("w3", (32, 32, 3, 3))],
        tmp_path / "winograd.onnx")
    model = pipeline.prepare(str(source), targets.load(target), None, "default")
    lowered = build.lower(model, targets.load(target))
    alphas = sorted(_winograd_alpha(f)
                    for g, f in lowered.functions.items()
                    if isinstance(f, tirx.PrimFunc) and "winograd" in g.name_hint)
    # Input tile sides: F(4x4, 3x3) twice, F(2x2, 3x3) for the 9x7 conv.
    assert alphas == [4, 6, 6], alphas

    out = tmp_path / "winograd.so"
    pipeline.compile_model(pipeline.CompileOptions(model=str(source), output=out,
                                                   target=target, check=False))
    x = rng.uniform(-1, 1, (2, 32, 17, 15)).astype(np.float32)
    got = runtime.load(out).run({"x": x})["out"]
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()), rtol=0)


def test_avx512_nhwc_3x3_convs_of_few_input_channels_run_direct(tmp_path):
    """With AVX-512, an NHWC 3x3 conv of 16 input channels (SqueezeNet's 55x55 expand convs)
    runs the direct tile, one of 32 Winograd; AVX2 keeps Winograd for both. The build
    matches ONNX Runtime."""
    import re

    from onnx import TensorProto, helper
    from tvm import tirx

    from conftest import save_model, weight_maker
    from edgec import build

    rng = np.random.default_rng(7)

    weight = weight_maker(rng, 0.1)

    source = save_model(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["out"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 20, 20])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 32, 20, 20])],
        [weight("w1", (32, 16, 3, 3)), weight("b1", (32,)), weight("w2", (32, 32, 3, 3))],
        tmp_path / "few_channels.onnx")

    def winograd_inputs(target):
        model = pipeline.prepare(str(source), targets.load(target), None, "NHWC")
        lowered = build.lower(model, targets.load(target))
        # the channels of each Winograd function's NHWC input (its first buffer)
        return sorted(int(re.search(r"T\.Buffer\(\(.*?T\.int64\((\d+)\)\)", f.script()).group(1))
                      for g, f in lowered.functions.items()
                      if isinstance(f, tirx.PrimFunc) and "winograd" in g.name_hint)

    assert winograd_inputs("x86_64-avx512") == [32]
    assert winograd_inputs("x86_64") == [16, 32]
    if "avx512f" not in targets.cpu_flags():
        pytest.skip("this CPU cannot run x86_64-avx512 code (no AVX-512): lowering checked only")
    out = tmp_path / "few_channels.so"
    pipeline.compile_model(pipeline.CompileOptions(model=str(source), output=out,
                                                   target="x86_64-avx512", layout="NHWC",
                                                   check=False))
    x = rng.uniform(-1, 1, (1, 16, 20, 20)).astype(np.float32)
    got = runtime.load(out).run({"x": x})["out"]
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()), rtol=0)


def _winograd_alpha(func) -> int:
    """The input tile side of a lowered Winograd conv: the first extent of its transformed
    input buffer, (alpha, alpha, ...)."""
    import re

    found = re.search(r"winograd_input = T\.\w*alloc_buffer\(\(T\.int64\((\d+)\)",
                      func.script())
    assert found, func.script()[:2000]
    return int(found.group(1))


def test_a_native_abort_inside_the_noise_filter_still_prints_its_message():
    """TVM's export and load run with fd 2 filtered (edgec.tvm_compat.log_filters drops the
    "Scope Saving/Loaded" lines). When LLVM aborts the process inside, as "LLVM ERROR: Cannot
    select" did while AMX code was being written, its message must still reach stderr; the
    filter once kept it in a file that died with the process."""
    import subprocess
    import sys

    script = (
        "import os\n"
        "from edgec.tvm_compat.log_filters import quiet_scope_warnings\n"
        "with quiet_scope_warnings():\n"
        "    os.write(2, b'[12:00:00] /tvm/executable.cc:91: Warning: Scope Saving: c0\\n')\n"
        "    os.write(2, b'LLVM ERROR: Cannot select: intrinsic %llvm.x86.tdpbusd\\n')\n"
        "    os.abort()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode != 0
    assert b"LLVM ERROR: Cannot select: intrinsic %llvm.x86.tdpbusd\n" in result.stderr
    assert b"Scope Saving" not in result.stderr, result.stderr

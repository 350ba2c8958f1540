"""Import: shapes fixed, exported-model patterns simplified, frontend bugs routed around.

Every numeric check compares edgec's compiled output with ONNX Runtime on the original model.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import save_model
from edgec import check, frontend, pipeline, reference, runtime
from edgec.errors import ConfigError, ModelImportError


def compile_and_compare(model_path: Path, tmp_path: Path, layout: str = "NCHW", shapes=None):
    out = tmp_path / "m.so"
    pipeline.compile_model(pipeline.CompileOptions(
        model=str(model_path), output=out, layout=layout, check=False,
        input_shapes=shapes or {}))
    compiled = runtime.load(out)
    inputs = check.random_inputs(compiled.info.inputs, seed=3)
    expected = reference.onnxruntime_outputs(str(model_path), inputs)
    report = check.compare(compiled.run(inputs), expected)
    assert report.ok, report.summary()
    return compiled


def test_dynamic_model_without_shapes_lists_inputs_and_dims(dynamic_conv_model):
    with pytest.raises(ModelImportError, match=r"image: \[batch, 3, h, w\].*--input-shape"):
        frontend.import_model(str(dynamic_conv_model))


def test_input_shape_fixes_dynamic_dims(dynamic_conv_model, tmp_path):
    compiled = compile_and_compare(dynamic_conv_model, tmp_path, shapes={"image": (2, 3, 20, 24)})
    assert compiled.info.inputs[0]["shape"] == [2, 3, 20, 24]
    assert compiled.info.outputs[0]["shape"] == [2, 8, 20, 24]


def test_unknown_input_shape_name_suggests_the_real_one(dynamic_conv_model):
    with pytest.raises(ConfigError, match=r'"imag".*did you mean "image"'):
        frontend.import_model(str(dynamic_conv_model), {"imag": (1, 3, 8, 8)})


def test_input_shape_of_wrong_rank_is_refused(dynamic_conv_model):
    with pytest.raises(ConfigError, match="rank 3"):
        frontend.import_model(str(dynamic_conv_model), {"image": (3, 8, 8)})


@pytest.mark.parametrize("text", ["image", "image:", "image:1,a", ":1,2", "image:0,3"])
def test_malformed_input_shape_is_refused(text):
    with pytest.raises(ConfigError):
        frontend.parse_input_shape(text)


def test_input_shape_name_may_contain_colons():
    assert frontend.parse_input_shape("x:0:1,3,8,8") == ("x:0", (1, 3, 8, 8))


def test_shape_concat_reshape_chain_of_exported_models_imports(tmp_path):
    """pp_lcnet flattens through Shape→Gather→Concat→Reshape with symbolic H/W."""
    path = tmp_path / "lcnet.onnx"
    from edgec import zoo

    zoo.save("pp_lcnet", path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Shape", "Concat", "Reshape"} <= ops
    model = frontend.import_model(str(path), {"input": (1, 3, 128, 128)})
    assert "simplified" in model.applied
    assert model.outputs[0].shape == (1, 1000)


def test_batchnorm_is_folded_into_conv():
    model = frontend.import_model("zoo:resnet18")
    text = model.ir.script(show_meta=False)
    assert "batch_norm" not in text
    assert text.count("R.nn.conv2d(") == 20


def test_multi_parameter_prelu_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.05, 0.5, (8, 1, 1)).astype(np.float32), "s")]
    path = save_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("PRelu", ["c", "s"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits, tmp_path / "prelu.onnx")
    for layout in ("NCHW", "NCHWc", "NHWC"):
        compile_and_compare(path, tmp_path, layout)
    assert any(step.startswith("fix:prelu") for step in frontend.import_model(str(path)).applied)


def test_expand_to_a_lower_rank_shape_from_shape_op_matches_onnxruntime(tmp_path):
    """Expand(x[1,3,1,4], Shape(t[5,1])) broadcasts to [1,3,5,4]; TVM's frontend crashes on
    this Shape-fed, lower-rank Expand unless the shape is folded and made explicit first."""
    path = save_model(
        [helper.make_node("Shape", ["t"], ["s"]), helper.make_node("Expand", ["x", "s"], ["e"]),
         helper.make_node("Add", ["e", "e"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 4]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [5, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 4])],
        [], tmp_path / "expand.onnx")
    compiled = compile_and_compare(path, tmp_path)
    assert compiled.info.outputs[0]["shape"] == [1, 3, 5, 4]


def test_unsupported_ops_are_listed_by_name_and_count(tmp_path):
    path = save_model(
        [helper.make_node("Relu", ["x"], ["a"]),
         helper.make_node("Det", ["a"], ["b"]), helper.make_node("Det", ["a"], ["c"]),
         helper.make_node("Add", ["b", "c"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [], tmp_path / "det.onnx")
    with pytest.raises(ModelImportError, match=r"cannot convert these ops: Det \(2\)"):
        frontend.import_model(str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelImportError, match="nothing.onnx does not exist"):
        frontend.import_model(str(tmp_path / "nothing.onnx"))


def test_file_that_is_not_onnx_is_refused(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n" * 20)
    with pytest.raises(ModelImportError, match="notes.onnx"):
        frontend.import_model(str(path))


def test_truncated_onnx_file_is_refused(tmp_path):
    from edgec import zoo

    data = zoo.build("squeezenet1_1").SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelImportError, match="cut.onnx"):
        frontend.import_model(str(path))


def _opset6_classifier(path: Path) -> Path:
    """Conv, BatchNormalization-6, Relu, AveragePool-1, Flatten, Gemm-6: the classic ONNX
    model zoo era, which ONNX Runtime 1.31 no longer runs as it is."""
    rng = np.random.default_rng(6)

    def const(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    inits = [const("w", 8, 3, 3, 3), const("scale", 8), const("bias", 8), const("mean", 8),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "var"),
             const("fc", 10, 8 * 4 * 4), const("fcb", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"],
                         is_test=1, epsilon=1e-5),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1, broadcast=1),
    ]
    # IR version 3 lists every initializer as a graph input too, as exporters then did.
    weights = [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims))
               for i in inits]
    graph = helper.make_graph(
        nodes, "opset6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]), *weights],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def test_an_old_opset_model_is_converted_up_compiled_and_checked(tmp_path):
    import onnxruntime as ort
    from onnx import version_converter

    path = _opset6_classifier(tmp_path / "old.onnx")
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|not implemented|Could not find"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = tmp_path / "old.so"
    result = pipeline.compile_model(pipeline.CompileOptions(model=str(path), output=out))
    assert "opset:6->13" in result.info.applied and result.verify.ok
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    converted = version_converter.convert_version(onnx.load(str(path)), 13)
    want = reference.onnxruntime_outputs(converted, {"x": x})["logits"]
    got = runtime.load(out).run({"x": x})["logits"]
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))

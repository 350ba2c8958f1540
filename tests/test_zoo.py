"""Tests of the model zoo: every model is valid ONNX, runs in onnxruntime, and is the real net."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgec import zoo
from edgec.errors import ConfigError
from edgec.zoo import lcnet, shufflenet, unet
from edgec.zoo.layers import GraphBuilder

ALL = zoo.names()
SYMBOLIC_HW = ["pp_lcnet", "unet"]
CLASSIFIERS = [n for n in ALL if n not in ("unet", "ssd_lite")]

# Learnable parameters (BN running stats excluded) as torchvision / Keras report them:
# matching to the unit pins every layer's channel count, kernel size, bias and BN.
PUBLISHED_PARAMS = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_small": 2_542_856,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "shufflenet_v2": 2_278_604,
    "squeezenet1_1": 1_235_496,
}


@functools.cache
def built(name: str) -> onnx.ModelProto:
    return zoo.build(name)


def run(model: onnx.ModelProto, x: tuple[int, ...] | np.ndarray) -> dict[str, np.ndarray]:
    """Run model on x, or on seeded noise when x is a shape."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    if isinstance(x, tuple):
        x = np.random.default_rng(1).standard_normal(x, dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x}), strict=True))


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def ops(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


def learnable_params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and t.dims
               and not t.name.endswith((".mean", ".var")))


def test_names_are_sorted_and_cover_the_whole_zoo():
    assert zoo.names() == sorted([
        "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "resnet50",
        "squeezenet1_1", "shufflenet_v2", "pp_lcnet", "unet", "ssd_lite"])


@pytest.mark.parametrize("name", ALL)
def test_every_model_has_a_one_line_description(name):
    text = zoo.describe(name)
    assert text and "\n" not in text


@pytest.mark.parametrize("name", ALL)
def test_model_passes_the_full_onnx_checker_at_opset_17_ir_8(name):
    model = built(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_runs_in_onnxruntime_with_sane_logits(name):
    model = built(name)
    size = 224
    assert dims(model.graph.input[0])[:2] == [1, 3]
    out = run(model, (1, 3, size, size))
    assert list(out) == ["logits"]
    logits = out["logits"]
    assert logits.shape == (1, 1000)
    assert np.isfinite(logits).all()
    # Random weights, but calibrated BN: activations neither explode nor vanish.
    assert 0.1 < logits.std() < 100


def test_unet_outputs_a_four_class_map_at_input_resolution():
    out = run(built("unet"), (1, 3, 64, 96))
    assert list(out) == ["logits"]
    assert out["logits"].shape == (1, 4, 64, 96)
    assert np.isfinite(out["logits"]).all() and 0.1 < out["logits"].std() < 100


def test_ssd_lite_outputs_boxes_and_softmax_scores_per_anchor():
    model = built("ssd_lite")
    assert dims(model.graph.input[0]) == [1, 3, 320, 320]
    assert [dims(o) for o in model.graph.output] == [[1, 3150, 4], [1, 3150, 21]]
    out = run(model, (1, 3, 320, 320))
    assert list(out) == ["boxes", "scores"]
    assert out["boxes"].shape == (1, 3150, 4) and out["scores"].shape == (1, 3150, 21)
    assert np.isfinite(out["boxes"]).all() and 0.1 < out["boxes"].std() < 100
    np.testing.assert_allclose(out["scores"].sum(axis=-1), 1.0, rtol=1e-5)
    assert producers(model)["scores"].op_type == "Softmax"


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_the_published_architecture(name):
    assert learnable_params(built(name)) == PUBLISHED_PARAMS[name]


def test_pp_lcnet_has_the_paper_parameter_count():
    assert learnable_params(built("pp_lcnet")) == pytest.approx(2.95e6, rel=0.01)


@pytest.mark.parametrize("name", [n for n in ALL if n != "squeezenet1_1"])
def test_batchnorm_nodes_stay_unfolded_after_convs(name):
    model = built(name)
    made_by = producers(model)
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) >= 10
    assert all(made_by[bn.input[0]].op_type == "Conv" for bn in bns)


def test_squeezenet_has_biased_convs_and_no_batchnorm_like_the_original():
    model = built("squeezenet1_1")
    assert "BatchNormalization" not in ops(model)
    assert all(len(n.input) == 3 for n in model.graph.node if n.op_type == "Conv")


@pytest.mark.parametrize("name", SYMBOLIC_HW)
def test_model_has_symbolic_height_and_width(name):
    model = built(name)
    assert dims(model.graph.input[0]) == [1, 3, "height", "width"]
    for h, w in [(96, 128), (160, 64)]:
        assert np.isfinite(run(model, (1, 3, h, w))["logits"]).all()


@pytest.mark.parametrize("name", SYMBOLIC_HW)
def test_image_size_makes_symbolic_models_static(name):
    assert dims(zoo.build(name, image_size=64).graph.input[0]) == [1, 3, 64, 64]


def test_pp_lcnet_flattens_through_a_shape_gather_unsqueeze_concat_reshape_chain():
    model = built("pp_lcnet")
    made_by = producers(model)
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    assert reshapes
    node = made_by[reshapes[0].input[1]]
    for expected in ["Concat", "Unsqueeze", "Gather", "Shape"]:
        assert node.op_type == expected
        if expected != "Shape":
            node = made_by[node.input[0]]


def test_pp_lcnet_uses_hardswish_se_and_5x5_depthwise():
    model = built("pp_lcnet")
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Mul"} <= ops(model)
    kernels = {tuple(a.ints) for n in model.graph.node if n.op_type == "Conv"
               for a in n.attribute if a.name == "kernel_shape"}
    assert {(3, 3), (5, 5)} <= kernels


def test_mobilenet_v3_small_has_hardswish_and_se_blocks():
    model = built("mobilenet_v3_small")
    made_by = producers(model)
    assert "HardSwish" in ops(model)
    se_chains = 0
    for mul in (n for n in model.graph.node if n.op_type == "Mul"):
        chain, node = [], made_by[mul.input[1]]
        while node.op_type != "GlobalAveragePool":
            chain.append(node.op_type)
            node = made_by[node.input[0]]
        se_chains += chain == ["HardSigmoid", "Conv", "Relu", "Conv"]
    assert se_chains == 9  # every bneck but the two ReLU expansion blocks


def test_shufflenet_splits_and_shuffles_with_reshape_transpose_reshape():
    model = built("shufflenet_v2")
    made_by = producers(model)
    assert "Split" in ops(model)
    transposes = [n for n in model.graph.node if n.op_type == "Transpose"]
    assert len(transposes) == 16  # one shuffle per unit
    for t in transposes:
        assert made_by[t.input[0]].op_type == "Reshape"


def test_unet_upsamples_with_resize_and_convtranspose_and_concatenates_skips():
    model = built("unet")
    assert {"MaxPool", "Resize", "ConvTranspose", "Concat"} <= ops(model)
    assert sum(n.op_type == "Concat" for n in model.graph.node) == 3


def test_unknown_zoo_name_suggests_nearest():
    with pytest.raises(ConfigError) as err:
        zoo.build("resnet34")
    message = str(err.value)
    assert '"resnet34"' in message
    assert 'did you mean "resnet50"' in message
    assert all(name in message for name in ALL)


def test_describe_of_unknown_name_raises_config_error():
    with pytest.raises(ConfigError, match='did you mean "mobilenet_v2"'):
        zoo.describe("mobilenetv2")


@pytest.mark.parametrize("options", [{"batch": 0}, {"batch": 1.5}, {"image_size": 100},
                                     {"image_size": 8}])
def test_bad_batch_or_image_size_raise_config_error(options):
    with pytest.raises(ConfigError):
        zoo.build("unet", **options)


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def test_same_seed_gives_identical_weights_and_other_seeds_differ():
    first, again = (weights(zoo.build("mobilenet_v3_small", image_size=64, seed=7))
                     for _ in range(2))
    other = weights(zoo.build("mobilenet_v3_small", image_size=64, seed=8))
    assert first.keys() == again.keys() == other.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    conv_weights = [k for k in first if k.startswith("conv") and k.endswith(".weight")]
    assert not any(np.array_equal(first[k], other[k]) for k in conv_weights)


def test_batch_none_makes_the_batch_dimension_symbolic():
    model = zoo.build("shufflenet_v2", batch=None, image_size=64)
    assert dims(model.graph.input[0]) == ["batch", 3, 64, 64]
    assert dims(model.graph.output[0]) == ["batch", 1000]
    assert run(model, (3, 3, 64, 64))["logits"].shape == (3, 1000)


def test_image_size_overrides_height_and_width():
    model = zoo.build("mobilenet_v2", batch=2, image_size=96)
    assert dims(model.graph.input[0]) == [2, 3, 96, 96]
    assert run(model, (2, 3, 96, 96))["logits"].shape == (2, 1000)


def test_save_writes_a_loadable_onnx_file(tmp_path):
    path = zoo.save("squeezenet1_1", tmp_path / "squeeze.onnx", image_size=64)
    loaded = onnx.load(path)
    onnx.checker.check_model(loaded)
    assert dims(loaded.graph.input[0]) == [1, 3, 64, 64]


@pytest.mark.parametrize("family", [shufflenet.shufflenet_v2, lcnet.pp_lcnet, unet.unet])
def test_calibration_pass_computes_what_onnxruntime_computes(family):
    # BN running stats come from the builder's numpy pass; it must match the real graph.
    g = GraphBuilder(seed=0, batch=None, height=64, width=64)
    x = g.input()
    family(g, x)
    expected = g.output_values["logits"]
    actual = run(g.model("calibration"), x.val)["logits"]
    np.testing.assert_allclose(actual, expected, atol=1e-4 * np.abs(expected).max())

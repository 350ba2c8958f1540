"""Quantize stage: INT8 (QDQ ONNX from ONNX Runtime's calibrator, lowered to integer compute
in Relax by edgec.quant.integer) and FP16 (Relax mixed precision)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from edgec.errors import QuantizeError
from edgec.model import Model, TensorSpec
from edgec.quant import calibration
from edgec.quant.options import (
    METHODS,
    RANDOM,
    RANDOM_WARNING,
    SAMPLES,
    CalibOptions,
    choose,
)


def load_calibration(source: str, options: CalibOptions, specs: Sequence[TensorSpec]
                     ) -> list[dict[str, np.ndarray]]:
    """Calibration samples ({input name: array}) for a model's inputs.

    Args:
        source: a folder of images and/or .npy/.npz files, one such file, "samples"
            (scikit-image's stock photos) or "random".

    Raises:
        QuantizeError: empty folder, unreadable image, array of the wrong shape; the
            message names the file.
    """
    if source == RANDOM:
        warnings.warn(RANDOM_WARNING, stacklevel=2)
        return calibration.random_samples(specs, min(options.limit, 8))
    samples: list[dict[str, np.ndarray]] = []
    files = (calibration.sample_photos() if source == SAMPLES
             else calibration.list_files(Path(source)))
    for path in files:
        if path.suffix.lower() in calibration.TENSOR_SUFFIXES:
            samples += calibration.tensor_samples(path, specs)
        else:
            if len(specs) != 1:
                raise QuantizeError(f"{path}: images calibrate single-input models only; "
                                    "give an .npz with one array per input")
            array = calibration.image_sample(path, specs[0], options.layout, options.mean,
                                             options.std, options.channel_order == "BGR")
            samples.append({specs[0].name: array})
        if len(samples) >= options.limit:
            break
    return samples[:options.limit]


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """ORT's quantizer logs advice on the root logger and its histogram calibrators print
    progress to stdout; the library does not print."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def quantize_onnx(model: onnx.ModelProto, samples: Sequence[dict[str, np.ndarray]],
                  method: str = "minmax", per_channel: bool = True,
                  reduce_range: bool = False, activations: str = "uint8") -> onnx.ModelProto:
    """Calibrate and quantize a float ONNX model to QDQ form with ONNX Runtime.

    Activations become uint8 with a zero point, weights symmetric int8 (per output channel
    unless per_channel is False), biases int32: the u8 x s8 form integer SIMD works on.
    reduce_range keeps weights within 7 bits (|w| <= 64), which x86's vpmaddubsw needs to
    sum pairs without saturating (see edgec.codegen.intrinsics). activations="int8" quantizes
    activations to int8 (with a zero point) for AArch64's int8 x int8 sdot.

    Raises:
        QuantizeError: no samples, or ONNX Runtime failed to calibrate the model.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    choose("calibration method", method, METHODS)
    if not samples:
        raise QuantizeError("no calibration samples; give at least one input")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._samples, None)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="edgec-quantize-") as tmp, _quiet_onnxruntime():
        out = Path(tmp) / "qdq.onnx"
        source = onnx.ModelProto()
        source.CopyFrom(model)  # ORT may move weights to external data in the proto it gets
        _constants_as_initializers(source)
        try:
            quantize_static(
                source, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        except Exception as err:  # ORT raises plain exceptions from Python and C++
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise QuantizeError(f"ONNX Runtime could not quantize the model: {first}") from err
        return _float_outputs(onnx.load(str(out)))


def _constants_as_initializers(model: onnx.ModelProto) -> None:
    """Turn Constant nodes holding tensors into initializers, in place.

    ORT's quantizer treats only initializers as weights. A conv weight from a Constant node
    (PaddlePaddle exports keep every weight so, and onnxsim keeps them) is calibrated as an
    activation instead: per-tensor uint8 with a zero point, its bias left float. ORT's
    optimized run then rounds that float bias to the int32 grid while the QDQ graph's float
    semantics do not, and the two disagree by a step on ~1% of outputs (0.8% in the first
    depthwise conv of PaddleOCR's PP-OCRv4 detector, whose INT8 output then fell to cosine
    0.35 against ORT's). As initializers the weights get per-channel int8 scales and an
    int32 bias like any exported model's.
    """
    graph = model.graph
    kept = []
    for node in graph.node:
        if not (node.op_type == "Constant" and len(node.attribute) == 1
                and node.attribute[0].name == "value"):
            kept.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    if len(kept) < len(graph.node):
        # One rebuild, as graph_fixes does: remove() finds each node by deep comparison.
        del graph.node[:]
        graph.node.extend(kept)


def _float_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the QuantizeLinear -> DequantizeLinear pair in front of each graph output.

    ORT quantizes the logits too; 8-bit logits step by ~1/128 of their range, coarser than
    the gap between a classifier's top two scores on many inputs. Without the pair the last
    layer's int32 sum is only rescaled to float.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        dequantize = producers.get(output.name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        source = quantize.input[0]
        readers = [n for n in model.graph.node if source in n.input and n is not quantize]
        if readers or source not in producers:
            continue
        producer = producers[source]
        producer.output[list(producer.output).index(source)] = output.name
        model.graph.node.remove(quantize)
        model.graph.node.remove(dequantize)
    used = {name for node in model.graph.node for name in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)  # the dropped pair's scale and zero point
    return model


def lower_int8(model: Model) -> tuple[Model, dict[str, int]]:
    """Rewrite the imported QDQ graph to integer conv2d/matmul (see edgec.quant.integer).

    Returns:
        The model, and counts: layers rewritten and float quantize/dequantize ops left
        (those become fused elementwise casts).
    """
    from edgec.quant import integer

    ir, stats = integer.lower_qdq(model.ir)
    left = integer.count_qdq(ir)
    counts = {"conv2d": stats.conv2d, "matmul": stats.matmul, "moved": stats.passthrough,
              "quantize_left": left["quantize"], "dequantize_left": left["dequantize"]}
    return model.evolve("quantize:int8", ir=integer.decompose_qdq(ir)), counts


def to_fp16(model: Model) -> Model:
    """Weights and activations in float16; conv/matmul accumulate and outputs stay float32."""
    from tvm import relax

    ir = relax.transform.ToMixedPrecision(out_dtype="float32")(model.ir)
    ir = relax.transform.FoldConstant()(ir)
    return model.evolve("quantize:fp16", ir=ir)

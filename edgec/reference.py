"""Reference runtimes that compiled code is checked against: ONNX Runtime for ONNX models,
LiteRT for TFLite models.

They are independent of TVM, so a wrong kernel, layout or legalization shows up as a
mismatch instead of passing silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import MissingDependencyError, ModelImportError

LITERT_PACKAGE = "ai-edge-litert==2.3.0"


def runtime_name(model: Any) -> str:
    """"LiteRT" for a .tflite reference, "ONNX Runtime" for an ONNX one."""
    return "LiteRT" if isinstance(model, (str, Path)) and str(model).endswith(".tflite") \
        else "ONNX Runtime"


def outputs(model: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the reference model and return its outputs by name: a .tflite path in LiteRT, an
    ONNX ModelProto or path in ONNX Runtime.

    Raises:
        ModelImportError: the reference runtime refuses the model.
    """
    return outputs_each(model, [inputs])[0]


def outputs_each(model: Any, samples: Sequence[Mapping[str, np.ndarray]]
                 ) -> list[dict[str, np.ndarray]]:
    """outputs() of each sample, the model loaded once (one ONNX Runtime session; LiteRT
    keeps a fresh interpreter per run, see run_litert)."""
    if isinstance(model, (str, Path)) and str(model).endswith(".tflite"):
        return [run_litert(Path(model), inputs) for inputs in samples]
    return onnxruntime_outputs_each(model, samples)


def onnxruntime_outputs(model: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX model (ModelProto or path) in ONNX Runtime's CPU provider.

    Raises:
        ModelImportError: ONNX Runtime refuses the model.
    """
    return onnxruntime_outputs_each(model, [inputs])[0]


def onnxruntime_outputs_each(model: Any, samples: Sequence[Mapping[str, np.ndarray]]
                             ) -> list[dict[str, np.ndarray]]:
    """onnxruntime_outputs() of each sample, through one session.

    Raises:
        ModelImportError: ONNX Runtime refuses the model.
    """
    import onnxruntime as ort

    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # old exports warn once per initializer listed as input
        if _fused_qdq_saturates(model):
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        session = ort.InferenceSession(str(data) if isinstance(data, Path) else data,
                                       options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runs = [session.run(names, dict(inputs)) for inputs in samples]
    except Exception as err:  # onnxruntime raises its own exception classes
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelImportError(
            f"ONNX Runtime cannot run the reference model, so the compiled code cannot be "
            f"checked ({first}); --no-check compiles without the check") from err
    return [dict(zip(names, values, strict=True)) for values in runs]


# ONNX Runtime's int8 GEMMs are exact on these x86 flags; without them it uses AVX2's
# vpmaddubsw, which saturates u8 x s8 pair sums at int16.
_EXACT_X86_DOTS = {"avx512_vnni", "avx_vnni"}


def _fused_qdq_saturates(model: Any) -> bool:
    """Whether ONNX Runtime's fused QDQ kernels could saturate on this host: an x86 CPU
    without VNNI and a model with int8 weights past 7 bits. It fuses DQ -> Conv -> Q into
    QLinearConv, whose AVX2 kernel sums u8 x s8 pairs in int16: on a Zen 1 that put a
    full-range INT8 model 2 quantization steps off (cosine 0.99967) while edgec's exact
    int32 sums were right. Unfused, ONNX Runtime computes the QDQ model's float semantics;
    it is not the default because deep models (MobileNetV3-Small, SSD-Lite, PP-OCR) then
    differ from the fused integer kernels, which edgec follows, by more than the check
    allows (MobileNetV3-Small: 1.17 of 22.4 on a logit)."""
    import platform

    from edgec import targets
    from edgec.codegen.intrinsics import MAX_WEIGHT  # the bound vpmaddubsw sums within

    if platform.machine() not in ("x86_64", "AMD64") or targets.cpu_flags() & _EXACT_X86_DOTS:
        return False
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    weights = {i.name: i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            values = numpy_helper.to_array(weights[node.input[0]]).astype(np.int32)
            if values.size and int(np.abs(values).max()) > MAX_WEIGHT:
                return True
    return False


def run_litert(path: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a .tflite model in LiteRT (one thread), the reference for compiled code.

    A fresh interpreter per call, so concurrent callers never share one (LiteRT's
    interpreter is not thread-safe).

    Args:
        inputs: arrays by input name (names as import_tflite reports them).

    Returns:
        Output arrays by name, in the file's output order.

    Raises:
        ModelImportError: LiteRT cannot load or run the file (e.g. an unresolved custom op),
            or the inputs do not match the model's.
        MissingDependencyError: ai-edge-litert is not installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
        raise MissingDependencyError(
            f"the LiteRT reference needs ai-edge-litert: pip install {LITERT_PACKAGE}"
        ) from err
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        details = interpreter.get_input_details()
        names = [d["name"] for d in details]
        if sorted(inputs) != sorted(names):
            raise ModelImportError(f"{path} takes inputs {names}, got {sorted(inputs)}")
        for detail in details:  # dims the file leaves open (-1) take the given size
            shape = np.shape(inputs[detail["name"]])
            if tuple(shape) != tuple(detail["shape"]):
                interpreter.resize_tensor_input(detail["index"], list(shape), strict=True)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelImportError(f"LiteRT cannot load {path}: {first}") from err
    for detail in interpreter.get_input_details():
        value = np.asarray(inputs[detail["name"]])
        if value.dtype != detail["dtype"]:
            raise ModelImportError(f"{path}: input {detail['name']} is "
                                   f"{np.dtype(detail['dtype']).name}, got {value.dtype}")
        interpreter.set_tensor(detail["index"], value)
    try:
        interpreter.invoke()
    except RuntimeError as err:
        raise ModelImportError(f"LiteRT failed to run {path}: {err}") from err
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}

"""Import stage: read a model file and convert it to a Relax `Model`. ONNX (or zoo:NAME):
fix input shapes, convert old opsets up, simplify, route around TVM frontend bugs
(onnx_import, graph_fixes). TFLite: fold float16 and sparse weights, keep NHWC
(tflite_import)."""

from __future__ import annotations

from collections.abc import Mapping

from edgec.frontend.onnx_import import (
    ZOO_PREFIX,
    PreparedOnnx,
    convert,
    graph_inputs,
    parse_input_shape,
    prepare_onnx,
    read_onnx,
    resolve_input_shapes,
)
from edgec.model import Model

__all__ = ["ZOO_PREFIX", "PreparedOnnx", "convert", "graph_inputs", "import_model",
           "is_tflite", "parse_input_shape", "prepare_onnx", "read_onnx", "read_reference",
           "resolve_input_shapes"]


def is_tflite(source: str) -> bool:
    return str(source).lower().endswith(".tflite")


def import_model(source: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Model:
    """Read, fix shapes, simplify and convert a model to Relax.

    Args:
        source: an .onnx or .tflite file, or "zoo:NAME".
        input_shapes: static shapes for inputs with dynamic dims, by input name.

    Raises:
        ModelImportError, ConfigError, MissingDependencyError: see the message.
    """
    if is_tflite(source):
        from edgec.frontend import tflite_import

        model = tflite_import.import_model(source, input_shapes)
    else:
        from edgec.frontend import onnx_import

        model = onnx_import.import_model(source, input_shapes)
    reject_empty_tensors(model, source)
    return model


def check_inputs(source: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Fail fast, before any slow step, on a missing or unreadable model file and on input
    shapes that do not fit it (unknown names, wrong rank, dims left dynamic).

    Raises:
        ModelImportError, ConfigError, MissingDependencyError: see the message.
    """
    if is_tflite(source):
        from pathlib import Path

        from edgec.frontend import tflite_import

        tflite_import.check_inputs(Path(source), input_shapes or {})
        return
    model, _ = read_onnx(source)
    resolve_input_shapes(model, input_shapes or {}, source)


def reject_empty_tensors(model: Model, source: str) -> None:
    """An input too small for the model's pools and strided convs leaves a tensor with a
    zero-sized dim, on which TVM fails deep in a later stage: say so here, in one line.

    Raises:
        ConfigError: some op's output is empty.
    """
    from edgec.errors import ConfigError
    from edgec.tvm_compat.ir_shapes import first_empty_tensor

    empty = first_empty_tensor(model.ir)
    if empty is not None:
        op, dims = empty
        shapes = " ".join(f"{s.name}:{','.join(map(str, s.shape))}" for s in model.inputs)
        raise ConfigError(f"{source} at input shape {shapes} is too small: {op} gives an "
                          f"empty tensor {dims}; use a larger --input-shape")


def read_reference(source: str):
    """What edgec.reference runs for a model file: the ONNX ModelProto, or the .tflite path."""
    if is_tflite(source):
        from pathlib import Path

        from edgec.frontend.tflite_import import read_tflite

        read_tflite(Path(source))  # fails early, one line, on a missing or broken file
        return source
    return read_onnx(source)[0]

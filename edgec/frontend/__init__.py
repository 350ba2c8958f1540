"""Import stage: read a model file (ONNX, or zoo:NAME), fix its input shapes, simplify it,
route around TVM frontend bugs (graph_fixes) and convert it to a Relax `Model`."""

from edgec.frontend.onnx_import import (
    ZOO_PREFIX,
    PreparedOnnx,
    convert,
    graph_inputs,
    import_model,
    parse_input_shape,
    prepare_onnx,
    read_onnx,
    resolve_input_shapes,
)

__all__ = ["ZOO_PREFIX", "PreparedOnnx", "convert", "graph_inputs", "import_model",
           "parse_input_shape", "prepare_onnx", "read_onnx", "resolve_input_shapes"]

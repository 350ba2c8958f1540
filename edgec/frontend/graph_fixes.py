"""ONNX graph rewrites that route around known bugs of TVM 0.27's Relax ONNX frontend.

Each rewrite keeps the model's meaning exactly (checked against ONNX Runtime by the tests)
and exists because the frontend either crashes or silently returns wrong shapes otherwise.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def decompose_prelu(model: onnx.ModelProto) -> int:
    """Rewrite PRelu(x, s) as Relu(x) - s * Relu(-x); returns how many were rewritten.

    TVM 0.27 crashes at build on multi-parameter PReLU, and its prelu op also blocks
    layout conversion; the decomposition uses only elementwise ops that lower everywhere.
    ONNX PRelu broadcasts the slope unidirectionally, which Mul's broadcasting covers.
    """
    graph = model.graph
    count = 0
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        count += 1
        x, slope = node.input
        out = node.output[0]
        tag = f"edgec_prelu{count}_{out}"
        new_nodes += [
            helper.make_node("Relu", [x], [f"{tag}_pos"]),
            helper.make_node("Neg", [x], [f"{tag}_negx"]),
            helper.make_node("Relu", [f"{tag}_negx"], [f"{tag}_neg"]),
            helper.make_node("Mul", [slope, f"{tag}_neg"], [f"{tag}_scaled"]),
            helper.make_node("Sub", [f"{tag}_pos", f"{tag}_scaled"], [out]),
        ]
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count


def make_expand_shapes_explicit(model: onnx.ModelProto) -> int:
    """Replace constant Expand target shapes by the full broadcast result shape.

    ONNX Expand broadcasts bidirectionally (a 1 in the target keeps the input's dim, and the
    target may have lower rank); the Relax frontend treats the target as the final shape for
    some of these patterns and returns a wrong shape. expand(x, broadcast(x.shape, s)) equals
    expand(x, s), so writing the explicit shape is exact. Needs shape-inferred value_info.
    """
    shapes = _known_shapes(model)
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    count = 0
    for node in model.graph.node:
        if node.op_type != "Expand" or node.input[0] not in shapes:
            continue
        target = _constant_value(node.input[1], inits, consts)
        if target is None:
            continue
        full = tuple(int(d) for d in np.broadcast_shapes(shapes[node.input[0]], tuple(target)))
        if full == tuple(int(d) for d in target):
            continue
        name = f"edgec_expand_shape_{count}_{node.output[0]}"
        model.graph.initializer.append(numpy_helper.from_array(np.array(full, np.int64), name))
        node.input[1] = name
        count += 1
    return count


def fill_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give graph outputs that have no shape the one shape inference finds.

    onnxsim refuses models whose outputs carry no shape field at all.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in known:
            out.type.CopyFrom(known[out.name].type)
    return model


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    result: dict[str, tuple[int, ...]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            result[value.name] = tuple(d.dim_value for d in dims)
    for init in model.graph.initializer:
        result[init.name] = tuple(init.dims)
    return result


def _constant_value(name: str, inits: dict, consts: dict) -> np.ndarray | None:
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = consts.get(name)
    if node is not None:
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
    return None


def set_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Write the resolved input shapes into the graph. When one changes a dim the file had
    fixed (a detector exported at 10x3x32x32, compiled at 1x3x480x640), the shapes the
    file declares for outputs and intermediates are stale: they are cleared, so shape
    inference recomputes them, instead of contradicting what the graph computes. Returns
    whether any were cleared."""
    changed = False
    for value in model.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, shapes[value.name], strict=True):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                changed = True  # a fixed dim, not a dynamic one exported as -1 or 0
            dim.Clear()
            dim.dim_value = size
    if changed:
        del model.graph.value_info[:]
        for out in model.graph.output:  # same rank, every dim unknown: onnxsim fills them
            for index, dim in enumerate(out.type.tensor_type.shape.dim):
                dim.Clear()
                dim.dim_param = f"{out.name}_d{index}"
    return changed

"""Pattern matching for edgec.quant.integer: the quantized layers of an imported QDQ graph.

Every matcher follows variables to their bound values (the graph is in A-normal form) and
returns None for anything it does not recognise, so the caller leaves that part in float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

# Ops that move 8-bit values without computing on them. ShuffleNetV2's channel shuffle
# (reshape, permute_dims, reshape) and split had each bounced through float: 10 kernels of
# dequantize, move, quantize per unit.
_MOVERS = ("relax.reshape", "relax.nn.max_pool2d", "relax.permute_dims")


# The values of each 8-bit activation type.
INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


@dataclass(frozen=True)
class QParams:
    """Per-tensor quantization of an activation: its 8-bit expression, scale and zero point."""

    expr: Any
    scale: float
    zero_point: int
    dtype: str


@dataclass(frozen=True)
class QuantLayer:
    """A float conv2d/matmul on dequantized 8-bit inputs, with its epilogue.

    weight is the 8-bit weight (OIHW for conv2d, K x N for matmul); weight_scale, weight_sums
    and bias are per output channel; low/high are the float clamp of the activation.
    """

    kind: str
    call: relax.Call
    data: QParams
    weight: np.ndarray
    weight_scale: np.ndarray
    weight_sums: np.ndarray
    bias: np.ndarray | None
    low: float | None
    high: float | None


def op_name(expr: Any) -> str:
    """"relax.nn.conv2d" for a call of that op; "" for anything else."""
    return str(getattr(expr.op, "name", "")) if isinstance(expr, relax.Call) else ""


def resolve(expr: Any, values: Mapping) -> Any:
    while isinstance(expr, relax.Var) and expr in values:
        expr = values[expr]
    return expr


def const_value(expr: Any, values: Mapping) -> np.ndarray | None:
    """The value of an expression computed from constants only (dequantize, reshape,
    permute_dims, astype of constants), or None."""
    expr = resolve(expr, values)
    if isinstance(expr, tvm.ir.Constant):
        return expr.value.numpy()
    name = op_name(expr)
    if name == "relax.dequantize":
        parts = _dequantize_parts(expr, values)
        return None if parts is None else (parts[0] - parts[2]) * parts[1]
    if name in ("relax.reshape", "relax.permute_dims", "relax.astype"):
        inner = const_value(expr.args[0], values)
        if inner is None:
            return None
        if name == "relax.reshape":
            return inner.reshape([int(d) for d in expr.ty.shape.values])
        if name == "relax.astype":
            return inner.astype(str(expr.attrs.dtype))
        axes = expr.attrs.axes
        return inner.transpose(None if axes is None else [int(a) for a in axes])
    return None


def _broadcast_along(param: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    if param.size == 1:
        return np.full(shape, param.reshape(()).item(), dtype=param.dtype)
    view = [1] * len(shape)
    view[axis] = -1
    return np.broadcast_to(param.reshape(view), shape)


def _dequantize_parts(call: Any, values: Mapping):
    """(int values as int64, scale, zero point) broadcast to the shape, for constant data."""
    data = const_value(call.args[0], values)
    scale = const_value(call.args[1], values)
    zero = const_value(call.args[2], values)
    if data is None or scale is None or zero is None:
        return None
    axis = int(call.attrs.axis) % max(data.ndim, 1)
    return (data.astype(np.int64), _broadcast_along(scale.astype(np.float64), data.shape, axis),
            _broadcast_along(zero.astype(np.int64), data.shape, axis))


def _quantized_weight(expr: Any, values: Mapping):
    """(8-bit weight, float scale of the same shape) of a constant symmetric weight."""
    expr = resolve(expr, values)
    if op_name(expr) == "relax.permute_dims":  # Gemm with transB: the weight is W^T
        inner = _quantized_weight(expr.args[0], values)
        axes = expr.attrs.axes
        order = None if axes is None else [int(a) for a in axes]
        return None if inner is None else (inner[0].transpose(order), inner[1].transpose(order))
    if op_name(expr) != "relax.dequantize":
        return None
    parts = _dequantize_parts(expr, values)
    raw = const_value(expr.args[0], values)
    if parts is None or raw.dtype not in (np.int8, np.uint8) or np.any(parts[2]):
        return None  # asymmetric weights would need a data-dependent correction: keep float
    return raw, parts[1]


def qparams(call: Any, values: Mapping) -> QParams | None:
    """Per-tensor scale/zero point of an R.quantize or R.dequantize call, or None."""
    scale = const_value(call.args[1], values)
    zero = const_value(call.args[2], values)
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        return None
    dtype = str(call.attrs.out_dtype if op_name(call) == "relax.quantize"
                else call.args[0].ty.dtype)
    return QParams(call.args[0], float(scale.reshape(())), int(zero.reshape(())), dtype)


def dequantized_input(expr: Any, values: Mapping) -> QParams | None:
    expr = resolve(expr, values)
    return qparams(expr, values) if op_name(expr) == "relax.dequantize" else None


def same_quantization(a: QParams, b: QParams) -> bool:
    """Whether two tensors are quantized alike: their 8-bit values mean the same floats."""
    return (a.scale, a.zero_point, a.dtype) == (b.scale, b.zero_point, b.dtype)


def passthrough(expr: Any, out: QParams, values: Mapping):
    """(op, 8-bit source, call) when expr moves data of a tensor quantized exactly as `out`
    (quantize(reshape(dequantize(x))) with equal parameters is reshape(x))."""
    call = resolve(expr, values)
    if op_name(call) not in _MOVERS:
        return None
    source = dequantized_input(call.args[0], values)
    if source is None or not same_quantization(source, out):
        return None
    return op_name(call), source.expr, call


def split_passthrough(expr: Any, out: QParams, values: Mapping):
    """(split call, 8-bit source, index) when expr is one part of a split of a tensor
    quantized exactly as `out` (quantize(split(dequantize(x))[i]) is split(x)[i])."""
    item = resolve(expr, values)
    if not isinstance(item, relax.TupleGetItem):
        return None
    split = resolve(item.tuple_value, values)
    if op_name(split) != "relax.split":
        return None
    source = dequantized_input(split.args[0], values)
    if source is None or not same_quantization(source, out):
        return None
    return split, source.expr, int(item.index)


def concat_parts(expr: Any, out: QParams, values: Mapping):
    """(concat call, the QParams of each part) when expr concatenates dequantized 8-bit
    tensors of `out`'s type: quantize(concat(dequantize(a), ...)) is the concat of each part
    requantized to `out` (elementwise, so the same values; a part already quantized as `out`
    is itself)."""
    call = resolve(expr, values)
    if op_name(call) != "relax.concat":
        return None
    fields = resolve(call.args[0], values)
    if not isinstance(fields, relax.Tuple):
        return None
    parts = [dequantized_input(field, values) for field in fields.fields]
    if any(part is None or part.dtype != out.dtype for part in parts):
        return None
    return call, parts


def _clamps(expr: Any, values: Mapping) -> tuple[Any, float | None, float | None]:
    """Peel relu / maximum / minimum with scalar constants; returns (inner, low, high)."""
    low = high = None
    while True:
        expr = resolve(expr, values)
        name = op_name(expr)
        if name == "relax.nn.relu":
            low, expr = max(low if low is not None else 0.0, 0.0), expr.args[0]
            continue
        if name not in ("relax.maximum", "relax.minimum"):
            return expr, low, high
        bound = const_value(expr.args[1], values)
        if bound is None or bound.size != 1:
            return expr, low, high
        value = float(bound.reshape(()))
        if name == "relax.maximum":
            low = value if low is None else max(low, value)
        else:
            high = value if high is None else min(high, value)
        expr = expr.args[0]


def _split_bias(expr: Any, values: Mapping) -> tuple[Any, np.ndarray | None]:
    if op_name(expr) != "relax.add":
        return expr, None
    for core, other in ((expr.args[0], expr.args[1]), (expr.args[1], expr.args[0])):
        bias = const_value(other, values)
        if bias is not None:
            return resolve(core, values), bias
    return expr, None


def quantized_layer(expr: Any, values: Mapping, clamps: bool = True) -> QuantLayer | None:
    """The conv2d/matmul + bias (+ clamp) chain that feeds an R.quantize, or None.

    Args:
        clamps: peel activation clamps first (off for layers whose float output is used).
    """
    inner, low, high = _clamps(expr, values) if clamps else (resolve(expr, values), None, None)
    core, bias = _split_bias(inner, values)
    name = op_name(core)
    if name == "relax.nn.conv2d":
        attrs = core.attrs
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        kind, out_axis = "conv2d", 0
    elif name == "relax.matmul" and len(core.ty.shape) == 2:
        kind, out_axis = "matmul", 1
    else:
        return None
    data = dequantized_input(core.args[0], values)
    weight = _quantized_weight(core.args[1], values)
    if data is None or weight is None:
        return None
    raw, scale = weight
    channels = raw.shape[out_axis]
    per_channel = np.moveaxis(scale, out_axis, 0).reshape(channels, -1)[:, 0]
    sums = np.moveaxis(raw.astype(np.int64), out_axis, 0).reshape(channels, -1).sum(axis=1)
    if bias is not None:
        if bias.size not in (1, channels):
            return None
        bias = np.broadcast_to(bias.reshape(-1), (channels,)).astype(np.float64)
    return QuantLayer(kind, core, data, raw, per_channel, sums, bias, low, high)

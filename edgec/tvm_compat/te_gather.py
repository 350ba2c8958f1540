"""TE computes that only move elements (weight packs), evaluated in numpy on constant inputs.

Every weight pack of edgec's kernels is a gather: each output element is one input element
(or a zero) at an index computed from the output's own indices with +, -, *, //, %, min,
max, comparisons and if_then_else. Left to Relax's FoldConstant, each distinct pack shape
became an LLVM function compiled and run at build time: 8.2 s of an INT8 MobileNetV2
compile on a Zen 1, 5.2 s of its float NHWC reference build. Here the same expression is
evaluated over index grids: one numpy fancy-index per pack, milliseconds.

This walks TVM 0.27's expression nodes (tvm.ir.prim.expr classes under tvm.tirx, te's
tensor_load calls): a TVM upgrade that renames them is this file's work. Anything it does not
know (reductions, other calls) returns None and the caller emits the TE function as before.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx

_BINARY = {
    tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply,
    tirx.FloorDiv: np.floor_divide, tirx.FloorMod: np.mod,
    tirx.Min: np.minimum, tirx.Max: np.maximum,
    tirx.LT: np.less, tirx.LE: np.less_equal, tirx.GT: np.greater, tirx.GE: np.greater_equal,
    tirx.EQ: np.equal, tirx.NE: np.not_equal,
    tirx.And: np.logical_and, tirx.Or: np.logical_or,
}


class _Unsupported(Exception):
    pass


def evaluate(tensor: te.Tensor, inputs: dict) -> np.ndarray | None:
    """`tensor` (a te.compute over placeholders) on `inputs` ({placeholder tensor: array}),
    or None when it is not an element gather this evaluator knows."""
    try:
        return _tensor(tensor, {key.op: value for key, value in inputs.items()}, {})
    except _Unsupported:
        return None


def _tensor(tensor: te.Tensor, inputs: dict, done: dict) -> np.ndarray:
    op = tensor.op
    for placeholder, value in inputs.items():
        if op.same_as(placeholder):
            return value
    if not isinstance(op, te.ComputeOp) or len(op.reduce_axis) or op.num_outputs != 1:
        raise _Unsupported(type(op).__name__)
    key = op  # ffi objects hash and compare by identity
    if key not in done:
        shape = [int(d) for d in tensor.shape]
        grids = np.indices(shape, dtype=np.int64, sparse=True)
        scope = {axis.var: grid for axis, grid in zip(op.axis, grids, strict=True)}
        value = _expr(op.body[0], scope, inputs, done)
        done[key] = np.ascontiguousarray(
            np.broadcast_to(np.asarray(value), shape).astype(str(tensor.dtype)))
    return done[key]


def _expr(expr, scope: dict, inputs: dict, done: dict):
    kind = type(expr)
    if kind in _BINARY:
        return _BINARY[kind](_expr(expr.a, scope, inputs, done), _expr(expr.b, scope, inputs,
                                                                          done))
    if isinstance(expr, tirx.IntImm | tirx.FloatImm):
        return np.array(expr.value, dtype=str(expr.ty))
    if isinstance(expr, tirx.Var):
        if expr not in scope:
            raise _Unsupported(f"free variable {expr}")
        return scope[expr]
    if isinstance(expr, tirx.Not):
        return np.logical_not(_expr(expr.a, scope, inputs, done))
    if isinstance(expr, tirx.Cast):
        return np.asarray(_expr(expr.value, scope, inputs, done)).astype(str(expr.ty))
    if isinstance(expr, tirx.Select):
        return np.where(*(_expr(e, scope, inputs, done)
                          for e in (expr.condition, expr.true_value, expr.false_value)))
    if isinstance(expr, tvm.ir.expr.Call) and isinstance(expr.op, tvm.ir.Op):
        name = expr.op.name
        if name.endswith("if_then_else"):
            return np.where(*(_expr(e, scope, inputs, done) for e in expr.args))
        if name == "te.tensor_load":
            source = _tensor(expr.args[0], inputs, done)
            # Both sides of an if_then_else are evaluated here: indices outside the source
            # occur only in lanes the condition discards (TE reads the chosen side alone).
            index = tuple(np.clip(_expr(i, scope, inputs, done), 0, size - 1)
                          for i, size in zip(expr.args[1:], source.shape, strict=True))
            return source[index]
    raise _Unsupported(kind.__name__)

"""Layout changes of constants (packed weights) computed in numpy before FoldConstant.

Relax's FoldConstant legalizes each layout_transform, reshape and permute_dims of a
constant to a PrimFunc, compiles it with LLVM and runs it: one build per weight shape.
That was 12.0 of a 30.9 s MobileNetV2 compile (51 layout_transforms and 52 reshapes of
weights, Zen 1, one thread), more than all of its kernels' code generation. Here they are
numpy reshapes and gathers; what this does not cover (padded packs, other ops) is still
left to FoldConstant.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgec.tvm_compat.ir_shapes import static_shape
from edgec.tvm_compat.relax_modules import replace_main


def fold_constant_layouts(ir: tvm.IRModule) -> tvm.IRModule:
    """`ir` with every layout_transform, reshape and permute_dims of a constant replaced by
    its value."""
    folder = _Folder(ir)
    main = folder.visit_expr(ir["main"])
    return replace_main(ir, main) if folder.folded else ir


@mutator
class _Folder(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.folded = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        data = self._constant(call.args[0]) if call.args else None
        if data is None:
            return call
        value = _fold(call, data)
        if value is None:
            return call
        self.folded += 1
        return relax.const(value, str(value.dtype))

    def _constant(self, expr: relax.Expr) -> np.ndarray | None:
        """The value of a constant, or of a variable bound to one (a bias reshaped to
        (1, C, 1, 1) before it is packed)."""
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        return expr.value.numpy() if isinstance(expr, tvm.ir.Constant) else None


def _fold(call: relax.Call, data: np.ndarray) -> np.ndarray | None:
    """The value of `call` on constant `data`, or None where it is not one this covers."""
    name = getattr(call.op, "name", "")
    if name == "relax.reshape":
        shape = static_shape(call)
        return data.reshape(shape) if shape is not None else None
    if name == "relax.permute_dims":
        axes = call.attrs.axes
        return np.ascontiguousarray(np.transpose(
            data, None if axes is None else [int(a) for a in axes]))
    if name == "relax.layout_transform":
        return _apply_index_map(call.attrs.index_map, data)
    return None


def _apply_index_map(index_map, data: np.ndarray) -> np.ndarray | None:
    """`data` moved by a bijective IndexMap (packing without padding); None otherwise."""
    out_shape = [int(d) for d in index_map.map_shape(list(data.shape))]
    if math.prod(out_shape) != data.size or len(index_map.initial_indices) != data.ndim:
        return None
    grid = np.indices(data.shape, dtype=np.int64)
    env = {var.name: grid[axis] for axis, var in enumerate(index_map.initial_indices)}
    try:
        where = [np.broadcast_to(_evaluate(e, env), data.shape) for e in index_map.final_indices]
    except _Unsupported:
        return None
    flat = np.ravel_multi_index(where, out_shape, mode="raise").ravel()
    # As many indices as places, each in range: a bijection when every place is hit. (np.unique
    # took 15.5 of a 43 s ResNet-50 compile, hashing 104 weights' indices; this is linear.)
    hit = np.zeros(data.size, bool)
    hit[flat] = True
    if not hit.all():
        return None
    out = np.empty(data.size, data.dtype)
    out[flat] = data.ravel()
    return out.reshape(out_shape)


class _Unsupported(Exception):
    pass


_BINARY = {
    tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply,
    tirx.FloorDiv: np.floor_divide, tirx.FloorMod: np.mod,
}


def _evaluate(expr, env: dict[str, np.ndarray]):
    """An index expression of integer variables, on numpy arrays."""
    if isinstance(expr, tirx.Var):
        return env[expr.name]
    if isinstance(expr, tirx.IntImm):
        return np.int64(expr.value)
    for kind, func in _BINARY.items():
        if isinstance(expr, kind):
            return func(_evaluate(expr.a, env), _evaluate(expr.b, env))
    raise _Unsupported(type(expr).__name__)

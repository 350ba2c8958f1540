"""Keep NHWC models in NHWC across the ops ConvertLayout leaves in NCHW.

ConvertLayout converts convs and the ops it knows (concat, split, elementwise), but a
reshape has no layout rule, so a channel shuffle (ShuffleNet's reshape to (N, g, C/g, H, W),
swap, reshape back) and everything around it stay NCHW: each ShuffleNetV2 unit went NHWC ->
NCHW before its concat and back to NHWC after its split, 17 transposing kernels in all
(~15% of the model's time on x86). Here, where an NHWC consumer reads an NCHW value, that
value is rebuilt in NHWC from its producers: transposes back from NHWC, concats and splits
on the channel axis, channel shuffles (as the same reshape/swap on the last axis, contiguous
in NHWC) and elementwise ops (unary, or with a scalar constant). Producers it does not
know keep their transpose; the NCHW originals left without a consumer are removed.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]
_UNARY = {"relax.nn.relu", "relax.sigmoid", "relax.tanh", "relax.nn.silu", "relax.clip",
          "relax.astype", "relax.round"}
# Elementwise with a scalar constant: also the decomposed requantize of an INT8 concat's
# part (astype, subtract, multiply, divide, round, add, maximum, minimum, astype).
_WITH_SCALAR = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide",
                "relax.maximum", "relax.minimum"}


def keep_nhwc(ir: tvm.IRModule) -> tvm.IRModule:
    """`ir` (laid out in NHWC by ConvertLayout) with the NCHW regions between NHWC ops
    rebuilt in NHWC where every op on the way has an NHWC form."""
    main = _Rewriter(ir).visit_expr(ir["main"])
    out = tvm.IRModule(dict(ir.functions_items()))
    out[out.get_global_var("main")] = relax.analysis.remove_all_unused(main)
    return relax.transform.CanonicalizeBindings()(out)


def _axes(call: relax.Call) -> list[int] | None:
    if getattr(call.op, "name", "") != "relax.permute_dims" or call.attrs.axes is None:
        return None
    return [int(a) for a in call.attrs.axes]


def _shape(expr: relax.Expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    if shape is None:
        return None
    try:
        return [int(d) for d in shape]
    except (TypeError, ValueError):  # symbolic dimensions
        return None


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.values = relax.analysis.get_var2val(mod["main"])
        self.nhwc: dict = {}

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if _axes(call) == TO_NHWC and len(_shape(call) or []) == 4:
            converted = self._nhwc(call.args[0])
            if converted is not None:
                return converted
        return super().visit_call_(call)

    def _producer(self, expr: relax.Expr):
        return self.values.get(expr) if isinstance(expr, relax.Var) else None

    def _nhwc(self, expr: relax.Expr) -> relax.Expr | None:
        """The NHWC form of the 4-D NCHW value `expr`, emitted, or None."""
        if expr in self.nhwc:
            return self.nhwc[expr]
        value = self._producer(expr)
        result = None
        if isinstance(value, relax.Call):
            result = self._nhwc_call(value)
        elif isinstance(value, relax.TupleGetItem):
            parts = self._nhwc_split(value.tuple_value)
            if parts is not None:
                result = relax.TupleGetItem(parts, value.index)
        if result is not None and not isinstance(result, relax.Var):
            result = self.builder_.emit(result)
        self.nhwc[expr] = result
        return result

    def _nhwc_call(self, call: relax.Call) -> relax.Expr | None:
        name = getattr(call.op, "name", "")
        if _axes(call) == TO_NCHW:
            return self.visit_expr(call.args[0])
        if name == "relax.concat" and int(call.attrs.axis) == 1:
            fields = call.args[0]
            if not isinstance(fields, relax.Tuple):
                return None
            parts = [self._nhwc(field) for field in fields.fields]
            if any(part is None for part in parts):
                return None
            return relax.op.concat(parts, axis=3)
        if name == "relax.reshape":
            return self._nhwc_shuffle(call)
        scalar = (name in _WITH_SCALAR and isinstance(call.args[1], tvm.ir.Constant)
                  and not list(call.args[1].ty.shape))
        if name in _UNARY or scalar:
            data = self._nhwc(call.args[0])
            if data is None:
                return None
            return relax.Call(call.op, [data, *[self.visit_expr(a) for a in call.args[1:]]],
                              call.attrs)
        return None

    def _nhwc_split(self, expr: relax.Expr) -> relax.Expr | None:
        """A channel split of an NHWC-able value, split on NHWC's channel axis."""
        key = ("split", expr)
        if key in self.nhwc:
            return self.nhwc[key]
        call, result = self._producer(expr), None
        if (isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.split"
                and int(call.attrs.axis) == 1 and len(_shape(call.args[0]) or []) == 4):
            data = self._nhwc(call.args[0])
            if data is not None:
                result = self.builder_.emit(relax.op.split(
                    data, call.attrs.indices_or_sections, axis=3))
        self.nhwc[key] = result
        return result

    def _nhwc_shuffle(self, call: relax.Call) -> relax.Expr | None:
        """reshape(permute_dims(reshape(x, (N, g, C/g, H, W)), (0, 2, 1, 3, 4)), (N, C, H, W)):
        the same shuffle on NHWC's last axis."""
        out = _shape(call)
        swapped = self._producer(call.args[0])
        if out is None or len(out) != 4 or not isinstance(swapped, relax.Call):
            return None
        if _axes(swapped) != [0, 2, 1, 3, 4]:
            return None
        grouped = self._producer(swapped.args[0])
        if not isinstance(grouped, relax.Call) or getattr(grouped.op, "name", "") != (
                "relax.reshape"):
            return None
        source, split = _shape(grouped.args[0]), _shape(grouped)
        n, channels, height, width = out
        if source != out or split is None or len(split) != 5 or split[0] != n or (
                split[1] * split[2] != channels or split[3:] != [height, width]):
            return None
        data = self._nhwc(grouped.args[0])
        if data is None:
            return None
        groups, per_group = split[1], split[2]
        by_group = self.builder_.emit(relax.op.reshape(
            data, [n, height, width, groups, per_group]))
        swapped_nhwc = self.builder_.emit(relax.op.permute_dims(by_group, [0, 1, 2, 4, 3]))
        return relax.op.reshape(swapped_nhwc, [n, height, width, channels])

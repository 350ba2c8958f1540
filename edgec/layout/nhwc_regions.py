"""Keep NHWC models in NHWC across the ops ConvertLayout leaves in NCHW.

ConvertLayout converts convs and the ops it knows (concat, split, elementwise), but a
reshape has no layout rule, so a channel shuffle (ShuffleNet's reshape to (N, g, C/g, H, W),
swap, reshape back) and everything around it stay NCHW: each ShuffleNetV2 unit went NHWC ->
NCHW before its concat and back to NHWC after its split, 17 transposing kernels in all
(~15% of the model's time on x86). Here, where an NHWC consumer reads an NCHW value, that
value is rebuilt in NHWC from its producers: transposes back from NHWC, concats and splits
on the channel axis, channel shuffles (as edgec.codegen.channel_shuffle's NHWC kernel) and
elementwise ops (unary, or with a scalar constant). Producers it does not
know keep their transpose; the NCHW originals left without a consumer are removed.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgec.codegen.channel_shuffle import channel_shuffle_nhwc, channel_shuffle_parts

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
    rewriter = _Rewriter(ir)
    main = rewriter.visit_expr(ir["main"])
    out = rewriter.builder_.get()  # with the shuffle kernels' PrimFuncs
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
        """A channel split of an NHWC-able value, split on NHWC's channel axis; a split of a
        channel shuffle, one shuffle kernel per part."""
        key = ("split", expr)
        if key in self.nhwc:
            return self.nhwc[key]
        call, result = self._producer(expr), None
        if (isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.split"
                and int(call.attrs.axis) == 1 and len(_shape(call.args[0]) or []) == 4):
            result = self._shuffled_parts(call)
            data = self._nhwc(call.args[0]) if result is None else None
            if data is not None:
                result = self.builder_.emit(relax.op.split(
                    data, call.attrs.indices_or_sections, axis=3))
        self.nhwc[key] = result
        return result

    def _shuffled_parts(self, split: relax.Call) -> relax.Expr | None:
        """split(shuffle(x)) as one shuffle kernel with a result per part, each part's
        channels read directly: a split of the fused shuffle offset its second half by
        if_then_else chains that LLVM vectorized across pixels, with gathers and scatters."""
        shuffle = self._shuffle_of(self._producer(split.args[0]))
        if shuffle is None:
            return None
        sources, groups = shuffle
        channels = _shape(split.args[0])[1]
        cuts = split.attrs.indices_or_sections
        if isinstance(cuts, (int, tvm.tirx.IntImm)):
            if channels % int(cuts):
                return None
            bounds = list(range(0, channels, channels // int(cuts)))
        else:
            bounds = [0, *(int(i) for i in cuts)]
        bounds.append(channels)
        if any(b % groups for b in bounds):
            return None
        # One kernel with a result per part, as split has: parts as kernels of their own
        # were fused into the next unit's concat (a shuffle of a shuffle, gathers again).
        return self.builder_.call_te(channel_shuffle_parts, sources, groups, bounds,
                                     primfunc_name_hint="channel_shuffle")

    def _nhwc_shuffle(self, call: relax.Call) -> relax.Expr | None:
        """A channel shuffle (_shuffle_of) as one NHWC kernel: as reshape/swap/reshape on the
        last axis, fused, they composed into div/mod gathers at 10x a copy's cost
        (edgec.codegen.channel_shuffle)."""
        shuffle = self._shuffle_of(call)
        if shuffle is None:
            return None
        return self.builder_.call_te(channel_shuffle_nhwc, *shuffle,
                                     primfunc_name_hint="channel_shuffle")

    def _shuffle_of(self, call) -> tuple[list[relax.Expr], int] | None:
        """([the NHWC form of x] or of its g concatenated parts, g) for the shuffle
        reshape(permute_dims(reshape(x, (N, g, C/g, H, W)), (0, 2, 1, 3, 4)), (N, C, H, W)),
        else None."""
        if not isinstance(call, relax.Call) or getattr(call.op, "name", "") != "relax.reshape":
            return None
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
        groups = split[1]
        sources = self._concat_parts(grouped.args[0], groups, split[2])
        if sources is not None:
            return sources, groups  # ShuffleNet's concat: its parts read directly
        data = self._nhwc(grouped.args[0])
        return None if data is None else ([data], groups)

    def _concat_parts(self, expr: relax.Expr, count: int, channels: int) -> list | None:
        """The NHWC forms of the `count` parts of `channels` channels each that `expr` (NCHW)
        concatenates: an NCHW concat, or ConvertLayout's NHWC one transposed back."""
        call = self._producer(expr)
        axis, nhwc = 1, False
        if isinstance(call, relax.Call) and _axes(call) == TO_NCHW:
            call, axis, nhwc = self._producer(call.args[0]), 3, True
        if not (isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.concat"
                and int(call.attrs.axis) == axis and isinstance(call.args[0], relax.Tuple)):
            return None
        fields = call.args[0].fields
        if len(fields) != count or any((_shape(f) or [0] * 4)[axis] != channels for f in fields):
            return None
        parts = [self.visit_expr(f) if nhwc else self._nhwc(f) for f in fields]
        return None if any(part is None for part in parts) else parts

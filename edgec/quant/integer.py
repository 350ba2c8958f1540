"""Integer lowering: turn the float QDQ graph TVM imports into int8 compute with int32 sums.

TVM's ONNX frontend imports QuantizeLinear/DequantizeLinear as R.quantize/R.dequantize and
computes every conv in float on dequantized tensors. This pass rewrites

    quantize(clamp(conv2d(dequantize(x_q), dequantize(W_q)) + bias), s_y, z_y)

(and the same with matmul for Gemm/MatMul) into a conv2d on the 8-bit tensors themselves,
accumulated in int32, with the int32 bias, the zero-point correction, the requantize
multiplier (one per output channel) and the activation folded into one epilogue that FuseOps
fuses into the conv: an int8 tensor goes in, an int8 tensor comes out. Data-movement ops
between two identical quantizations (reshape, max pooling) run on the 8-bit values directly.
Whatever does not match stays as it was and still computes correctly in float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgec.quant import integer_patterns as patterns
from edgec.quant import quantized_add
from edgec.tvm_compat.relax_modules import replace_main

_FLOAT_OUTPUT_ROOTS = ("relax.add", "relax.nn.conv2d", "relax.matmul")


@dataclass(frozen=True)
class LoweringStats:
    """What the integer lowering rewrote."""

    conv2d: int = 0
    matmul: int = 0
    passthrough: int = 0


def lower_qdq(ir: tvm.IRModule) -> tuple[tvm.IRModule, LoweringStats]:
    """Rewrite quantized conv2d/matmul patterns of `ir["main"]` into integer compute.

    Layers whose output is requantized become int8 -> int8 kernels; the few whose float
    output is used (a classifier's logits kept in float) get the integer sum and a float
    rescale.

    Args:
        ir: a Relax module as imported from a QDQ ONNX model (weights still quantized
            constants, i.e. before FoldConstant).

    Returns:
        The rewritten module (dead float ops removed) and counts of what was rewritten.
    """
    rewriter = _Rewriter(ir, requantized=True)
    ir = replace_main(ir, relax.analysis.remove_all_unused(rewriter.visit_expr(ir["main"])))
    # Second pass, on what is left: dequantized conv/matmul outputs that stay float.
    ir = replace_main(ir, relax.analysis.remove_all_unused(
        _Rewriter(ir, requantized=False).visit_expr(ir["main"])))
    ir = relax.transform.CanonicalizeBindings()(ir)
    kinds = [layer.split()[0] for layer in integer_layers(ir)]
    return ir, LoweringStats(kinds.count("conv2d"), kinds.count("matmul"), rewriter.passthrough)


def _scalar_const(value: float, dtype: str) -> tvm.ir.Constant:
    return relax.const(np.array(value, dtype=dtype))


def _channel_const(values: np.ndarray, dtype: str, rank: int) -> tvm.ir.Constant:
    """A per-output-channel constant shaped to broadcast over NCHW (rank 4) or (N, C)."""
    shape = (1, -1, 1, 1) if rank == 4 else (1, -1)
    return relax.const(np.ascontiguousarray(values.reshape(shape).astype(dtype)))


@mutator
class _Rewriter(PyExprMutator):
    """Rewrites each matching R.quantize binding; the float ops it replaced become dead."""

    def __init__(self, mod: tvm.IRModule, requantized: bool) -> None:
        super().__init__(mod)
        self.values = relax.analysis.get_var2val(mod["main"])
        self.requantized = requantized
        self.passthrough = 0
        self.splits: dict = {}  # split call -> the same split of the 8-bit source, emitted

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        name = patterns.op_name(call)
        rewritten = None
        if self.requantized and name == "relax.quantize":
            rewritten = self._rewrite_quantize(call)
        elif not self.requantized and name in _FLOAT_OUTPUT_ROOTS:
            layer = patterns.quantized_layer(call, self.values, clamps=False)
            if layer is not None and layer.data.dtype in patterns.INT_RANGE:
                rewritten = self._rescale(self._accumulate(layer), layer)
        return rewritten if rewritten is not None else super().visit_call_(call)

    def _rewrite_quantize(self, call: relax.Call) -> relax.Expr | None:
        out = patterns.qparams(call, self.values)
        if out is None or out.dtype not in patterns.INT_RANGE:
            return None
        moved = patterns.passthrough(call.args[0], out, self.values)
        if moved is not None:
            self.passthrough += 1
            _, source, mover = moved
            return relax.Call(mover.op, [self.visit_expr(source), *mover.args[1:]],
                              mover.attrs)
        moved = self._moved(call.args[0], out)
        if moved is not None:
            self.passthrough += 1
            return moved
        layer = patterns.quantized_layer(call.args[0], self.values)
        if layer is None or layer.data.dtype not in patterns.INT_RANGE:
            return None
        return self._requantize(self._accumulate(layer), layer, out)

    def _moved(self, expr: relax.Expr, out: patterns.QParams) -> relax.Expr | None:
        """A split part or a concat of 8-bit tensors quantized as `out`, on the 8-bit values
        (concat parts quantized otherwise are requantized first), or None."""
        split = patterns.split_passthrough(expr, out, self.values)
        if split is not None:
            call, source, index = split
            if call not in self.splits:
                self.splits[call] = self.builder_.emit(relax.op.split(
                    self.visit_expr(source), call.attrs.indices_or_sections,
                    int(call.attrs.axis)))
            return relax.TupleGetItem(self.splits[call], index)
        concat = patterns.concat_parts(expr, out, self.values)
        if concat is None:
            return None
        call, parts = concat
        return relax.op.concat([self._requantized(part, out) for part in parts],
                               int(call.attrs.axis))

    def _requantized(self, part: patterns.QParams, out: patterns.QParams) -> relax.Expr:
        data = self.visit_expr(part.expr)
        if patterns.same_quantization(part, out):
            return data
        # The float graph's own steps, dequantize then quantize: the same values it made.
        dequantized = relax.op.dequantize(data, _scalar_const(part.scale, "float32"),
                                          _scalar_const(part.zero_point, part.dtype))
        return self.builder_.emit(relax.op.quantize(
            dequantized, _scalar_const(out.scale, "float32"),
            _scalar_const(out.zero_point, out.dtype), out_dtype=out.dtype))

    def _accumulate(self, layer: patterns.QuantLayer) -> relax.Expr:
        """The int32 sum over the 8-bit tensors, bias and zero-point correction included."""
        if layer.kind == "conv2d":
            acc = self._integer_conv2d(layer)
        else:
            acc = self._integer_matmul(layer)
        rank = 4 if layer.kind == "conv2d" else 2
        s_in = layer.data.scale * layer.weight_scale
        # Every window reads z_x where the float tensor is 0 (padding included, see
        # _integer_conv2d), so the zero point adds z_x * (sum of the channel's weights).
        offset = np.rint(layer.bias / s_in) if layer.bias is not None else 0.0
        offset = offset - float(layer.data.zero_point) * layer.weight_sums
        if np.any(offset):
            acc = self.builder_.emit(relax.op.add(acc, _channel_const(offset, "int32", rank)))
        return acc

    def _rescale(self, acc: relax.Expr, layer: patterns.QuantLayer) -> relax.Expr:
        """Back to float: acc * s_x * s_w (a layer whose float output is used)."""
        rank = 4 if layer.kind == "conv2d" else 2
        scale = np.float32(layer.data.scale) * layer.weight_scale.astype(np.float32)
        return relax.op.multiply(relax.op.astype(acc, "float32"),
                                 _channel_const(scale, "float32", rank))

    def _integer_conv2d(self, layer: patterns.QuantLayer) -> relax.Expr:
        attrs = layer.call.attrs
        padding = [int(p) for p in attrs.padding]
        data = self.visit_expr(layer.data.expr)
        zero = int(layer.data.zero_point)
        if zero and any(padding):
            # The float conv pads with 0.0, which is the zero point in the 8-bit domain.
            top, left, bottom, right = padding
            data = self.builder_.emit(relax.op.nn.pad(
                data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zero)))
            padding = [0, 0, 0, 0]
        return self.builder_.emit(relax.op.nn.conv2d(
            data, relax.const(layer.weight), strides=[int(s) for s in attrs.strides],
            padding=padding, dilation=[int(d) for d in attrs.dilation],
            groups=int(attrs.groups), out_dtype="int32"))

    def _integer_matmul(self, layer: patterns.QuantLayer) -> relax.Expr:
        data = self.visit_expr(layer.data.expr)
        return self.builder_.emit(
            relax.op.matmul(data, relax.const(layer.weight), out_dtype="int32"))

    def _requantize(self, acc: relax.Expr, layer: patterns.QuantLayer,
                    out: patterns.QParams) -> relax.Expr:
        """acc times s_x * s_w / s_y, rounded, shifted by z_y, clamped to the activation and
        the 8-bit range."""
        rank = 4 if layer.kind == "conv2d" else 2
        # float32 arithmetic, in ONNX Runtime's order: a multiplier off by one ulp flips
        # near-ties, and random-weight nets amplify a one-step flip visibly.
        multiplier = (np.float32(layer.data.scale) * layer.weight_scale.astype(np.float32)
                      / np.float32(out.scale))
        scaled = self.builder_.emit(relax.op.multiply(
            relax.op.astype(acc, "float32"), _channel_const(multiplier, "float32", rank)))
        low, high = patterns.INT_RANGE[out.dtype]
        if layer.low is not None:
            low = max(low, int(np.rint(layer.low / out.scale)) + out.zero_point)
        if layer.high is not None:
            high = min(high, int(np.rint(layer.high / out.scale)) + out.zero_point)
        shifted = relax.op.add(relax.op.round(scaled), _scalar_const(out.zero_point, "float32"))
        clamped = relax.op.minimum(relax.op.maximum(shifted, _scalar_const(low, "float32")),
                                   _scalar_const(high, "float32"))
        return relax.op.astype(clamped, out.dtype)


def count_qdq(ir: tvm.IRModule) -> dict[str, int]:
    """How many R.quantize / R.dequantize calls main still has (float boundaries)."""
    counts = {"quantize": 0, "dequantize": 0}

    def visit(expr) -> None:
        name = patterns.op_name(expr) if isinstance(expr, relax.Call) else ""
        if name in ("relax.quantize", "relax.dequantize"):
            counts[name.split(".")[1]] += 1

    relax.analysis.post_order_visit(ir["main"], visit)
    return counts


def integer_layers(ir: tvm.IRModule) -> list[str]:
    """'conv2d uint8 x int8 -> int32'-style descriptions of every conv2d/matmul on 8-bit
    inputs in main, read from the IR (what the build will compile)."""
    found = []

    def visit(expr) -> None:
        name = patterns.op_name(expr) if isinstance(expr, relax.Call) else ""
        if name in ("relax.nn.conv2d", "relax.matmul"):
            dtypes = [str(a.ty.dtype) for a in expr.args[:2]]
            if all(d in patterns.INT_RANGE for d in dtypes):
                found.append(f"{name.split('.')[-1]} {dtypes[0]} x {dtypes[1]} -> "
                             f"{expr.ty.dtype}")

    relax.analysis.post_order_visit(ir["main"], visit)
    return found


def decompose_qdq(ir: tvm.IRModule) -> tvm.IRModule:
    """Spell the remaining per-tensor R.quantize / R.dequantize as elementwise ops.

    ConvertLayout cannot see through the QDQ ops, so each one left at a residual add or a
    pooling cost a pair of layout transforms in packed layouts; as astype/round/clamp they
    convert with their neighbours and FuseOps fuses them into the same kernels.
    """
    return replace_main(ir, _Decomposer(ir).visit_expr(ir["main"]))


@mutator
class _Decomposer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.values = relax.analysis.get_var2val(mod["main"])

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        name = patterns.op_name(call)
        params = patterns.qparams(call, self.values) if name.endswith("quantize") else None
        if params is None:  # per-channel parameters: weights, which FoldConstant folds
            return super().visit_call_(call)
        if name == "relax.quantize":
            added = self._ort_add(call, params)
            if added is not None:
                return added
        data = self.visit_expr(call.args[0])
        zero = _scalar_const(params.zero_point, "float32")
        if name == "relax.dequantize":
            shifted = relax.op.subtract(relax.op.astype(data, "float32"), zero)
            return relax.op.multiply(shifted, _scalar_const(params.scale, "float32"))
        low, high = patterns.INT_RANGE.get(params.dtype, (None, None))
        if low is None:
            return super().visit_call_(call)
        scaled = relax.op.round(relax.op.divide(data, _scalar_const(params.scale, "float32")))
        clamped = relax.op.minimum(
            relax.op.maximum(relax.op.add(scaled, zero), _scalar_const(low, "float32")),
            _scalar_const(high, "float32"))
        return relax.op.astype(clamped, params.dtype)

    def _ort_add(self, call: relax.Call, out: patterns.QParams) -> relax.Expr | None:
        """quantize(dequantize(a) + dequantize(b)) as ONNX Runtime's QLinearAdd rounds it
        (quant/quantized_add.py), or None when the quantized value is not such an add."""
        add = patterns.resolve(call.args[0], self.values)
        if patterns.op_name(add) != "relax.add":
            return None
        inputs = [patterns.dequantized_input(arg, self.values) for arg in add.args]
        if None in inputs or not quantized_add.applies(*inputs, out, *add.args):
            return None
        a, b = inputs
        return quantized_add.ort_add(self.visit_expr(a.expr), self.visit_expr(b.expr), a, b, out)

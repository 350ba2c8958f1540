"""Transposed convs whose kernel equals their stride, as a 1x1 conv and a depth-to-space.

Decoder upsamplings (DBNet's in PaddleOCR's detector, CenterFace's) are ConvTranspose with
a 2x2 kernel at stride 2: every input pixel writes its own 2x2 output patch, nothing
overlaps. That is a 1x1 conv to out_channels x 2 x 2 channels followed by a pixel shuffle
(ONNX DepthToSpace, CRD order), and the 1x1 conv runs on edgec's packed micro-kernel. TOPI's
conv2d_transpose has no such schedule: in PaddleOCR's detector at 640x640 its two
upsamplings took 82 of 144 ms (x86, 2 threads, this Xeon). Other transposed convs (kernel
larger than the stride, groups, padding) are left to TOPI.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgec.tvm_compat.ir_shapes import static_shape
from edgec.tvm_compat.relax_modules import replace_main


def as_pointwise_convs(ir: tvm.IRModule) -> tvm.IRModule:
    """`ir` with every rewritable conv2d_transpose replaced (unchanged when there is none)."""
    rewriter = _Rewriter(ir)
    main = rewriter.visit_expr(ir["main"])
    if rewriter.unknown_weights:
        # A weight const_value cannot compute: a per-tensor INT8 weight, whose dequantize
        # edgec.quant.integer.decompose_qdq has already spelled as astype/subtract/multiply
        # (--per-tensor; and the first upsampling of PaddleOCR's PP-OCRv4 detector). TVM
        # folds it to the constant the runtime would compute; on TOPI's conv2d_transpose
        # that upsampling took 18 of 50 ms at 640x640 (INT8, Zen 4, 2 threads).
        ir = relax.transform.FoldConstant()(ir)
        rewriter = _Rewriter(ir)
        main = rewriter.visit_expr(ir["main"])
    if not rewriter.rewritten:
        return ir
    return replace_main(ir, relax.analysis.remove_all_unused(main))


def _ints(values) -> list[int]:
    return [int(v) for v in values]


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.rewritten = False
        self.unknown_weights = False  # a candidate whose weight const_value cannot compute
        self.values = relax.analysis.get_var2val(mod["main"])

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") != "relax.nn.conv2d_transpose":
            return call
        rewritten = self._pointwise(call)
        if rewritten is None:
            return call
        self.rewritten = True
        return rewritten

    def _constant(self, weight: relax.Expr) -> np.ndarray | None:
        """The weights as numpy when they are computed from constants only: a constant,
        or in INT8 models (QDQ keeps the transposed conv in float) a dequantize of int8
        constants, so that the 1x1 conv runs on the float packed tile there too (U-Net
        INT8's transposed conv on TOPI took 97 of 100 ms)."""
        from edgec.quant.integer_patterns import const_value  # imports onnx: only here

        value = const_value(weight, self.values)  # a dequantize's comes as float64
        if value is None:
            self.unknown_weights = True
            return None
        return value.astype(str(weight.ty.dtype))

    def _pointwise(self, call: relax.Call) -> relax.Expr | None:
        a = call.attrs
        data, weight = call.args
        kernel = self._constant(weight)  # (in, out, kh, kw)
        if kernel is None or (a.data_layout, a.kernel_layout, a.out_layout) != (
                "NCHW", "IOHW", "NCHW"):
            return None
        in_channels, out_channels, kh, kw = kernel.shape
        if (int(a.groups) != 1 or _ints(a.strides) != [kh, kw] or any(_ints(a.padding))
                or any(_ints(a.output_padding)) or _ints(a.dilation) != [1, 1]):
            return None
        dims = static_shape(data)
        if dims is None:
            return None
        batch, _, height, width = dims
        # Output channel (o, ky, kx) of the 1x1 conv is output pixel (ky, kx) of o's patch.
        pointwise = np.ascontiguousarray(
            kernel.transpose(1, 2, 3, 0).reshape(out_channels * kh * kw, in_channels, 1, 1))
        emit = self.builder_.emit
        out_dtype = a.out_dtype if str(a.out_dtype) else None
        conv = emit(relax.op.nn.conv2d(data, relax.const(pointwise), out_dtype=out_dtype))
        patches = emit(relax.op.reshape(conv, (batch, out_channels, kh, kw, height, width)))
        rows = emit(relax.op.permute_dims(patches, [0, 1, 4, 2, 5, 3]))
        return relax.op.reshape(rows, (batch, out_channels, height * kh, width * kw))

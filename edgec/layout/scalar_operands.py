"""Single-value operands of elementwise ops as scalars, so layout conversion passes them.

PaddlePaddle exports scale and shift activations by learned values of shape (1,) (PP-OCR's
"learnable" hard-swish and its MobileOne blocks: x * w0 + w1 after nearly every conv).
ConvertLayout cannot give a rank-1 operand the layout of a rank-4 one, so it converts such
an add or multiply back to NCHW with a transpose on each side: 69 transposes in PP-OCRv4's
detector in NHWC, 3.3 of its 35 ms in two of them alone (x86, Zen 4, 2 threads). A value
broadcast from all-ones dims of lower rank is the same value as a scalar, and the result's
shape is the other operand's either way, so the rewrite is exact.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgec.tvm_compat.ir_shapes import static_shape
from edgec.tvm_compat.relax_modules import replace_main

_ELEMENTWISE = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide",
                "relax.maximum", "relax.minimum", "relax.power"}


def scalarize_single_values(ir: tvm.IRModule) -> tvm.IRModule:
    """`ir` with every all-ones operand of lower rank than its partner made a scalar."""
    rewriter = _Rewriter(ir)
    main = rewriter.visit_expr(ir["main"])
    if not rewriter.rewritten:
        return ir
    return replace_main(ir, main)


def _single_value_of_lower_rank(operand: relax.Expr, partner: relax.Expr) -> bool:
    mine, theirs = static_shape(operand), static_shape(partner)
    return (mine is not None and theirs is not None and 0 < len(mine) < len(theirs)
            and all(d == 1 for d in mine))


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") not in _ELEMENTWISE or len(call.args) != 2:
            return call
        args = list(call.args)
        changed = [index for index in (0, 1)
                   if _single_value_of_lower_rank(args[index], args[1 - index])]
        if not changed:
            return call
        for index in changed:
            args[index] = self._scalar(args[index])
        self.rewritten += 1
        return getattr(relax.op, call.op.name.split(".")[1])(*args)

    def _scalar(self, operand: relax.Expr) -> relax.Expr:
        if isinstance(operand, tvm.ir.Constant):
            value = operand.value.numpy()
            return relax.const(value.reshape(()), str(value.dtype))
        return self.builder_.emit(relax.op.reshape(operand, []))

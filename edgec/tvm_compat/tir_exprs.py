"""TIR expression kinds edgec's schedules inspect (TVM 0.27 moved Call to tvm.ir and named
the select-with-guard op prim.if_then_else; earlier releases had tir.Call and
tir.if_then_else)."""

from __future__ import annotations

from typing import Any

_IF_THEN_ELSE_NAMES = ("prim.if_then_else", "tirx.if_then_else", "tir.if_then_else")


def is_if_then_else(expr: Any) -> bool:
    """Whether a TIR expression is a call of if_then_else(condition, then, else)."""
    op = getattr(expr, "op", None)
    return getattr(op, "name", None) in _IF_THEN_ELSE_NAMES and len(expr.args) == 3


def linear_coefficient(expr: Any, var: Any) -> int | None:
    """The constant coefficient of `var` in `expr` where `expr` is linear in it (2 for
    `x * 2 + k`), None otherwise (TVM 0.27 has the arith analyses under tvm.sym; earlier
    releases under tvm.arith)."""
    import tvm

    arith = getattr(tvm, "sym", None) or tvm.arith
    terms = arith.detect_linear_equation(expr, [var])
    if not terms or not hasattr(terms[0], "value"):
        return None
    return int(terms[0].value)

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

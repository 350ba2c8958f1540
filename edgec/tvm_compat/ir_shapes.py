"""Static shapes of the tensors a Relax function binds (TVM 0.27 calls a var's type `ty`;
earlier releases called it `struct_info`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def bound_shapes(ir: Any) -> Iterator[tuple[str, list[int]]]:
    """(op name, static dims) of every tensor bound by a call in the module's Relax functions,
    in program order; dims that are not constants are left out."""
    import tvm
    from tvm import relax

    for func in ir.functions.values():
        if not isinstance(func, relax.Function) or not hasattr(func.body, "blocks"):
            continue
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                shape = getattr(getattr(binding.var, "ty", None), "shape", None)
                if shape is None or not isinstance(value, relax.Call):
                    continue
                op = getattr(value.op, "name", None) or str(getattr(value.op, "name_hint", "call"))
                yield op, [int(d) for d in shape if isinstance(d, tvm.tirx.IntImm)]


def static_shape(expr: Any) -> list[int] | None:
    """The dims of a Relax expression's tensor type when all are constants, else None."""
    import tvm

    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def first_empty_tensor(ir: Any) -> tuple[str, list[int]] | None:
    """The first op whose output has a zero-sized dim (an input too small for the model's
    pools and strided convs), or None."""
    return next(((op, dims) for op, dims in bound_shapes(ir) if 0 in dims), None)

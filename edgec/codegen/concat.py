"""Concatenation: one plain copy per input instead of a select per element.

TOPI's concatenate computes every output element as a chain of if_then_else on the concat
axis. The generic schedule vectorized that select across the axis, and LLVM could not keep
it a vector select: SqueezeNet's fire concats (27x27 pixels of 128 + 128 uint8 channels,
NHWC) ran at ~4 GB/s, ~0.05 ms each in the model (0.15 of the INT8 model's 0.95 ms, Zen 5,
x86_64-avx512-vnni, 2 threads).
Here the concat axis is a loop partition at the seams between the inputs: within each part
the condition is constant, TVM folds it, and LLVM turns each part into a straight vector
copy: the same concat 0.0018 ms alone (0.008 in the model); 55x55x(64 + 64) float32 0.032
-> 0.015 ms.
"""

from __future__ import annotations

import math

import tvm
from tvm import s_tir, tirx

from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    elements,
    extent,
    inline_elementwise,
    root_blocks,
)
from edgec.tvm_compat.tir_exprs import is_if_then_else

_CONCAT_BLOCK = "T_concat"
# Parallel over the loops outside the concat axis when they make at least this many tasks
# (NHWC's pixels).
_ENOUGH_OUTER_TASKS = 8
# Smaller concats stay on one thread: the copy takes about as long as waking the others
# (55x55x128 uint8, 387 KB: 0.0038 ms either way; 55x55x128 float32: 0.029 -> 0.015 ms).
_PARALLEL_BYTES = 256 * 1024


def seams(sch: s_tir.Schedule, block) -> tuple[int, list[int]] | None:
    """(the concat axis, the offsets where inputs after the first start) of a TOPI
    concatenate block, None for any other block."""
    stmt = sch.get(block)
    if not stmt.name_hint.startswith(_CONCAT_BLOCK):
        return None
    if not isinstance(stmt.body, tirx.BufferStore):
        return None
    variables = [iv.var for iv in stmt.iter_vars]
    found = []
    value = stmt.body.value  # if_then_else(s2 <= v, x2, if_then_else(s1 <= v, x1, x0))
    while is_if_then_else(value):
        found.append(_threshold(value.args[0], variables))
        value = value.args[2]
    if not found or any(item is None for item in found):
        return None
    axes = {axis for axis, _ in found}
    if len(axes) != 1:
        return None
    return axes.pop(), sorted({offset for _, offset in found})


def _threshold(condition, variables) -> tuple[int, int] | None:
    """(axis, offset) of a condition `offset <= v` (or `v >= offset`) on a block variable."""
    if isinstance(condition, tirx.LE):
        constant, variable = condition.a, condition.b
    elif isinstance(condition, tirx.GE):
        variable, constant = condition.a, condition.b
    else:
        return None
    if not isinstance(constant, tirx.IntImm) or not isinstance(variable, tirx.Var):
        return None
    axis = next((i for i, v in enumerate(variables) if v.same_as(variable)), None)
    return None if axis is None else (axis, int(constant))


class _NotHere(Exception):
    """The generic schedule does as well for this concat."""


class Concatenate:
    """A function ending in a TOPI concatenate (its elementwise producers inlined into it):
    the concat axis partitioned at the seams, parallel over the loops outside it."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        inline_elementwise(sch)
        *others, last = root_blocks(sch)
        found = seams(sch, last)
        if found is None:
            return None
        try:
            _schedule_parts(sch, last, *found)
        except (_NotHere, tvm.error.InternalError, s_tir.ScheduleError):
            return None  # the generic rule takes it (as well, or TVM could not partition)
        for block in others:
            ParallelVectorize.schedule_block(sch, block)
        return sch


def _schedule_parts(sch: s_tir.Schedule, block, axis: int, offsets: list[int]) -> None:
    loops = sch.get_loops(block)
    if len(loops) != len(sch.get(block).iter_vars):
        raise s_tir.ScheduleError("the concat's loops are not its axes")
    outer = loops[:axis]
    outer_tasks = math.prod(extent(sch, loop) or 1 for loop in outer)
    output = sch.get(block).writes[0].source
    parallel = elements(sch, block) * output.dtype.bits // 8 >= _PARALLEL_BYTES
    if parallel and outer_tasks < _ENOUGH_OUTER_TASKS:
        # A big concat on an outer axis (NCHW's channels): the generic schedule's select
        # is the same for a whole vector there, and its parallel rows already copy at
        # ~100 GB/s (2x 64x55x55 float32: 0.015 ms); a part's loop cannot be fused to
        # parallelize it.
        raise _NotHere
    if parallel:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    starts = [0, *offsets]
    sch.loop_partition(loops[axis], [b - a for a, b in zip(starts, offsets, strict=False)]
                       + [None])  # the last part takes the rest

"""Strided NCHW max pools as two passes over rows: the window's rows first, then its
columns.

A 3x3/2 max pool over plain rows took its nine taps per output column from three input
rows at stride 2: each tap a strided read that LLVM's vectorizer splits from wide loads
with shuffles, and the loop ended in scalar iterations. ResNet's stem pool over 64x112x112
ran 0.45 ms in ResNet-18 NCHW against the packed pool's 0.12-0.19, SqueezeNet's three
ceil-mode pools 0.27, 0.10 and 0.07 ms against 0.11, 0.05 and 0.02 (AVX2, Ice Lake Xeon,
2 threads). Here each output row first takes the maximum of its window's input rows,
column by column (contiguous vectors, no shuffle), into a row buffer in cache; the
window's columns are then taken from that one row, a third of the strided reads.

Padding needs no copy: a max pool's window always holds an input pixel, and an index
clamped into the input lands on a pixel of the same window when the window is contiguous
(dilation 1), so clamping the row and column gives the padded maximum. The columns whose
window reaches past the input are a loop of their own, so the interior's reads keep no
clamp.

Other pools (average, stride 1, dilated, packed or NHWC layouts, other types) stay on
TVM's legalization and edgec's generic schedule.
"""

from __future__ import annotations

import functools

from tvm import relax, s_tir, te, tirx

from edgec.codegen.generic_schedule import extent, root_blocks, vectorize_in_whole_vectors
from edgec.codegen.nchw_planes import clamped
from edgec.tvm_compat.llvm_target import vector_bytes

_ROWS, _COLUMNS = "max_pool_rows", "max_pool_columns"
_OUT_ELEMWISE_FUSABLE = 4  # relax OpPatternKind kOutEWiseFusable
# Output rows per parallel task: SqueezeNet's last pool (256 channels to 13x13) has 3328
# rows of 13 columns, each too little work for a task of its own.
_LEAST_TASK_OUTPUTS = 256


def legalize_max_pool2d(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """A float32 NCHW max pool of column stride 2 or more, dilation 1, static shapes, as
    max_pool_by_rows; any other is left to TVM's legalization."""
    attrs = call.attrs
    data = call.args[0]
    shape, out_shape = data.ty.shape, call.ty.shape
    if (str(data.ty.dtype) != "float32" or attrs.layout != "NCHW"
            or attrs.out_layout != "NCHW" or shape is None or out_shape is None
            or not all(isinstance(d, tirx.IntImm) for d in (*shape, *out_shape))):
        return call
    strides = [int(s) for s in attrs.strides]
    if strides[1] < 2 or any(int(d) != 1 for d in attrs.dilation):
        return call
    kernel = [int(k) for k in attrs.pool_size]
    padding = [int(p) for p in attrs.padding]
    out_h, out_w = int(out_shape[2]), int(out_shape[3])
    height, width = int(shape[2]), int(shape[3])
    if not (_windows_hold_input(out_h, height, kernel[0], strides[0], padding[0])
            and _windows_hold_input(out_w, width, kernel[1], strides[1], padding[1])):
        return call
    # Fused as TOPI's pool is (an output-elementwise-fusable op): analysed, its two
    # reduction-free passes read as injective, and FuseOps merged SqueezeNet's three pools
    # in a row into one function no pool schedule takes (0.47 ms against 0.26).
    return bb.call_te(max_pool_by_rows, data, kernel, strides, padding, out_h, out_w,
                      primfunc_name_hint="max_pool2d",
                      primfunc_attrs={"op_pattern": _OUT_ELEMWISE_FUSABLE})


def _windows_hold_input(out: int, size: int, kernel: int, stride: int, before: int) -> bool:
    """Whether every window along an axis holds an input pixel (the first and the last do;
    the others lie between): only then do clamped indices stand for the padding. ONNX
    Runtime refuses padding as wide as the kernel, which makes a window of padding alone;
    TOPI's pool keeps such a model's lowest-float maximum."""
    return before <= kernel - 1 and (out - 1) * stride - before <= size - 1


def max_pool_by_rows(data, kernel, strides, padding, out_h: int, out_w: int):
    """Max pool of (N, C, H, W) data to (N, C, out_h, out_w): each output row's window rows
    reduced column by column (max_pool_rows), then its window columns (max_pool_columns).
    The interior columns [first, end) read no clamped column (the schedule's partition)."""
    n, channels, height, width = (int(d) for d in data.shape)
    (kh, kw), (sh, sw), (top, left) = kernel, strides, padding[:2]
    rows = te.compute(
        (n, channels, out_h, width),
        lambda b, c, y, x: functools.reduce(te.max, [
            data[b, c, clamped(y * sh + k - top, height), x] for k in range(kh)]),
        name=_ROWS)
    first, end = _interior_columns(width, kw, sw, left, out_w)
    return te.compute(
        (n, channels, out_h, out_w),
        lambda b, c, y, x: functools.reduce(te.max, [
            rows[b, c, y, clamped(x * sw + k - left, width)] for k in range(kw)]),
        name=_COLUMNS, attrs={"edgec_interior_columns": [first, end]})


def _interior_columns(width: int, kw: int, sw: int, left: int, out_w: int) -> tuple[int, int]:
    """The output columns [first, end) whose window lies inside the input's columns."""
    first = min(out_w, -(-left // sw))
    end = max(first, min(out_w, (width - kw + left) // sw + 1))
    return first, end


class RowPool:
    """Schedule of max_pool_by_rows: parallel over tasks of whole output rows; each row's
    window rows reduced into a row buffer just before its columns are, the row pass in
    TVM's vectors, the columns left to LLVM's vectorizer (their stride-2 taps as
    interleaved groups: wide loads and shuffles), the interior columns a loop of their own
    with no clamp. Elementwise epilogues fused after the pool are inlined into its
    columns."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        names = [sch.get(b).name_hint for b in root_blocks(sch)]
        if _ROWS not in names or _COLUMNS not in names:
            return None
        try:
            self._schedule(sch, target)
        except s_tir.ScheduleError:
            return None  # a fused neighbour this schedule does not place: the generic rule
        return sch

    @staticmethod
    def _schedule(sch: s_tir.Schedule, target) -> None:
        blocks = root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        rows_at, columns_at = names.index(_ROWS), names.index(_COLUMNS)
        for block in blocks[:rows_at]:  # elementwise producers fused before the pool
            sch.compute_inline(block)
        for block in reversed(blocks[columns_at + 1:]):
            sch.reverse_compute_inline(block)
        rows, columns = blocks[rows_at], blocks[columns_at]
        first, end = (int(c) for c in sch.get(columns).annotations["edgec_interior_columns"])
        batch, channel, row, column = sch.get_loops(columns)
        out_w = extent(sch, column) or 1
        task, row = sch.split(sch.fuse(batch, channel, row),
                              [None, max(1, _LEAST_TASK_OUTPUTS // out_w)])
        sch.parallel(task)
        sch.compute_at(rows, row)
        # The row pass in TVM's vectors: left to LLVM, a short row (U-Net's 32 columns) was
        # unrolled and its vectorizer took the task's loop over rows instead, gathering each
        # vector from 4 rows lane by lane (a 2x2 pool of 64 channels at 32x32: 0.011 ms
        # against 0.003); a loop of vector code is one it leaves alone.
        vectorize_in_whole_vectors(sch, sch.get_loops(rows)[-1], vector_bytes(target) // 4)
        lengths = [length for length in (first, end - first, out_w - end) if length]
        if len(lengths) > 1:
            sch.loop_partition(column, [*lengths[:-1], None])

"""The order of a conv tile's parallel tasks (rows first or channel tiles first), for the
packed, NHWC and NCHW transposed tiles of edgec.codegen.schedules and the AMX tiles."""

from __future__ import annotations

import math

from tvm import s_tir

from edgec.codegen.generic_schedule import extent
from edgec.tvm_compat.llvm_target import is_aarch64, vector_registers

_NHWC_BLOCKS = ("conv2d_nhwc_packed", "depthwise_conv2d_nhwc_packed")
# Up to this much weight, row-major NHWC tiles re-read the weights from cache for each row.
_ROW_MAJOR_WEIGHTS = 512 * 1024
# NCHW transposed tiles of at most this many output rows run channel-major on AVX-512 (see
# rows_first_knob).
_CHANNEL_MAJOR_ROWS = 14


def rows_first_knob(sch: s_tir.Schedule, conv, row, target, knob: bool | None) -> bool | None:
    """The knob, or False (channel-major) for an AVX-512 NCHW transposed tile of at most
    _CHANNEL_MAJOR_ROWS rows: row-major, each thread re-read every channel tile's weights
    for each of its rows, where channel-major keeps a 32-channel tile's in L1 over the rows.
    MobileNetV3-Small's 96 -> 576 convs at 7x7 0.055 -> 0.039 ms a call; untuned NCHW
    builds (bench/ab.py, 9 rounds, Ice Lake Xeon, 2 threads): V3-Small 0.964x, PP-LCNet
    0.976x, MobileNetV2 0.996x, ResNet-50 0.996x, SSD-Lite 1.009x, MobileNetV1 1.015x (sums
    of per-call minimums 0.953-1.000). Up to 28 rows ResNet-50 lost (1.016x); AVX2's tiles
    of 8-16 channels, twice as many tasks each re-reading the input, lost on MobileNetV2
    (1.035x) and gained nothing on V3-Small."""
    if (knob is None and vector_registers(target) >= 32 and not is_aarch64(target)
            and sch.get(conv).name_hint == "conv2d_nchw_packed_out"
            and (extent(sch, row) or 1) <= _CHANNEL_MAJOR_ROWS):
        return False
    return knob


def parallel_tasks(sch: s_tir.Schedule, conv, batch, chunk, row, rows_first: bool | None):
    """One parallel task per (row, channel tile): row-major (all channel tiles of a row,
    then the next row) when `rows_first`, else tile-major. None: row-major for NHWC tiles
    (the float kernels' blocks, INT8's edgec_nhwc annotation) whose weights fit in
    _ROW_MAJOR_WEIGHTS, so each output pixel's channels (one cache line per 16) are written
    together instead of once per tile, and each row's input is read while in cache; and
    for NCHW's transposed tiles (conv2d_nchw_packed_out), where tile-major tasks gave each
    thread its own output channels over every row, so the next conv's rows (all channels)
    came half from the other core's cache: row-major, MobileNetV2 NCHW ran 0.91x, with the
    pixel-vector tiles row-major too 0.887x; MobileNetV1 0.947x, MobileNetV3-Small 0.983x,
    PP-LCNet 0.948x, SSD-Lite 0.878x (Zen 1, x86_64, 2 threads, bench/ab.py, 7 rounds).
    Returns the fused parallel loop."""
    if rows_first is None:
        stmt = sch.get(conv)
        nhwc = stmt.name_hint in _NHWC_BLOCKS or "edgec_nhwc" in stmt.annotations
        plain = nhwc or stmt.name_hint == "conv2d_nchw_packed_out"
        rows_first = plain and weight_bytes(sch, conv) <= _ROW_MAJOR_WEIGHTS
    if rows_first:
        sch.reorder(row, chunk)
    task = sch.fuse(batch, row, chunk) if rows_first else sch.fuse(batch, chunk, row)
    sch.parallel(task)
    return task


def weight_bytes(sch: s_tir.Schedule, conv) -> int:
    """Bytes of a conv block's second input (its weights)."""
    weight = sch.get(conv).reads[-1].source
    return _size(weight) * weight.dtype.bits // 8


def _size(buffer) -> int:
    return math.prod(int(dim) for dim in buffer.shape)

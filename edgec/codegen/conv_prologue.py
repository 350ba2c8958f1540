"""What runs before a conv kernel: weight packing and elementwise prologues (inlined), and
the padded copy of its input (filled in parallel, in vectors)."""

from __future__ import annotations

from tvm import s_tir

from edgec.codegen.generic_schedule import extent, row_length

_FEW_CHANNELS = 8  # NHWC padding with fewer channels than this is vectorized along rows


def schedule_producer(sch: s_tir.Schedule, block, inline_padding: bool) -> None:
    """Weight packing, no-op padding and same-shape elementwise prologues (an INT8
    residual's rescale) are inlined; real padding is filled in parallel, except for
    depthwise convs: they are memory-bound, and a padded copy of their input
    (MobileNetV2's largest tensors) cost more than the conv itself (96 channels at
    112x112, stride 2: 0.100 ms with the copy, 0.036 ms reading through the border
    test). 8-bit data converted for float sums is converted once, in parallel."""
    stmt = sch.get(block)
    same_shape = stmt.reads and _same_shape(stmt.writes[0].source, stmt.reads[0].source)
    convert_once = stmt.name_hint == "data_as_float" and not inline_padding
    inline = stmt.name_hint.endswith("kernel_pack") or same_shape or inline_padding
    if inline and not convert_once:
        sch.compute_inline(block)
        return
    loops = sch.get_loops(block)
    channels = extent(sch, loops[-1]) or 0
    if len(loops) == 4 and channels < _FEW_CHANNELS:
        # NHWC with few channels (an RGB stem): a task per row, its pixels' channels
        # in vectors, not a parallel task per pixel of 3 values. (MobileNetV2 NHWC
        # measured 1.01x of packed with this, 1.02x without: within noise.)
        row = sch.fuse(loops[2], loops[3])
        _, lane = sch.split(row, [None, row_length(extent(sch, row) or 1, 16)])
        sch.parallel(sch.fuse(loops[0], loops[1]))
        sch.vectorize(lane)
        return
    sch.parallel(sch.fuse(*loops[:3]))  # rows too: a stem's data is one channel block
    _vectorize_in_registers(sch, block, loops[-1])


# The widest vector one padded pixel is copied in (AVX-512: 64 bytes).
_COPY_BYTES = 64


def _vectorize_in_registers(sch: s_tir.Schedule, block, loop) -> None:
    """A padded copy's channel loop in vectors of the largest power of two that divides it
    (16 to _COPY_BYTES bytes): vectorized whole, U-Net INT8's 96 channels of uint8 (a concat)
    were one <96 x i8> select of a guarded load, which LLVM built byte by byte (96
    vpextrb and 96 vpinsrb per pixel, 540 in the conv's code)."""
    size = extent(sch, loop) or 0
    dtype_bytes = max(1, sch.get(block).writes[0].source.dtype.bits // 8)
    lanes = min(size & -size, _COPY_BYTES // dtype_bytes)  # & -size: its largest power of 2
    if size * dtype_bytes <= _COPY_BYTES or lanes * dtype_bytes < 16:
        sch.vectorize(loop)  # one register already, or no whole register divides it
        return
    _, lane = sch.split(loop, [None, lanes])
    sch.vectorize(lane)


def _same_shape(a, b) -> bool:
    return [int(d) for d in a.shape] == [int(d) for d in b.shape]

"""Default schedule for edgec.codegen.plain_kernels.depthwise_conv2d_nchw, the one plain
layout kernel whose vectors run along the output row (the others use PackedConv's tile)."""

from __future__ import annotations

from tvm import s_tir, tirx

from edgec.codegen.generic_schedule import extent, root_blocks, row_length, schedule_named

_MAX_ROW = 16  # output pixels per vector tile: one AVX-512 register, four NEON ones


class PlainDepthwiseConv:
    """Parallel over (batch, channel, row); a row's pixels in vectors across the taps, the
    bias/activation epilogue on each vector tile while it is in registers."""

    def __init__(self, longest_row: int = _MAX_ROW):
        self.longest_row = longest_row  # pixels per vector tile (kernel search varies it)

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        return schedule_named(func, "depthwise_conv2d_nchw", self._schedule)

    def _schedule(self, sch: s_tir.Schedule) -> None:
        blocks = root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        index = names.index("depthwise_conv2d_nchw")
        for block in blocks[:index]:  # padding (and casts): read through, no copy
            sch.compute_inline(block)
        conv, epilogue = sch.get_sblock("depthwise_conv2d_nchw"), blocks[index + 1:]
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        batch, channel, row, col, kh, kw = sch.get_loops(conv)
        col_outer, col_inner = sch.split(col, [None, row_length(extent(sch, col) or 1,
                                                                 self.longest_row)])
        sch.reorder(col_outer, kh, kw, col_inner)
        sch.parallel(sch.fuse(batch, channel, row))
        sch.vectorize(col_inner)
        if epilogue:
            sch.reverse_compute_at(epilogue[-1], col_outer)
            sch.vectorize(sch.get_loops(epilogue[-1])[-1])
        init = sch.decompose_reduction(conv, kh)
        sch.vectorize(sch.get_loops(init)[-1])

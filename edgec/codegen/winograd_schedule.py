"""Default schedule for edgec.codegen.winograd's Winograd F(4x4, 3x3) convs."""

from __future__ import annotations

from tvm import s_tir, tirx

from edgec.codegen.conv_epilogue import pass_by_tile
from edgec.codegen.conv_prologue import schedule_producer
from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    extent,
    root_blocks,
    row_length,
    schedule_named,
)

_MAX_TRANSFORM_LANES = 16  # channels per Winograd input transform vector

# NCHW data is copied to one block of all its channels (NHWC order) before the input
# transform, in parallel rows, each pixel's channels a vector. Read through the view
# instead, every transform vector gathered its channels from their planes, each input
# pixel for each of the (up to four) 6x6 tiles overlapping it. Per call (Ice Lake Xeon,
# family 6 model 106, 2 threads, per-call minimums of 7 interleaved rounds), ResNet-18
# NCHW's 64-channel convs at 56x56 0.65-0.69 -> 0.49-0.53 ms with AVX-512 code (packed
# 0.42-0.47), 128-channel at 28x28 0.52-0.56 -> 0.42-0.44; 0.72-0.82 -> 0.64-0.72 with AVX2;
# U-Net's (128x128) 0.36 -> 0.31; 14x14 and 7x7 level. Whole untuned NCHW builds
# (bench/ab.py, 7 rounds): ResNet-18 0.911x AVX2 / 0.910x AVX-512, U-Net 0.884x / 0.912x,
# ResNet-50 0.911x / 0.943x; the rpi5 estimate of ResNet-18 81.94 -> 80.03 ms.
def transposes_planes(stmt) -> bool:
    """Whether the one-block stage (`nhwc_as_one_block`) reads NCHW planes: its channel
    lane indexes the input's channel axis, not the input's last (NHWC's, a view)."""
    lane = stmt.iter_vars[-1].var
    last = stmt.reads[0].region[-1].min
    return not (isinstance(last, tirx.Var) and last.same_as(lane))


class WinogradConv:
    """edgec.codegen.winograd.conv2d_nchwc_winograd: each stage parallel, its tile in registers.

    Input and output transforms run per tile with their 6x6 (or 4x6) loops unrolled, so the
    coefficient selects fold and the channel lanes are vectors; padding is read through
    (not copied); the GEMM is PackedConv's micro-kernel with tiles as the pixel row.
    """

    def __init__(self, longest_row: int = 8, channel_tiles: int = 1):
        # What the kernel search varies: tiles per GEMM register row, and output-channel
        # vectors per register tile (where they divide the chunks).
        self.longest_row, self.channel_tiles = longest_row, channel_tiles

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        return schedule_named(func, "conv2d_nchwc_winograd", self._schedule)

    def _schedule(self, sch: s_tir.Schedule) -> None:
        block = sch.get_sblock
        # NHWC or NCHW data read as one block of all its channels: NHWC's is a view of the
        # same memory, NCHW's a transposing copy (transposes_planes).
        plain = "nhwc_as_one_block" in [sch.get(b).name_hint for b in root_blocks(sch)]
        if plain and transposes_planes(sch.get(block("nhwc_as_one_block"))):
            schedule_producer(sch, block("nhwc_as_one_block"), inline_padding=False)
        elif plain:
            sch.compute_inline(block("nhwc_as_one_block"))
        sch.compute_inline(block("data_pad"))
        eps, nu, icc, tile, lane = sch.get_loops(block("winograd_input"))
        m = extent(sch, eps) - 2  # F(m x m, 3x3): 4, or 2 on small images
        channels = extent(sch, lane) or 1
        if channels > _MAX_TRANSFORM_LANES:
            # NHWC's block is every channel (64-512): the unrolled 6x6 transform on vectors
            # that wide would spill, so it runs on 16 channels at a time.
            lanes = max(d for d in (16, 8, 4, 2, 1) if channels % d == 0)
            lane_outer, lane = sch.split(lane, [None, lanes])
            sch.reorder(icc, tile, lane_outer, eps, nu, lane)
            sch.parallel(sch.fuse(icc, tile))
            rows_at = sch.get_loops(block("winograd_input"))[1]
        else:
            sch.reorder(icc, tile, eps, nu, lane)
            sch.parallel(sch.fuse(icc, tile))
            rows_at = sch.get_loops(block("winograd_input"))[0]
        for loop in (eps, nu):
            sch.unroll(loop)
        sch.vectorize(lane)
        sch.compute_at(block("winograd_input_rows"), rows_at)
        *_, eps, col, lane = sch.get_loops(block("winograd_input_rows"))
        sch.unroll(eps)
        sch.unroll(col)
        sch.vectorize(lane)

        gemm = block("conv2d_nchwc_winograd")
        eps, nu, chunk, tile, lane, icc, icb = sch.get_loops(gemm)
        tile_outer, tile_inner = sch.split(tile, [None, row_length(extent(sch, tile) or 1,
                                                                    self.longest_row)])
        vectors = []
        if self.channel_tiles > 1 and (extent(sch, chunk) or 1) % self.channel_tiles == 0:
            chunk, vector = sch.split(chunk, [None, self.channel_tiles])
            vectors = [vector]
        sch.reorder(eps, nu, chunk, tile_outer, icc, icb, *vectors, tile_inner, lane)
        sch.parallel(sch.fuse(eps, nu, chunk, tile_outer))
        for loop in (*vectors, tile_inner):
            sch.unroll(loop)
        sch.vectorize(lane)
        init = sch.decompose_reduction(gemm, icc)
        sch.vectorize(sch.get_loops(init)[-1])

        output = block("winograd_output")
        batch, chunk, row, col, lane = sch.get_loops(output)
        row_outer, row_inner = sch.split(row, [None, m])
        col_outer, col_inner = sch.split(col, [None, m])
        sch.reorder(batch, chunk, row_outer, col_outer, row_inner, col_inner, lane)
        sch.parallel(sch.fuse(batch, chunk, row_outer))
        sch.unroll(row_inner)
        sch.unroll(col_inner)
        sch.vectorize(lane)
        sch.compute_at(block("winograd_output_rows"), col_outer)
        *_, i, col, lane = sch.get_loops(block("winograd_output_rows"))
        sch.unroll(i)
        sch.unroll(col)
        sch.vectorize(lane)

        # The crop and the bias/activation epilogue: one elementwise pass.
        blocks = root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        tail = blocks[names.index("winograd_output") + 1:]
        for later in tail[:-1]:
            sch.compute_inline(later)
        if plain:  # the crop into NHWC or NCHW: one parallel, vectorized pass
            lanes = int(sch.get(output).writes[0].source.shape[-1])
            if not pass_by_tile(sch, tail[-1], lanes):
                ParallelVectorize.schedule_block(sch, tail[-1])
            return
        loops = sch.get_loops(tail[-1])
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])

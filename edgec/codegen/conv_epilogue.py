"""Where a conv kernel's bias/activation epilogue runs: on the register tile while it is
in registers, after the task's row, or as a pass of its own."""

from __future__ import annotations

from tvm import s_tir

from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    elements,
    extent,
    position,
    vectorize_in_whole_vectors,
)

_UNROLL_UP_TO = 32  # pixels (or channel vectors) of one register tile, with room to spare
_UNROLL_TILES = 16  # a pixel's channel tiles unrolled in a pass of its own (512 channels)


def _schedule_overlapping_unpack(sch: s_tir.Schedule, conv, block) -> None:
    """The epilogue of a depthwise NHWC conv whose last tile overlaps the one before
    (edgec.codegen.plain_kernels.depthwise_tile_start). TVM cannot bound which output
    channels one tile feeds, so it cannot run on the register tile: it is a pass of its
    own, parallel over rows, each pixel's channels in vectors of the tile's lanes (the
    last one partial), each a contiguous load of one tile."""
    lanes = int(sch.get(conv).writes[0].source.shape[-1])
    batch, row, col, channel = sch.get_loops(block)
    sch.parallel(sch.fuse(batch, row))
    # The tiles before the overlapping last one and its partial vector, partitioned apart:
    # each part's tile index is known, so the partial vector is a contiguous load too (one
    # loop gathered it: 21 gathers per row for 116 channels).
    vectorize_in_whole_vectors(sch, channel, lanes)


def schedule_epilogue(sch: s_tir.Schedule, conv, epilogue: list, col_outer,
                      unroll_tile: bool = True) -> None:
    """The bias/activation epilogue runs on the register tile while it is in registers, when
    it writes as many values as the conv. An epilogue that broadcasts the conv's output over
    a larger tensor (a squeeze-excitation gate: a 1x1 conv's result times a 10x10 map, as in
    PaddleOCR's detector) cannot be computed at the conv's loop, so it runs on its own."""
    if not epilogue:
        return
    if "edgec_overlapping_tiles" in sch.get(conv).annotations:
        _schedule_overlapping_unpack(sch, conv, epilogue[-1])
        return
    if elements(sch, epilogue[-1]) <= elements(sch, conv):  # fewer: padded lanes cropped
        sch.reverse_compute_at(epilogue[-1], col_outer)
        loops = sch.get_loops(epilogue[-1])
        first = position(sch, loops, col_outer) + 1
        tile_loops = loops[first:]
        # The tile's pixel loops unrolled too: looped over, they indexed the accumulator
        # array by a variable, and LLVM kept that array on the stack, zeroed by a memset
        # before each tile and stored after it, both dead (the FMAs ran in registers):
        # SSD-Lite FP32 0.93x, MobileNetV1 0.96x (NHWC, Zen 4, avx512-vnni). Not INT8
        # tiles (`unroll_tile` False): their int32 accumulators were never on the stack, and
        # unrolled, TVM's vectorizer scalarized their requantizing epilogue (U-Net INT8's
        # 16-channel convs at 224x224 2.1x slower).
        # One value per tile (a 1-channel NCHW head over a row the tile length does not
        # divide, YOLOX's objectness at 13x13) leaves the epilogue no loop of its own.
        # A tile of two channel blocks (AVX-512's NHWC tiles of row_tails.wide_tile): as
        # one vector over both, each lane's block was a computed index, and the
        # accumulators went to a zeroed workspace (a memset per task) and back.
        if tile_loops:
            _vectorize_by_tile(sch, tile_loops[-1],
                               int(sch.get(conv).writes[0].source.shape[-1]))
            tile_loops = sch.get_loops(epilogue[-1])[first:]
        for loop in tile_loops[:-1] if unroll_tile else []:
            size = extent(sch, loop)
            if size is not None and size <= _UNROLL_UP_TO:
                sch.unroll(loop)
    else:
        ParallelVectorize.schedule_block(sch, epilogue[-1])


def epilogue_over_the_row(sch: s_tir.Schedule, conv_elements: int, epilogue: list,
                          task, lanes: int = 0) -> None:
    """The epilogue after the task's row (a row in tiles of two lengths cannot share one
    loop to run it on), or as a pass of its own when it writes more than the conv's
    `conv_elements` values."""
    if not epilogue:
        return
    if elements(sch, epilogue[-1]) <= conv_elements:
        sch.reverse_compute_at(epilogue[-1], task)
        # A vector over a task's two tiles indexed them by channel // lanes and LLVM
        # gathered it lane by lane (vpextrd + vinsertps).
        _vectorize_by_tile(sch, sch.get_loops(epilogue[-1])[-1], lanes)
    else:
        ParallelVectorize.schedule_block(sch, epilogue[-1])


def pass_by_tile(sch: s_tir.Schedule, crop, lanes: int) -> bool:
    """A crop and epilogue over an NHWC output (its last axis the channels) as one parallel
    pass in vectors of one output tile's `lanes` channels; False where the last axis is not
    a whole number of tiles (an NCHW crop's rows: the caller's generic pass). As one vector
    of every channel, each lane's tile (channel // lanes) was a computed index and LLVM
    gathered the vector lane by lane: 96 vpextrd/vinsertps per pixel of ResNet-18's
    64-channel 56x56 convs."""
    loops = sch.get_loops(crop)
    channels = extent(sch, loops[-1]) or 0
    out_channels = int(sch.get(crop).writes[0].source.shape[-1])
    if len(loops) != 4 or channels != out_channels or channels <= lanes or channels % lanes:
        return False
    sch.parallel(sch.fuse(*loops[:3]))
    _vectors_by_tile(sch, loops[-1], lanes, unroll=channels // lanes <= _UNROLL_TILES)
    return True


def _vectorize_by_tile(sch: s_tir.Schedule, loop, lanes: int) -> None:
    """`loop` vectorized, one vector per tile of `lanes` where it spans several whole
    tiles (0 lanes: one vector)."""
    size = extent(sch, loop) or 0
    if lanes and size > lanes and size % lanes == 0:
        _vectors_by_tile(sch, loop, lanes)
    else:
        sch.vectorize(loop)


def _vectors_by_tile(sch: s_tir.Schedule, loop, lanes: int, unroll: bool = True) -> None:
    """`loop` (a whole number of tiles) split into one vector per tile of `lanes`; the tiles
    unrolled unless told not to."""
    outer, lane = sch.split(loop, [None, lanes])
    if unroll:
        sch.unroll(outer)
    sch.vectorize(lane)

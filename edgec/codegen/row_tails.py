"""Register tiles for rows that no good tile length divides.

PackedConv's float tile is a row of up to 8 output pixels x one vector of channels, the
largest divisor of the row's width up to 8. SqueezeNet's rows are 55, 27 and 13 pixels:
divisors 5, 3 and 1, so its 13x13 convs ran tiles of one accumulator, each FMA waiting on
the one before (the 512 -> 1000 classifier conv: 2.43 ms, half of the model, Zen 5).
Here the row gets tiles of a balanced length (13: 7 + 6, 27: 7 + 7 + 7 + 6, 55: 6 x 8 + 7),
the last one a loop partition of its own with the same register tile, and the epilogue
runs over the task's row after the conv, while it is in cache.
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from edgec.codegen.conv_epilogue import epilogue_over_the_row
from edgec.codegen.generic_schedule import elements, extent, position, row_length

# A divisor this far below the longest tile leaves the FMA units waiting (Zen 5 and
# Cortex-A76 alike need about 8 independent accumulators to keep two FMA pipes busy).
_GOOD_ENOUGH = 0.75
# INT8 rows are padded only below this: SSD-Lite's 40-pixel rows in tiles of 7 (42) instead
# of 5 ran 1.4x slower, its 80-pixel ones in 14 (84) instead of 10 1.1x (Zen 5, VNNI).
_INT8_PAD_BELOW = 0.5
MAX_ROW = 8  # output pixels per micro-kernel row: reg_n vector accumulators
# INT8 rows where the dot's ISA has 32 registers: 14 pixels (packed tiles of one register:
# INT8 ResNet-18 2.52 -> 2.22 ms, MobileNetV2 1.49 -> 1.21, VNNI). VNNI tiles hold at most
# 14 accumulators: at 14 pixels x 2 registers (32-channel NHWC tiles) LLVM kept one on the
# stack, a store and a load around every dot; 7 x 2 ran 1x1 convs 0.66-0.90x, whole INT8
# models 0.90-0.99x (Zen 5, interleaved). sdot keeps 14 (rpi5 estimate 27.72 -> 27.65 ms).
_MAX_INT8_ROW = 14
_DOTS_WITH_32_REGISTERS = ("vnni", "sdot")
_VNNI_ACCUMULATORS = 14


# NCHW's transposed tile (kernels.conv2d_nchw_packed_out) broadcasts its pixels from one
# row of each input channel, the channels a plane apart (784 bytes at 14x14): a pass of the
# reduction touches a line or two per channel, more than L1 holds beside the tile's weights
# (256 channels: ~30 KB of input lines and 32 KB of weights). Rows of 7-pixel tiles read
# them twice, and the second pass found them evicted. One tile per row, as many pixels as
# the registers hold beside the weight vectors and a broadcast (14 x 2 vectors on AVX-512,
# 14 x 1 on AVX2), reads them once: PP-LCNet's 256 -> 256 1x1 convs at 14x14 0.116-0.162
# -> 0.107-0.112 ms (packed 0.105-0.123), 64 -> 128 at 28x28 0.125-0.140 -> 0.094 (fastest
# calls of 6 interleaved rounds, Intel Xeon, Emerald Rapids, x86_64-avx512-vnni, 2
# threads); AVX2 code 0.216 -> 0.169 (packed 0.178). Packed and NHWC tiles read their
# input channels contiguously and gained nothing from it (level within noise).
# Convs of few input channels keep MAX_ROW (their lines fit: on AVX2 PP-LCNet's 3-channel
# stem lost 0.91x in 14-pixel tiles; the packed layout's stems share this kernel), and so
# do convs with taps side by side: LLVM keeps the broadcasts the taps share (14 + 2 for
# 3x3) beside 28 accumulators and spills (U-Net's 3x3 conv at 224x224 2.43 -> 3.92 ms).
# NEON keeps it too: by the rpi5 estimate (qemu counts x llvm-mca, which prices no cache
# misses) MobileNetV2 NCHW went 28.24 -> 29.22 ms at 14 pixels (two narrow convs spilled),
# 28.34 at 12, 28.23 at 10.
_NCHW_MANY_CHANNELS = 64


def nchw_longest_row(vectors: int, registers: int, channels: int, kernel_width: int,
                     arm: bool) -> int:
    """The longest row of NCHW's transposed float tile of `vectors` channel registers over
    `channels` input channels and taps `kernel_width` wide."""
    if arm or channels < _NCHW_MANY_CHANNELS or kernel_width > 1:
        return MAX_ROW
    return max(MAX_ROW, (registers - vectors - 1) // vectors)


def int8_longest_row(kind: str, wide: int) -> int:
    """The longest row of an INT8 register tile for the dot `kind` on `wide` output
    channels."""
    if kind not in _DOTS_WITH_32_REGISTERS:
        return MAX_ROW
    if kind != "vnni":
        return _MAX_INT8_ROW
    from edgec.codegen import intrinsics

    registers = wide // (intrinsics.lanes("vnni", wide) or wide)
    return max(1, _VNNI_ACCUMULATORS // registers)


def balanced_tile(width: int, longest: int) -> int | None:
    """The tile length for a row of `width` pixels when its best divisor up to `longest` is
    poor (13 with 8: 7, for 7 + 6; 55: 7); None when row_length's divisor is good enough or
    nothing is gained."""
    if width <= longest or row_length(width, longest) >= _GOOD_ENOUGH * longest:
        return None
    tiles = -(-width // longest)
    length = -(-width // tiles)
    if width % length == 0 and length <= row_length(width, longest):
        return None
    return length


def int8_padded_width(width: int, kind: str, wide: int) -> int:
    """The row an INT8 conv on the dot `kind` with `wide` output channels per tile computes:
    `width` rounded up to whole balanced tiles where its best divisor is under half the
    longest tile (int8_longest_row). The dot intrinsics cannot be tensorized in a loop
    partition's parts (TVM 0.27 gives their blocks the whole row's region), so INT8 rows
    compute a few pixels more instead (13 -> 14: 8% more work, for tiles of 7 instead of 1
    pixel; SqueezeNet INT8 0.75x). AMX tiles have a geometry of their own (codegen.amx)."""
    if kind == "amx":
        return width
    longest = int8_longest_row(kind, wide)
    if row_length(width, longest) >= _INT8_PAD_BELOW * longest:
        return width
    length = balanced_tile(width, longest)
    return width if length is None else -(-width // length) * length


def balanced_length(sch: s_tir.Schedule, conv, col, longest: int) -> int | None:
    """The tile length for the row loop `col` of block `conv` when its best divisor up to
    `longest` is poor (a tail tile takes the rest); None when row_length's divisor is good
    enough, nothing is gained, or TVM cannot partition this loop."""
    width = extent(sch, col) or 1
    length = balanced_tile(width, longest)
    if length is None:
        return None
    # Tried first on a deep copy of the module (nothing shared with the real schedule):
    # TVM 0.27's loop_partition gives some reads a region of another buffer's rank (a 1x1
    # conv of 6 channels into 8-lane tiles) and fails midway.
    trial = s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(sch.mod)))
    index = position(sch, sch.get_loops(conv), col)
    try:
        loops = trial.get_loops(trial.get_sblock(sch.get(conv).name_hint))
        trial.loop_partition(loops[index], [width // length * length, None])
    except tvm.error.InternalError:
        return None
    return length


def schedule_row_parts(sch: s_tir.Schedule, conv, epilogue: list, task, col,
                       reduction_order: list[int], length: int,
                       channel_tiles: bool = False) -> None:
    """PackedConv's register tile on a row partitioned into whole tiles of `length` and
    its tail. The conv's loops are (task, col, lane, *reduction), or (task, col, tile,
    lane, *reduction) with `channel_tiles` (the channel vectors of one tile): `task` the
    parallel loop over (batch, channel chunk, row); `reduction_order` the positions in
    `reduction` of the loops in the order the tile runs them (the tile's own loops go
    innermost)."""
    # The epilogue goes to the task loop before the partition: moved there after it, the
    # parts' results came out wrong (SqueezeNet against ONNX Runtime: cosine 0.53).
    lanes = int(sch.get(conv).writes[0].source.shape[-1])
    epilogue_over_the_row(sch, elements(sch, conv), epilogue, task, lanes)
    name, variable = sch.get(conv).name_hint, sch.get(col).loop_var.name
    sch.loop_partition(col, [extent(sch, col) // length * length, None])
    for part in (0, 1):  # TVM names the parts after the block and the loop variable
        block = sch.get_sblock(f"{name}_{variable}{part}")
        loops = sch.get_loops(block)  # below the partition's own blocks
        tile_loops = 3 if channel_tiles else 2  # col, (tile,) lane
        col, *tiles, lane = loops[:tile_loops]
        reduction = [loops[tile_loops:][i] for i in reduction_order]
        outer = []
        if extent(sch, col) > length:
            col_outer, col = sch.split(col, [None, length])
            outer = [col_outer]
        sch.reorder(*outer, *reduction, *tiles, col, lane)
        for tile in tiles:
            sch.unroll(tile)
        sch.unroll(col)
        sch.vectorize(lane)
        init = sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])


# Pixels of a dense float tile of two channel vectors where the ISA has 16 registers (AVX2):
# 4 x 2 = 8 accumulators, each broadcast input value feeding two FMAs (6 loads per 8 FMAs,
# not 9). On a Zen 1 (AVX2, 2 threads) MobileNetV1's 1x1 convs on rows of 112, 56 and 28
# ran 0.77-0.80x of the 8 x 1 tile (found by tuning, then made the rule). Rows 4 does not
# divide take tiles of up to 5 (10 accumulators; 7 x 2 spilled: 1.07x of 7 x 1).
_PAIRED_ROWS = 4
_PAIRED_LONGEST = 5
_PAIRED_SHORTEST = 3  # fewer pixels leave the FMAs waiting on each other: 8 x 1 then


def paired_tile(sch: s_tir.Schedule, conv, col, width: int) -> tuple[int, int | None] | None:
    """(longest, balanced length or None) of a two-vector tile on a row of `width`: tiles
    of 4 where 4 divides it, else balanced tiles of up to 5 (14: 5 + 5 + 4) or the best
    divisor up to 5; None where the tile would hold fewer than 3 pixels."""
    if width % _PAIRED_ROWS == 0:
        return _PAIRED_ROWS, None
    length = balanced_length(sch, conv, col, _PAIRED_LONGEST)
    if length:
        return _PAIRED_LONGEST, length
    if row_length(width, _PAIRED_LONGEST) >= _PAIRED_SHORTEST:
        return _PAIRED_LONGEST, None
    return None


# Pixels of a dense float tile of two channel blocks, each two registers wide, where x86 has
# 32 registers (AVX-512: NHWC's 32-channel blocks): up to 6 pixels x 4 vectors, 24
# accumulators, each broadcast feeding four FMAs (10 loads per 24 FMAs; 7 x 2 took 9 per
# 14). Per call (fastest of 5 interleaved rounds, Ice Lake Xeon, x86_64-avx512-vnni, 2
# threads, untuned NHWC): MobileNetV1's 512 -> 512 at 14x14 (5 + 5 + 4 pixels) 0.43 -> 0.39
# ms, 1024 -> 1024 at 7x7 (4 + 3) 0.56 -> 0.50, SqueezeNet's 512 -> 1000 classifier at
# 13x13 0.83 -> 0.69, its stem (3 -> 64, 3x3/2, rows of 111: 3 x 4) 0.42 -> 0.22. Rows that
# 4 divides take 4 (MobileNetV1's 112-pixel rows in 6-pixel tiles and a tail: 0.29 ->
# 0.38). Where a two-block weight panel passes WIDE_PANEL_BYTES the tile keeps two
# vectors: ResNet-18's 3x3 512 -> 512 convs at 7x7 (1.2 MB per 64 channels, more than L2
# holds beside the rest) ran 1.27 -> 1.51 ms.
_WIDE_LONGEST = 6
_WIDE_SHORTEST = 3
WIDE_PANEL_BYTES = 512 * 1024


def wide_tile(sch: s_tir.Schedule, conv, col, width: int) -> tuple[int, int | None] | None:
    """(longest, balanced length or None) of a tile of two channel blocks on a row of
    `width` with 32 registers: the best divisor up to 6 where it is 3 or more (112: 4, 111:
    3, 55: 5), else balanced tiles of up to 6 (14: 5 + 5 + 4, 13: 5 + 5 + 3, 7: 4 + 3);
    None where neither holds (rows of 1 or 2)."""
    if row_length(width, _WIDE_LONGEST) >= _WIDE_SHORTEST:
        return _WIDE_LONGEST, None
    length = balanced_length(sch, conv, col, _WIDE_LONGEST)
    return (_WIDE_LONGEST, length) if length else None

"""NCHW 1x1 stride-1 convs on pixel-vector tiles (x86): a register tile of `channels` output
channels times one vector of a row's output pixels, each accumulating over the input
channels (an input vector load and `channels` FMAs with broadcast weights per step), and
the bias/activation epilogue writes the tile's rows straight into the NCHW planes.

The packed micro-kernel's tile (a row of pixels times a vector of output channels, what
NCHW dense convs use otherwise) must be transposed into the planes, which LLVM builds lane
by lane: on 1x1 convs the transposing epilogue made NCHW 1.45-1.8x slower than the same
tile written packed (Zen 5, x86_64-avx512-vnni, 2 threads: 32 -> 16 channels at 112x112
0.054 against 0.036 ms). On pixel vectors, convs with few input channels or output channels
the packed tile pads badly ran 0.66-0.82x of the transposed tile (see pays) where a row is
whole vectors plus at most a power-of-two tail (112 and 56 pixels on AVX-512); rows of 28,
14 and 7 pixels ran 1.13-2.3x (LLVM splits their tails into 8+4(+2) lanes), and 3x3 convs
1.37-1.43x (unaligned tap loads), so those keep the packed tile. Planes of 28x28 and 14x14
run as one flat row of H*W pixels instead (flat_pays), 7x7 (a 1-pixel tail) keeps the
packed tile.
"""

from __future__ import annotations

import math

from tvm import s_tir, te, tirx

from edgec.codegen import nchw_panels
from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    elements,
    extent,
    root_blocks,
    schedule_named,
    vectorize_in_whole_vectors,
)
from edgec.codegen.plain_kernels import is_pointwise, padded_tiles

BLOCK = "conv2d_nchw_pixels"
# Vector widths whose rows (and flat planes) of whole vectors run the epilogue per vector, in
# registers (PixelConv._epilogue_per_vector, _flat_per_vector). Against the epilogue over
# the task's row from a workspace: AVX2 (Zen 1, x86_64) MobileNetV2 NCHW 0.932-0.946x,
# SSD-Lite 0.908-0.929x, MobileNetV1 0.979-0.984x, PP-LCNet 0.981-0.997x, MobileNetV3-Small
# 0.990x; AVX-512 (Intel Xeon, Emerald Rapids, x86_64-avx512-vnni, 2026-12-06) MobileNetV2
# 0.980x, SSD-Lite 0.979x, PP-LCNet 0.987x, MobileNetV3-Small 0.990x, MobileNetV1 0.992x
# (2 threads, bench/ab.py, 7-9 interleaved rounds). On AVX-512 LLVM still stores the last
# vector's accumulators to the workspace after each task (dead, one tile per task).
EPILOGUE_PER_VECTOR_LANES = (8, 16)


def fits(kernel_size, strides, padding, dilation, out_width: int, cpu) -> bool:
    """Whether a float NCHW conv can run on pixel vectors: x86, 1x1, stride 1, no padding, and
    output rows of at least two whole vectors whose remainder is none or a power of two of
    4 or more. On AVX2 the transposed tile is 8 x 8 and cheaper to transpose than on
    AVX-512: pixel vectors ran 0.85-1.09x of it per conv and MobileNetV2 NCHW 1.03x (noise)
    on a Zen 5, but on a Zen 1 (128-bit FMA and shuffle units) MobileNetV2 NCHW ran
    0.76-0.92x, MobileNetV1 0.968x, MobileNetV3-Small 0.983x, PP-LCNet 0.971x, SSD-Lite
    0.976x (x86_64, 2 threads, 7 interleaved rounds, bench/ab.py). Two vectors per tile
    (12 accumulators of 6 channels) gained nothing there (1.005x). NEON is unmeasured (the
    ARM estimate could tell) and keeps the packed tile."""
    if cpu.arch != "x86_64" or cpu.vector_bits not in (256, 512):
        return False
    if not is_pointwise(kernel_size, strides, padding, dilation):
        return False
    lanes = cpu.float_lanes
    tail = out_width % lanes
    return out_width >= 2 * lanes and (tail == 0 or (tail >= 4 and tail & (tail - 1) == 0))


def flat_pays(kernel_size, strides, padding, dilation, out_height: int, out_width: int,
              cpu) -> bool:
    """Whether a 1x1 stride-1 conv whose rows do not fit runs on pixel vectors of its whole
    plane (one run of memory in NCHW): a plane that fits as one row (28x28 = 49 vectors,
    14x14 = 12 and a 4-lane tail; not 7x7, a 1-pixel tail). Its alternative, the packed
    tile transposed into rows of 28 or 14 (LLVM splits those into 16+8+4(+2) lanes), lost
    at any channel count: with them on flat planes MobileNetV3-Small NCHW ran 0.91-0.97x,
    PP-LCNet 0.97x, MobileNetV2 0.98-1.00x, ShuffleNetV2 0.99x; SqueezeNet, ResNet-18/50,
    MobileNetV1, SSD-Lite and U-Net level (0.99-1.02; 5-9 interleaved rounds per run, Zen 4,
    avx512-vnni). legalize_plain also asks `pays`: on an Intel Xeon (Emerald Rapids) the
    flat plane lost to the transposed tile where many input channels make few outputs
    (192 -> 32 at 28x28 0.234 against 0.097 ms, 144 -> 32 0.139 against 0.090; 384 -> 64 at
    14x14 0.24 against 0.14), each tile re-reading every input plane; gated so, MobileNetV2
    NCHW ran 0.905x, PP-LCNet 0.942x, MobileNetV3-Small 0.980x (x86_64-avx512-vnni) and
    0.985-0.988x on AVX2 code (x86_64), 2 threads, 9 interleaved rounds."""
    return fits(kernel_size, strides, padding, dilation, out_height * out_width, cpu)


def pays(in_channels: int, out_channels: int, packed_width: int) -> bool:
    """Whether pixel vectors beat the transposed packed tile (`packed_width` output channels
    per tile) on a conv that fits: where the transposing epilogue weighs most, few input
    channels per output (32 -> 16 channels 0.73x, 16 -> 96 0.66x, 24 -> 144 0.76x), or
    where the packed tile pads a quarter of its channels or more (96 -> 24 channels in
    32-channel tiles: 0.68x). Elsewhere pixel vectors lost: 64 -> 64 channels at 56x56
    1.12x, 128 -> 128 1.39x, 256 -> 64 1.23x (their input rows are re-read per tile of
    output channels from C planes apart)."""
    padded = padded_tiles(out_channels, packed_width) * packed_width
    return in_channels <= 32 or padded >= 1.25 * out_channels


def tile_channels(out_channels: int, vector_registers: int) -> int:
    """Output channels per tile (one accumulator register each): the most, up to 3/4 of the
    registers (24 of 32, 12 of 16), that pad the channels least; at least 4."""
    most = vector_registers * 3 // 4
    return min(range(4, most + 1),
               key=lambda c: (padded_tiles(out_channels, c) * c - out_channels, -c))


def conv2d_nchw_pixels(data, kernel, out_dtype: str, out_channels: int, lanes: int,
                       flat: bool = False, panels: int = 0):
    """1x1 stride-1 NCHW conv of `data` with weights packed by kernels.pack_stem_kernel
    (ceil(O/c), I, 1, 1, c) -> (N, out_channels, H, W). The accumulator (N, ceil(O/c), H, c,
    W) keeps a task's rows of its c channels together; `flat` makes it one row of H*W
    pixels (a 1x1 stride-1 conv's plane is one run of memory), `panels` (flat too: pixel
    vectors per panel) a GEMM over pixel panels (nchw_panels). `lanes` (the vector width)
    is recorded for PixelConv."""
    n, i_channels, height, width = (int(d) for d in data.shape)
    tiles, _, _, _, channels = (int(d) for d in kernel.shape)
    rows, pitch = (1, height * width) if flat else (height, width)
    ic = te.reduce_axis((0, i_channels), name="ic")

    def pixel(b, c, y, x):  # a flat plane's pixel x: flattening merges (x // W, x % W) back
        return data[b, c, x // width, x % width] if flat else data[b, c, y, x]

    def unpacked(b, o, y, x):
        tile, channel = o // channels, o % channels
        if flat:
            return accumulated[b, tile, 0, channel, y * width + x]
        return accumulated[b, tile, y, channel, x]

    accumulated = te.compute(
        (n, tiles, rows, channels, pitch),
        lambda b, t, y, c, x: te.sum(
            pixel(b, ic, y, x).astype(out_dtype) * kernel[t, ic, 0, 0, c].astype(out_dtype),
            axis=[ic]),
        name=BLOCK,
        attrs={"edgec_lanes": lanes, "edgec_flat": int(flat), "edgec_panels": panels},
    )
    return te.compute(
        (n, out_channels, height, width),
        unpacked,
        name="conv2d_nchw_pixels_unpack",
    )


class PixelConv:
    """Schedule of conv2d_nchw_pixels: one parallel task per (batch, row, channel tile)
    (a flat plane: per (batch, channel tile)); the row in whole vectors (then its tail, a
    loop partition of its own), each vector's accumulators across the input channels with
    the tile's channels unrolled; then the epilogue over the task's rows, in vectors,
    while they are in cache (a row or flat plane of whole vectors: over each vector as soon
    as it is summed, from registers; EPILOGUE_PER_VECTOR_LANES)."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        return schedule_named(func, BLOCK, self._schedule)

    def _schedule(self, sch: s_tir.Schedule) -> None:
        blocks = root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        index = names.index(BLOCK)
        conv, epilogue = blocks[index], blocks[index + 1:]
        for block in blocks[:index]:  # weight packing, a no-op pad, casts: read through
            sch.compute_inline(block)
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        lanes = int(sch.get(conv).annotations["edgec_lanes"])
        flat = bool(int(sch.get(conv).annotations.get("edgec_flat", 0)))
        fused = elements(sch, epilogue[-1]) <= elements(sch, conv)
        if flat and fused and nchw_panels.is_panel_conv(sch, conv):
            nchw_panels.schedule_panels(sch, conv, epilogue[-1], _tile_width(sch, conv), lanes)
            return
        if flat and fused:
            plane = sch.get_loops(conv)[-2]
            out_channels = extent(sch, sch.get_loops(epilogue[-1])[1])
            # Padded tiles (58 channels in tiles of 20) keep the plane: TVM leaves their
            # flattened pixel index unsimplified and cannot bound it per vector.
            if (lanes in EPILOGUE_PER_VECTOR_LANES and extent(sch, plane) % lanes == 0
                    and out_channels % _tile_width(sch, conv) == 0):
                self._flat_per_vector(sch, conv, epilogue[-1], lanes)
                return
            col = self._under_the_epilogue(sch, conv, epilogue[-1], lanes)
        else:
            batch, tile, row, channel, col, ic = sch.get_loops(conv)
            if _streams_out(sch, conv, epilogue[-1]):
                sch.reorder(tile, row, col, ic, channel)
                task = sch.fuse(batch, tile, row)
            else:
                # Row-major tasks: a thread's rows of every channel tile, so the rows the
                # next conv reads are mostly in its own core's cache
                # (conv_tasks.parallel_tasks).
                sch.reorder(row, tile, col, ic, channel)
                task = sch.fuse(batch, row, tile)
            sch.parallel(task)
            if (fused and lanes in EPILOGUE_PER_VECTOR_LANES
                    and extent(sch, col) % lanes == 0):
                self._epilogue_per_vector(sch, conv, epilogue[-1], col, lanes)
                return
            if fused:
                sch.reverse_compute_at(epilogue[-1], task)
                vectorize_in_whole_vectors(sch, sch.get_loops(epilogue[-1])[-1], lanes)
            else:  # it broadcasts the conv over a larger map: a pass of its own
                ParallelVectorize.schedule_block(sch, epilogue[-1])
        for part in _row_parts(sch, col, lanes):
            block = sch.get_sblock(part)
            *_, col, ic, channel = sch.get_loops(block)
            if extent(sch, col) > lanes:
                col, lane = sch.split(col, [None, lanes])
                sch.reorder(col, ic, channel, lane)
            else:
                lane = col
                sch.reorder(ic, channel, lane)
            _vectorize_tile(sch, block, ic, channel, lane)

    @staticmethod
    def _epilogue_per_vector(sch: s_tir.Schedule, conv, out, col, lanes: int) -> None:
        """A row of whole vectors: each vector's tile accumulated over the input channels,
        then at once its bias/activation epilogue, its channels unrolled, so the accumulators
        go from registers to the output planes (no workspace row to store and read back)."""
        col, lane = sch.split(col, [None, lanes])
        *_, ic, channel = sch.get_loops(conv)
        sch.reorder(col, ic, channel, lane)
        sch.reverse_compute_at(out, col)
        *_, o_loop, x_loop = sch.get_loops(out)
        sch.unroll(o_loop)
        sch.vectorize(x_loop)
        _vectorize_tile(sch, conv, ic, channel, lane)

    @staticmethod
    def _flat_per_vector(sch: s_tir.Schedule, conv, out, lanes: int) -> None:
        """A flat plane of whole vectors: the epilogue's channels split into the conv's
        tiles (one parallel task each), its plane into vectors, and each vector's tile
        computed there, so the epilogue reads the accumulators from registers."""
        width = extent(sch, sch.get_loops(out)[3])
        # The epilogue's own pixel index flat, so its read of the tile is one run that
        # compute_at can bound per vector (through fused (y, x) loops it spans rows).
        sch.transform_block_layout(out, lambda b, c, y, x: (b, c, y * width + x))
        batch, channel, pixels = sch.get_loops(out)
        _, inner = _channel_tile_tasks(sch, conv, batch, channel)
        vector, lane = sch.split(pixels, [None, lanes])
        sch.reorder(vector, inner, lane)
        sch.compute_at(conv, vector)
        sch.unroll(inner)
        sch.vectorize(lane)
        *_, channel, col, ic = sch.get_loops(conv)
        sch.reorder(ic, channel, col)
        _vectorize_tile(sch, conv, ic, channel, col)

    @staticmethod
    def _under_the_epilogue(sch: s_tir.Schedule, conv, out, lanes: int):
        """A flat plane's tile computed in the epilogue's task: the epilogue's channels
        split into the conv's tiles (one parallel task each), the conv computed at that
        task, the epilogue's rows fused into one run of vectors. reverse_compute_at cannot
        go the other way here: it must solve y * W + x for the epilogue's (y, x) and fails
        where the tiles pad the channels (ShuffleNetV2's 58 in tiles of 20). Returns the
        conv's pixel loop."""
        batch, channel, y, x = sch.get_loops(out)
        task, _ = _channel_tile_tasks(sch, conv, batch, channel)
        pixels = sch.fuse(y, x)
        sch.compute_at(conv, task)
        vectorize_in_whole_vectors(sch, pixels, lanes)
        *_, channel, col, ic = sch.get_loops(conv)
        sch.reorder(col, ic, channel)
        return col


# Output bytes past which an expanding conv's tasks go tile-major (see _streams_out).
STREAMING_OUTPUT_BYTES = 4 << 20
STREAMING_EXPANSION = 4


def _streams_out(sch: s_tir.Schedule, conv, out) -> bool:
    """Whether a conv's tasks run tile-major (each thread its channel tiles over every row):
    an output larger than the caches that also outgrows its input STREAMING_EXPANSION times
    or more. Row-major, a thread wrote every plane's rows in turn (MobileNetV2's 16 -> 96
    channels at 112x112, 4.8 MB: 96 output streams at once) and the conv ran 0.35 ms,
    tile-major (24 streams) 0.20; where the input weighs more or the output fits the L2
    row-major won (32 -> 64 channels at 112x112, 3.2 MB: 0.24 against 0.30 ms tile-major;
    24 -> 144 at 56x56, 1.8 MB: 0.107 against 0.128; Emerald Rapids Xeon, 2 MB L2 per
    core, x86_64-avx512-vnni, 2 threads). So gated: MobileNetV2 NCHW 0.983x (its conv 0.436
    -> 0.229 ms by per-call minimums), SSD-Lite NCHW 0.959x (bench/ab.py, 9 rounds). Since
    then planes of whole pixel panels (those 112x112 convs among them) run on nchw_panels,
    whose tasks are panels of pixels; this gate is left to rows with a tail."""
    written = sch.get(out).writes[0].source
    read = sch.get(conv).reads[0].source
    out_bytes = elements(sch, out) * written.dtype.bits // 8
    in_elements = math.prod(int(dim) for dim in read.shape)
    return (out_bytes > STREAMING_OUTPUT_BYTES
            and elements(sch, out) >= STREAMING_EXPANSION * in_elements)


def _tile_width(sch: s_tir.Schedule, conv) -> int:
    """Output channels per tile of conv2d_nchw_pixels (its accumulator's channel axis)."""
    return extent(sch, sch.get_loops(conv)[3])


def _channel_tile_tasks(sch: s_tir.Schedule, conv, batch, channel):
    """The epilogue's channel loop split into the conv's tiles, one parallel task per
    (batch, tile); returns the task loop and the channel loop within a tile."""
    tile, inner = sch.split(channel, [None, _tile_width(sch, conv)])
    task = sch.fuse(batch, tile)
    sch.parallel(task)
    return task, inner


def _vectorize_tile(sch: s_tir.Schedule, block, ic, channel, lane) -> None:
    """A register tile: its channels unrolled, its pixels one vector, and its accumulators'
    zeroing split off before the input-channel loop `ic`, scheduled the same way."""
    sch.unroll(channel)
    sch.vectorize(lane)
    init = sch.decompose_reduction(block, ic)
    *_, init_channel, init_lane = sch.get_loops(init)
    sch.unroll(init_channel)
    sch.vectorize(init_lane)


def _row_parts(sch: s_tir.Schedule, col, lanes: int) -> list[str]:
    """Names of the blocks that compute a row's whole vectors and its tail: the row loop
    is partitioned when `lanes` does not divide it (TVM names each part after the block
    and the loop variable: BLOCK_x0, BLOCK_x1)."""
    width = extent(sch, col)
    whole = width // lanes * lanes
    if whole == width:
        return [BLOCK]
    variable = sch.get(col).loop_var.name
    sch.loop_partition(col, [whole, None])
    return [f"{BLOCK}_{variable}0", f"{BLOCK}_{variable}1"]

"""NCHW 1x1 convs as a GEMM over pixel panels (x86): the output plane is out[o, p] =
sum_i W[o, i] * in[i, p] with the pixels p contiguous, so a register tile of
PANEL_VECTORS pixel vectors times a few output channels (4 x 6 accumulators on AVX-512,
4 x 3 on AVX2) reads per input channel 4 vector loads and 6 broadcast weights for 24
FMAs, and writes each accumulator as a vector of one output plane: no transpose.

Each parallel task is a panel of the plane's pixels (PANEL_BYTES of input at most, at
least MIN_TASKS of them) and runs every channel tile over it, so the panel's input rows
stay in the core's cache while the weights stream; conv2d_nchw_pixels' one-vector tile
(24 channels x 1 vector) instead ran each channel tile over the whole plane and re-read
the input from C planes apart per tile. Against the old code (the packed tile transposed
into planes, or the one-vector tile where that paid), per conv on an Intel Xeon (Emerald
Rapids, x86_64-avx512-vnni, 2 threads, per-call minimums of 4 interleaved rounds):
128 -> 128 channels at 56x56 0.68 -> 0.41 ms, 64 -> 64 0.25 -> 0.17, 144 -> 24 0.142 ->
0.083, 24 -> 144 0.181 -> 0.083; MobileNetV2 NCHW (its 56x56 and 112x112 convs) 1.48 ->
1.24x of packed by summed op minimums.

Only planes of whole panels of vectors (56x56, 112x112: H*W a multiple of 4 vectors);
28x28 (49 vectors) as 7-vector tiles of 3 channels was mixed (32 -> 192 0.80x, 256 ->
256 1.15x) and keeps conv2d_nchw_pixels' choices.
"""

from __future__ import annotations

from tvm import s_tir

from edgec.codegen.generic_schedule import extent

PANEL_VECTORS = 4
# Input bytes of one task's panel (its K input rows of pixels): 256 KB held better than
# 64 KB on 128 -> 128 channels at 56x56 (0.41 against 0.47 ms); 64 -> 64 preferred the
# smaller one (0.17 against 0.20). MIN_TASKS keeps both threads busy at the end (7
# panels of MobileNetV2's 32 -> 16 conv at 112x112 left one thread a panel behind).
PANEL_BYTES = 256 << 10
MIN_TASKS = 8
# Fewer channels per tile than this and the weight broadcasts outweigh the panel's reuse.
_FEWEST_CHANNELS = 3


def panel_channels(out_channels: int, pixels: int, lanes: int,
                   vector_registers: int) -> int | None:
    """Output channels per register tile of a panel conv, None where the conv is not one: the
    plane is no whole number of panels, or no channel count from _FEWEST_CHANNELS up to the
    accumulators' share of the registers (3/4 of them) divides the output channels (the
    schedule writes each tile's planes straight from registers, with no padded tile)."""
    if pixels % (PANEL_VECTORS * lanes):
        return None
    most = vector_registers * 3 // 4 // PANEL_VECTORS
    fitting = [c for c in range(_FEWEST_CHANNELS, most + 1) if out_channels % c == 0]
    return max(fitting) if fitting else None


def is_panel_conv(sch: s_tir.Schedule, conv) -> bool:
    return bool(int(sch.get(conv).annotations.get("edgec_panels", 0)))


def schedule_panels(sch: s_tir.Schedule, conv, out, tile_width: int, lanes: int) -> None:
    """The flat epilogue `out` (batch, channel, pixel) split into tasks of a pixel panel,
    each running every channel tile over its panel, the conv's tile (channels x
    PANEL_VECTORS vectors) computed where the epilogue stores it, from registers."""
    width = extent(sch, sch.get_loops(out)[3])
    sch.transform_block_layout(out, lambda b, c, y, x: (b, c, y * width + x))  # one run
    batch, channel, pixels = sch.get_loops(out)
    k = extent(sch, sch.get_loops(conv)[-1])
    groups = extent(sch, pixels) // (PANEL_VECTORS * lanes)
    group_bytes = k * PANEL_VECTORS * lanes * 4
    per_task = max([g for g in range(1, groups + 1) if groups % g == 0
                    and g * group_bytes <= PANEL_BYTES and groups // g >= MIN_TASKS] or [1])
    tile, inner = sch.split(channel, [None, tile_width])
    panel, group, vector, lane = sch.split(pixels, [groups // per_task, per_task,
                                                   PANEL_VECTORS, lanes])
    sch.reorder(batch, panel, tile, group, inner, vector, lane)
    sch.parallel(sch.fuse(batch, panel))
    sch.compute_at(conv, group)
    sch.unroll(inner)
    sch.unroll(vector)
    sch.vectorize(lane)
    *_, channel, col, ic = sch.get_loops(conv)
    conv_vector, conv_lane = sch.split(col, [PANEL_VECTORS, lanes])
    sch.reorder(ic, channel, conv_vector, conv_lane)
    sch.unroll(channel)
    sch.unroll(conv_vector)
    sch.vectorize(conv_lane)
    init = sch.decompose_reduction(conv, ic)
    *_, init_channel, init_vector, init_lane = sch.get_loops(init)
    sch.unroll(init_channel)
    sch.unroll(init_vector)
    sch.vectorize(init_lane)

"""NCHW 1x1 convs as a GEMM over pixel panels (x86): the output plane is out[o, p] =
sum_i W[o, i] * in[i, p] with the pixels p contiguous, so a register tile of a few pixel
vectors times up to 6 output channels (4 x 6 accumulators on AVX-512, 2 x 6 on AVX2)
reads per input channel 4 vector loads and 6 broadcast weights for 24 FMAs (AVX-512),
and writes each accumulator as a vector of one output plane: no transpose.

Each parallel task is a panel of the plane's pixels (PANEL_BYTES of input at most, at
least MIN_TASKS of them) and runs every channel tile over it, so the panel's input rows
stay in the core's cache while the weights stream; conv2d_nchw_pixels' one-vector tile
(24 channels x 1 vector) instead ran each channel tile over the whole plane and re-read
the input from C planes apart per tile. Against the old code (the packed tile transposed
into planes, or the one-vector tile where that paid), per conv on an Intel Xeon (Emerald
Rapids, x86_64-avx512-vnni, 2 threads, per-call minimums of 4 interleaved rounds):
128 -> 128 channels at 56x56 0.65 -> 0.33 ms, 64 -> 64 0.112 -> 0.078, 144 -> 24 0.103
-> 0.070, 24 -> 144 0.130 -> 0.072; MobileNetV2 NCHW 0.89x, SSD-Lite 0.84x, ResNet-50
0.92x, MobileNetV1 0.94x (bench/ab.py, 7 rounds). Going over a task's panel group by
group (each group's input in L1 across the channel tiles) lost: 0.38 ms on the 128-channel
conv, 0.13 on 24 -> 144.

Only planes of whole panels: on AVX-512 56x56 and 112x112 (4 vectors of 16 divide the
plane), not 28x28 (49 vectors), where 1-vector and 7-vector panels ran level with the old
code; on AVX2 28x28 too (2 vectors of 8), where panels ran 1.2-1.6x faster than the
transposed packed tile in MobileNetV2. On AVX2 4-vector panels of 3 channels lost to the
one-vector tile (MobileNetV2's 24 -> 144 convs at 56x56 1.2x slower); 2 x 6 are level
with it there.
"""

from __future__ import annotations

from tvm import s_tir

from edgec.codegen.generic_schedule import extent

# Input bytes of one task's panel (its K input rows of pixels): 256 KB held better than
# 64 KB on 128 -> 128 channels at 56x56 (0.41 against 0.47 ms); 64 -> 64 preferred the
# smaller one (0.17 against 0.20). MIN_TASKS keeps both threads busy at the end (7
# panels of MobileNetV2's 32 -> 16 conv at 112x112 left one thread a panel behind).
PANEL_BYTES = 256 << 10
MIN_TASKS = 8
# Channels per tile: fewer than 3 and the weight broadcasts outweigh the panel's reuse;
# 6 broadcasts per 4 vector loads keep the load ports under the FMAs.
_FEWEST_CHANNELS = 3
_MOST_CHANNELS = 6


def panel_tile(out_channels: int, pixels: int, lanes: int,
               vector_registers: int) -> tuple[int, int] | None:
    """(pixel vectors, output channels) of a panel conv's register tile: 3/4 of the
    registers as accumulators, up to _MOST_CHANNELS channels by as many vectors as that
    leaves (4 x 6 of 32 registers, 2 x 6 of 16). None where the conv is not one: the plane
    is no whole number of panels, or no channel count from _FEWEST_CHANNELS up to
    _MOST_CHANNELS divides the output channels (the schedule writes each tile's planes
    straight from registers, with no padded tile)."""
    vectors = vector_registers * 3 // 4 // _MOST_CHANNELS
    if pixels % (vectors * lanes):
        return None
    fitting = [c for c in range(_FEWEST_CHANNELS, _MOST_CHANNELS + 1) if out_channels % c == 0]
    return (vectors, max(fitting)) if fitting else None


def is_panel_conv(sch: s_tir.Schedule, conv) -> bool:
    return bool(int(sch.get(conv).annotations.get("edgec_panels", 0)))


def schedule_panels(sch: s_tir.Schedule, conv, out, tile_width: int, lanes: int) -> None:
    """The flat epilogue `out` (batch, channel, pixel) split into tasks of a pixel panel,
    each running every channel tile over its panel, the conv's tile (channels x the
    panel's vectors) computed where the epilogue stores it, from registers."""
    vectors = int(sch.get(conv).annotations["edgec_panels"])
    width = extent(sch, sch.get_loops(out)[3])
    sch.transform_block_layout(out, lambda b, c, y, x: (b, c, y * width + x))  # one run
    batch, channel, pixels = sch.get_loops(out)
    k = extent(sch, sch.get_loops(conv)[-1])
    groups = extent(sch, pixels) // (vectors * lanes)
    group_bytes = k * vectors * lanes * 4
    per_task = max([g for g in range(1, groups + 1) if groups % g == 0
                    and g * group_bytes <= PANEL_BYTES and groups // g >= MIN_TASKS] or [1])
    tile, inner = sch.split(channel, [None, tile_width])
    panel, group, vector, lane = sch.split(pixels, [groups // per_task, per_task, vectors,
                                                   lanes])
    sch.reorder(batch, panel, tile, group, inner, vector, lane)
    sch.parallel(sch.fuse(batch, panel))
    sch.compute_at(conv, group)
    sch.unroll(inner)
    sch.unroll(vector)
    sch.vectorize(lane)
    *_, channel, col, ic = sch.get_loops(conv)
    conv_vector, conv_lane = sch.split(col, [vectors, lanes])
    sch.reorder(ic, channel, conv_vector, conv_lane)
    sch.unroll(channel)
    sch.unroll(conv_vector)
    sch.vectorize(conv_lane)
    init = sch.decompose_reduction(conv, ic)
    *_, init_channel, init_vector, init_lane = sch.get_loops(init)
    sch.unroll(init_channel)
    sch.unroll(init_vector)
    sch.vectorize(init_lane)

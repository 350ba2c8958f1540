"""Packed 1x1 convs of many input channels with AVX2: the reduction in blocks whose weights
stay in L1 while the tile runs over the whole plane (ONNX Runtime's MLAS sums its NCHWc
pointwise convs over blocks of input channels so, accumulating into the output).

PackedConv's tile runs one row of pixels over all input channels per task: a 1x1 conv of
1024 channels at 7x7 streams a 64 KB weight panel (two 8-channel chunks) from L2 for every
7 pixels. Here a task is a pair of output chunks over every pixel of the plane; its
reduction is split into blocks of 64 input channels (4 KB of weights) outside the pixel
tiles, so each block is read from L2 once and from L1 by every tile after it, and the
accumulators go to the output between blocks (8 vector loads and stores per 512 FMAs).
Per call, weights rotated through 8 copies so they come from L3 as in a model (Ice Lake
Xeon, family 6 model 106, x86_64 = AVX2 code, 2 threads, best of 7): 1024 -> 1024 at 7x7
1.081 -> 0.772 ms, 512 -> 512 at 14x14 0.860 -> 0.744; blocks of 128 channels 0.966 and
0.932; 256 -> 256 at 28x28 lost (0.630 -> 0.781: its 16 KB panel already fits L1), hence
REDUCTION_CHANNELS. In the models (untuned packed builds, bench/ab.py 9 rounds, same Xeon
and code): ResNet-50 0.892x, MobileNetV2 0.946x, SSD-Lite 0.949x, PP-LCNet 0.952x,
MobileNetV3-Small 0.963x, MobileNetV1 0.983x, SqueezeNet 1.008x (one 512 -> 64 conv: noise);
per call ResNet-50's 512 -> 128 at 28x28 0.84 -> 0.62 ms, 1024 -> 256 at 14x14 0.70 ->
0.59, 7x7 ones 0.87-0.98 -> 0.68-0.69, MobileNetV1's 1024 -> 1024 at 7x7 0.945 -> 0.696;
two lost: MobileNetV1's 512 -> 512 at 14x14 (0.562 -> 0.59) and a ResNet-50 stride-2
projection (1.325 -> 1.417), the rule's next refinement. With AVX-512 (two-register
chunks, a 4 x 4-register tile) the split ran 0.93-0.99x per call: not taken there yet.
"""

from __future__ import annotations

from tvm import s_tir

from edgec.codegen.generic_schedule import extent
from edgec.tvm_compat.llvm_target import is_aarch64, vector_registers

# Input channels from which a packed 1x1 conv runs its reduction in blocks (AVX2).
REDUCTION_CHANNELS = 512
BLOCK_CHANNELS = 64  # per reduction block: 4 KB of weights for two 8-channel chunks
_TILE_PIXELS = 4  # x 2 chunks = 8 accumulators, as AVX2's paired tile
_CHUNKS = 2


def applies(sch: s_tir.Schedule, conv, loops: list, target) -> bool:
    """Whether PackedConv's dense float conv `conv` (loops batch, chunk, row, col, lane,
    icc, icb, kh, kw) runs in reduction blocks: AVX2, 1x1, REDUCTION_CHANNELS or more input
    channels in whole blocks, an even number of output chunks."""
    if len(loops) != 9 or is_aarch64(target) or vector_registers(target) >= 32:
        return False
    _, chunk, _, _, _, icc, icb, kh, kw = (extent(sch, loop) or 0 for loop in loops)
    channels = icc * icb
    return (sch.get(conv).name_hint == "conv2d_nchwc" and kh == kw == 1 and chunk % _CHUNKS == 0
            and channels >= REDUCTION_CHANNELS and icb and BLOCK_CHANNELS % icb == 0
            and channels % BLOCK_CHANNELS == 0)


def schedule(sch: s_tir.Schedule, conv, epilogue: list, loops: list) -> None:
    """One parallel task per pair of output chunks; in it, per block of BLOCK_CHANNELS
    input channels, tiles of _TILE_PIXELS pixels of the flattened plane (the last one
    guarded where they do not divide it) accumulate into the output; the epilogue runs
    over the task's chunks after its last block."""
    batch, chunk, row, col, lane, icc, icb, kh, kw = loops
    chunk_outer, tile = sch.split(chunk, [None, _CHUNKS])
    block, block_chunks = sch.split(icc, [None, BLOCK_CHANNELS // (extent(sch, icb) or 1)])
    pixel_outer, pixel = sch.split(sch.fuse(row, col), [None, _TILE_PIXELS])
    sch.reorder(batch, chunk_outer, block, pixel_outer, block_chunks, icb, kh, kw, tile, pixel,
                lane)
    task = sch.fuse(batch, chunk_outer)
    sch.parallel(task)
    sch.unroll(tile)
    sch.unroll(pixel)
    sch.vectorize(lane)
    init = sch.decompose_reduction(conv, block)
    sch.vectorize(sch.get_loops(init)[-1])
    if epilogue:
        sch.reverse_compute_at(epilogue[-1], task)
        sch.vectorize(sch.get_loops(epilogue[-1])[-1])

"""8-bit NHWC convs with few input channels onto AMX tiles through an im2col copy.

An AMX tile row sums 64 input bytes of one pixel, so the row kernels take convs whose input
channels 64 divides (edgec.codegen.amx). An image stem (3 channels, 7x7 stride 2 in
ResNet-18/50) ran on the vpdpbusd kernel instead, its 3 channels padded to 4. Copied as
columns (each output pixel's 7 x 7 x 3 = 147 input bytes in a row, zeros up to 192), it is a
1x1 conv of 192 input channels, which the AMX row kernel takes as it is.

The copy is a pass of its own (112 x 112 x 192 bytes for those stems): per output pixel
and kernel row, one run of KW x C bytes, contiguous in NHWC. Measured (this Xeon, Emerald
Rapids, x86_64-amx, 2 threads): ResNet-18 INT8's stem 0.31 -> 0.125 ms per call, its input
quantize with the copy 0.094 -> 0.117; the model 0.92x, ResNet-50 INT8 0.98x (bench/ab.py,
9 interleaved rounds).
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    elements,
    extent,
    root_blocks,
    schedule_named,
)
from edgec.codegen.kernels import output_size

BLOCK = "im2col"
_CHUNK = 64  # bytes of one AMX tile row: the columns are padded to a multiple of it
# Columns at least this deep: fewer would pad a third or more of each tile row with zeros
# (a 3x3 RGB stem's 27 bytes would fill 27 of 64). The 7x7 RGB stem's 147 fills 147 of 192.
MIN_DEPTH = 96


def depth(in_channels: int, kernel_size) -> int:
    """Bytes per column: the taps' input bytes, padded to whole tile rows."""
    kh, kw = kernel_size
    return -(-(kh * kw * in_channels) // _CHUNK) * _CHUNK


# Input channels of a conv taken as columns, at most: an image's. SqueezeNet's 3x3 convs of
# 16-64 channels ran 1.9x slower as a model (the copy is 9 bytes per input byte, and
# vpdpbusd wastes nothing on 16 channels).
MAX_CHANNELS = 4


def applies(in_channels: int, kernel_size, groups: int, cpu) -> bool:
    """Whether an 8-bit dense NHWC conv runs as columns on AMX: AMX tiles, an image's few
    input channels, a kernel whose taps fill at least MIN_DEPTH bytes of the column."""
    kh, kw = kernel_size
    return (cpu.int8_tiles == "amx" and groups == 1 and in_channels <= MAX_CHANNELS
            and kh * kw * in_channels >= MIN_DEPTH)


def columns(data, kernel_size, strides, padding, dilation, depth_to: int):
    """(N, H, W, C) 8-bit data -> (N, OH, OW, depth_to): column k of output pixel (y, x) is
    input channel k % C of tap (k // (KW*C), k // C % KW), zero past the taps and in the
    padding."""
    n, height, width, channels = (int(d) for d in data.shape)
    (kh_size, kw_size), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    top, left, bottom, right = padding
    out_h, out_w = output_size(height, width, kernel_size, strides, padding, dilation)
    taps = kh_size * kw_size * channels
    zero = tirx.const(0, data.dtype)

    def value(b, y, x, k):
        kh, kw, c = k // (kw_size * channels), k // channels % kw_size, k % channels
        iy, ix = y * sh + kh * dh - top, x * sw + kw * dw - left
        inside = (tirx.all(k < taps, iy >= 0, iy < height, ix >= 0, ix < width)
                  if any(padding) else k < taps)
        return tirx.if_then_else(inside, data[b, iy, ix, c], zero)

    return te.compute((n, out_h, out_w, depth_to), value, name=BLOCK,
                      attrs={"edgec_taps": [kh_size, kw_size * channels],
                             "edgec_padded": int(any(padding))})


def column_weights(weight: np.ndarray, kernel_layout: str, depth_to: int) -> np.ndarray:
    """Weights in `kernel_layout` (OHWI or HWIO) as the 1x1 OHWI weights of the columns:
    (O, 1, 1, depth_to), tap-major like `columns`, zeros past the taps."""
    ohwi = np.transpose(weight, [kernel_layout.index(a) for a in "OHWI"])
    flat = ohwi.reshape(ohwi.shape[0], -1)
    padded = np.zeros((flat.shape[0], depth_to), dtype=weight.dtype)
    padded[:, :flat.shape[1]] = flat
    return padded.reshape(flat.shape[0], 1, 1, depth_to)


class Im2col:
    """Schedule of a function holding the im2col block: what feeds it (the input's
    quantize and pad, fused before it) on the generic schedule; the columns parallel over
    output rows, and per pixel the taps' part split into kernel rows, each one run of
    KW x C input bytes (no per-byte index arithmetic), the zero tail a loop of its own."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        return schedule_named(func, BLOCK, _schedule)


def _schedule(sch) -> None:
    blocks = root_blocks(sch)
    index = [sch.get(b).name_hint for b in blocks].index(BLOCK)
    # What feeds the columns (the input's quantize, pad and transpose to NHWC): each
    # elementwise run inlined into its last block, the rest passes of their own (the
    # quantize vectorized along the rows, then the pad and transpose moving bytes). All
    # inlined into the columns, each input value was quantized again for every column
    # holding it (~9x for a 7x7 stride-2 stem): 1.1 ms where the conv took 0.28; inlined
    # into the transpose, 0.18 ms; in passes 0.113-0.121, of which the columns ~2/3.
    producers = blocks[:index]
    for block, reader in zip(producers, producers[1:], strict=False):
        if elements(sch, block) == elements(sch, reader):
            sch.compute_inline(block)
        else:  # a pad reads it
            ParallelVectorize.schedule_block(sch, block)
    if producers:
        ParallelVectorize.schedule_block(sch, producers[-1])
    block = blocks[index]
    annotations = sch.get(block).annotations
    kernel_rows, run = (int(t) for t in annotations["edgec_taps"])
    batch, row, col, k = sch.get_loops(block)
    sch.parallel(sch.fuse(batch, row))
    taps = kernel_rows * run
    parts = sch.loop_partition(k, [taps, None]) if extent(sch, k) > taps else [k]
    if not int(annotations["edgec_padded"]):
        _, byte = sch.split(parts[0], [kernel_rows, run])
        sch.unroll(byte)
    if len(parts) > 1:
        sch.vectorize(parts[1])

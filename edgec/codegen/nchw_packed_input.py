"""NCHW 1x1 convs that read a packed copy of their input (x86): where that pays, and the
accumulation of kernels.conv2d_nchw_packed_out over such a copy."""

from __future__ import annotations

from tvm import te

from edgec.codegen.plain_kernels import is_pointwise

# Input channels from which a 1x1 NCHW conv copies its input to NCHW{block}c before the
# transposed tile (kernels.conv2d_nchw_packed_out's in_block), and that block, by ISA.
# AVX2: the tile is 14 pixels x one vector of channels with 16 registers: a task's pass over
# 512 input channels at 14x14 broadcasts from ~900 lines, 56 bytes of each, more than L1
# holds, for half the FMAs per line of AVX-512's two-vector tile. From the copy it reads
# whole lines, 8 channels each: MobileNetV1's 512 -> 512 convs at 14x14 1.00 -> 0.63 ms a
# call (packed 0.62), 1024 -> 1024 at 7x7 1.30 -> 0.85 (1.09), 512 -> 1024 0.63 -> 0.43,
# 256 -> 512 0.42 -> 0.37; its sum of per-call minimums 11.19 -> 8.63 ms (packed 8.53; Ice
# Lake Xeon, family 6 model 106, x86_64 = AVX2 code, 2 threads, 7 interleaved rounds).
# AVX-512: a copy to NCHW8c ran level (0.54 -> 0.56 on those 512-channel convs), one to
# NCHW16c (a pixel's 16 channels one whole line) from 128 channels is faster on every
# model it touches, whole untuned NCHW builds by bench/ab.py (9 rounds, same Ice Lake,
# AVX-512 code): MobileNetV1 0.837x, ResNet-50 0.934x, SqueezeNet 0.956x, SSD-Lite 0.967x,
# ShuffleNetV2 0.969x, MobileNetV2 0.971x, MobileNetV3-Small 0.992x; PP-LCNet per call
# 256 -> 256 at 14x14 0.150 -> 0.119 ms (packed 0.099; NCHW8c 0.126), 512 -> 512 at 7x7
# 0.178 -> 0.141, 128 -> 256 at 28x28 0.165 -> 0.132, its sum 2.73 -> 2.43 ms (packed
# 1.83). From 64 channels (PP-LCNet's 64 -> 128 conv at 28x28 0.100 -> 0.095 ms) or 32 whole
# models ran level: MobileNetV3-Small 1.025x / 1.001x, MobileNetV2 0.992x / 1.017x.
# AVX2 from 128 channels ran level: MobileNetV2 0.995x, V3-Small 1.030x, SSD-Lite 0.992x.
_PACKED_INPUT = {"avx2": (256, 8), "avx512": (128, 16)}  # (from channels, block)


def packed_input_block(channels: int, kernel_size, strides, padding, dilation, cpu) -> int:
    """The block an NCHW conv's input is copied into before its transposed tile, 0 for none
    (see _PACKED_INPUT; NEON keeps the direct reads: not measured there)."""
    if cpu.arch != "x86_64" or not is_pointwise(kernel_size, strides, padding, dilation):
        return 0
    least, block = _PACKED_INPUT["avx2" if cpu.vector_registers < 32 else "avx512"]
    return block if channels >= least and channels % block == 0 else 0


def conv_on_packed_input(data, kernel, out_dtype, in_block: int):
    """conv2d_nchw_packed_out's accumulation for a 1x1 stride-1 unpadded conv, its input
    copied to NCHW{in_block}c first; the reduction (channel blocks, lanes, kh, kw) is the
    packed layout's dense one, which PackedConv schedules as such."""
    n, i_channels, height, width = (int(d) for d in data.shape)
    o_chunks, _, _, _, block = (int(d) for d in kernel.shape)
    packed_in = te.compute((n, i_channels // in_block, height, width, in_block),
                           lambda b, cc, y, x, c: data[b, cc * in_block + c, y, x],
                           name="data_pack")
    icc = te.reduce_axis((0, i_channels // in_block), name="icc")
    icb = te.reduce_axis((0, in_block), name="icb")
    kh = te.reduce_axis((0, 1), name="kh")
    kw = te.reduce_axis((0, 1), name="kw")
    return te.compute(
        (n, o_chunks, height, width, block),
        lambda b, oc, y, x, ob: te.sum(
            packed_in[b, icc, y, x, icb].astype(out_dtype)
            * kernel[oc, icc * in_block + icb, kh, kw, ob].astype(out_dtype),
            axis=[icc, icb, kh, kw]),
        name="conv2d_nchw_packed_out",
    )

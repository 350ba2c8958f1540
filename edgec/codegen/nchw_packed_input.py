"""NCHW 1x1 convs that read a packed copy of their input (AVX2): where that pays, and the
accumulation of kernels.conv2d_nchw_packed_out over such a copy."""

from __future__ import annotations

from tvm import te

from edgec.codegen.plain_kernels import is_pointwise

# Input channels from which a 1x1 NCHW conv on AVX2 copies its input to NCHW8c before the
# transposed tile (kernels.conv2d_nchw_packed_out's in_block). That tile is 14 pixels x one
# vector of channels with 16 registers: a task's pass over 512 input channels at 14x14
# broadcasts from ~900 lines, 56 bytes of each, more than L1 holds, for half the FMAs per
# line of AVX-512's two-vector tile. From the copy it reads whole lines, 8 channels each:
# MobileNetV1's 512 -> 512 convs at 14x14 1.00 -> 0.63 ms a call (packed 0.62), 1024 ->
# 1024 at 7x7 1.30 -> 0.85 (1.09), 512 -> 1024 0.63 -> 0.43, 256 -> 512 0.42 -> 0.37; its
# sum of per-call minimums 11.19 -> 8.63 ms (packed 8.53; Ice Lake Xeon, family 6 model 106,
# x86_64 = AVX2 code, 2 threads, 7 interleaved rounds). AVX-512 ran level (0.54 -> 0.56 on
# the 512-channel convs), so it keeps the direct reads.
_PACKED_INPUT_CHANNELS = 256
_PACKED_INPUT_BLOCK = 8


def packed_input_block(channels: int, kernel_size, strides, padding, dilation, cpu) -> int:
    """The block an NCHW conv's input is copied into before its transposed tile, 0 for none
    (see _PACKED_INPUT_CHANNELS)."""
    pointwise = is_pointwise(kernel_size, strides, padding, dilation)
    avx2 = cpu.arch == "x86_64" and cpu.vector_registers < 32
    return _PACKED_INPUT_BLOCK if (pointwise and avx2 and channels >= _PACKED_INPUT_CHANNELS
                                   and channels % _PACKED_INPUT_BLOCK == 0) else 0


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

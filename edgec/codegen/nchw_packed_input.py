"""NCHW convs that read a packed copy of their input (x86; 1x1 convs, and strided ones):
where that pays, and the accumulation of kernels.conv2d_nchw_packed_out over such a copy."""

from __future__ import annotations

from tvm import te, tirx

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

# Strided convs (ResNet's 1x1 stride-2 downsamples, its 3x3 stride-2 convs) copy their
# input as well, from these many channels: the direct transposed tile broadcast every
# input value from a plane at stride 2, a line touched for each of its taps. A 1x1 conv's
# copy takes only the pixels it reads (a quarter at stride 2) and the conv is then the
# pointwise one; a kxk conv's copy is padded. Per call, AVX2 code (x86_64), then AVX-512
# (Ice Lake Xeon, family 6 model 106, 2 threads, per-call minimums of 5 interleaved
# rounds; packed in brackets): ResNet-50's 1x1 downsamples 256 -> 512 at 56 -> 28 2.33 ->
# 1.28 ms (1.46), 512 -> 1024 3.10 -> 1.15 (1.40), 1024 -> 2048 2.47 -> 1.48 (1.47); AVX-512
# 1.45 -> 0.94, 1.77 -> 0.82, 1.53 -> 1.07; its 3x3 convs 128 at 56 -> 28 2.09 -> 1.52
# (1.45), 256 at 28 -> 14 1.90 -> 1.37 (1.33); AVX-512 1.29 -> 1.06, 1.20 -> 1.11.
# ResNet-18's 64-channel 3x3 at 56 -> 28 0.87 -> 0.70 on AVX2 (packed 0.69) but 0.65 ->
# 0.69 on AVX-512, hence 128 there; 3x3 convs to 7x7 lost on both (ResNet-50's 512
# channels AVX-512 1.38 -> 1.53, ResNet-18's 256 on AVX2 0.86 -> 0.87): their copy stays
# direct (_STRIDED_MIN_WIDTH). ResNet-50 NCHW's sum of per-call minimums 54.6 -> 49.3 ms
# on AVX2 (packed 44.0), 39.4 -> 37.0 on AVX-512 (32.8).
_STRIDED = {"avx2": 64, "avx512": 128}  # from channels
_STRIDED_MIN_WIDTH = 14  # output columns from which a strided kxk conv copies


def _one_by_one_unpadded(kernel_size, padding) -> bool:
    """A 1x1 unpadded window: its copy need hold only the pixels the conv reads."""
    return tuple(int(k) for k in kernel_size) == (1, 1) and not any(int(p) for p in padding)


def packed_input_block(channels: int, kernel_size, strides, padding, dilation, out_w: int,
                       cpu) -> int:
    """The block an NCHW conv's input is copied into before its transposed tile, 0 for none
    (see _PACKED_INPUT and _STRIDED). NEON keeps the direct reads: by the rpi5 estimate
    (qemu counts x llvm-mca, Cortex-A76) the strided copies took ResNet-18 NCHW 81.94 ->
    81.00 ms and ResNet-50 224.33 -> 224.71, and it prices no cache misses, which is where
    the copy pays on x86."""
    if cpu.arch != "x86_64":
        return 0
    isa = "avx2" if cpu.vector_registers < 32 else "avx512"
    least, block = _PACKED_INPUT[isa]
    if not is_pointwise(kernel_size, strides, padding, dilation):
        strided = any(int(s) > 1 for s in strides)
        if not strided or not (_one_by_one_unpadded(kernel_size, padding)
                               or out_w >= _STRIDED_MIN_WIDTH):
            return 0
        least = _STRIDED[isa]
    return block if channels >= least and channels % block == 0 else 0


def conv_on_packed_input(data, kernel, out_dtype, in_block: int, strides, padding,
                         dilation, out_size: tuple[int, int]):
    """conv2d_nchw_packed_out's accumulation over a copy of its input in NCHW{in_block}c
    (`data_pack`): for an unpadded 1x1 conv the pixels it reads (then a stride-1 conv),
    else the whole input, padded. The reduction (channel blocks, lanes, kh, kw) is the
    packed layout's dense one, which PackedConv schedules as such."""
    n, i_channels, height, width = (int(d) for d in data.shape)
    o_chunks, _, kh_size, kw_size, block = (int(d) for d in kernel.shape)
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    chunks = i_channels // in_block
    if _one_by_one_unpadded((kh_size, kw_size), padding):
        packed_in = te.compute((n, chunks, *out_size, in_block),
                               lambda b, cc, y, x, c: data[b, cc * in_block + c, y * sh, x * sw],
                               name="data_pack")
        sh = sw = 1
    else:
        def padded(b, cc, y, x, c):
            inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
            return tirx.if_then_else(inside, data[b, cc * in_block + c, y - top, x - left],
                                     tirx.const(0, data.dtype))

        packed_in = te.compute((n, chunks, height + top + bottom, width + left + right,
                                in_block), padded, name="data_pack")
    icc = te.reduce_axis((0, chunks), name="icc")
    icb = te.reduce_axis((0, in_block), name="icb")
    kh = te.reduce_axis((0, kh_size), name="kh")
    kw = te.reduce_axis((0, kw_size), name="kw")
    return te.compute(
        (n, o_chunks, *out_size, block),
        lambda b, oc, y, x, ob: te.sum(
            packed_in[b, icc, y * sh + kh * dh, x * sw + kw * dw, icb].astype(out_dtype)
            * kernel[oc, icc * in_block + icb, kh, kw, ob].astype(out_dtype),
            axis=[icc, icb, kh, kw]),
        name="conv2d_nchw_packed_out",
    )

"""Compute definitions edgec adds to TVM: convs on packed NCHW{b}c activations, image
stems, classifier heads, and the weight packings they read.

TVM 0.27 cannot legalize a Relax conv2d whose layouts carry a channel block, so the packed
layout chosen by edgec.layout is lowered here (see edgec.codegen.legalize) to TE compute that
edgec.codegen.schedules and MetaSchedule then schedule. Weights use "OIHW{b}o": the output channel
block is innermost, the vector the inner FMA loop broadcasts an input value against. The
packings put (constant) weights into the exact order each micro-kernel reads them.
"""

from __future__ import annotations

from tvm import te, topi

from edgec.codegen.nchw_packed_input import conv_on_packed_input


def pack_dense_weight(weight, tile: int):
    """A K x N weight as (ceil(N/tile), K, tile), zero-padded: each task of the head then
    streams one contiguous slab. Row-major, every 8 output columns strided through all K rows
    (MobileNetV2's 1280 x 1000 head took 0.11 ms, twice ONNX Runtime's)."""
    k_size, n_size = (int(d) for d in weight.shape)
    return te.compute(
        ((n_size + tile - 1) // tile, k_size, tile),
        lambda t, k, v: te.if_then_else(t * tile + v < n_size, weight[k, t * tile + v], 0.0),
        name="dense_weight_pack",
    )


def dense_packed(data, weight, n_size: int):
    """data (M, K) x weight packed by pack_dense_weight -> (M, n_size)."""
    m_size, k_size = (int(d) for d in data.shape)
    tiles, _, tile = (int(d) for d in weight.shape)
    k = te.reduce_axis((0, k_size), name="k")
    accumulated = te.compute(
        (m_size, tiles, tile),
        lambda m, t, v: te.sum(data[m, k] * weight[t, k, v], axis=[k]),
        name="dense_packed",
    )
    return te.compute((m_size, n_size), lambda m, n: accumulated[m, n // tile, n % tile],
                      name="dense_unpack")


def output_size(height: int, width: int, kernel_size, strides, padding,
                dilation) -> tuple[int, int]:
    """(out_h, out_w) of a conv or pool window on a height x width input; padding is [top,
    left, bottom, right] as in Relax."""
    (kh_size, kw_size), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    top, left, bottom, right = padding
    return ((height + top + bottom - (kh_size - 1) * dh - 1) // sh + 1,
            (width + left + right - (kw_size - 1) * dw - 1) // sw + 1)


def sliding_window(data, kernel_size, strides, padding, dilation, out_dtype):
    """Pad NCHW or NCHW{b}c data for a conv; returns (out_h, out_w, kh, kw, window) with
    window(b, channel, y, x[, lane]) the input under tap (kh, kw) of output pixel (y, x),
    cast to out_dtype. padding is [top, left, bottom, right] as in Relax."""
    (height, width), (kh_size, kw_size) = (int(d) for d in data.shape[2:4]), kernel_size
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    out_h, out_w = output_size(height, width, kernel_size, strides, padding, dilation)
    lanes = [0] * (len(data.shape) - 4)
    padded = topi.nn.pad(data, [0, 0, top, left, *lanes], [0, 0, bottom, right, *lanes],
                         name="data_pad")
    kh = te.reduce_axis((0, kh_size), name="kh")
    kw = te.reduce_axis((0, kw_size), name="kw")

    def window(b, channel, y, x, *lane):
        return padded[b, channel, y * sh + kh * dh, x * sw + kw * dw, *lane].astype(out_dtype)

    return out_h, out_w, kh, kw, window


def pack_stem_kernel(kernel, block: int):
    """OIHW weights as (ceil(O/b), I, KH, KW, b), b the accumulator width: each tap's
    output channels one vector load (inlined from OIHW, every FMA of ResNet-18's stem
    gathered 16 scalars). Output channels b does not divide (plain NCHW convs) are
    zero-padded."""
    o_channels, i_channels, kh_size, kw_size = (int(d) for d in kernel.shape)

    def packed(oc, ic, kh, kw, ob):
        channel = oc * block + ob
        if o_channels % block == 0:
            return kernel[channel, ic, kh, kw]
        return te.if_then_else(channel < o_channels,
                               kernel[te.min(channel, o_channels - 1), ic, kh, kw],
                               te.const(0, kernel.dtype))

    return te.compute(((o_channels + block - 1) // block, i_channels, kh_size, kw_size, block),
                      packed, name="stem_kernel_pack")


def conv2d_nchw_packed_out(data, kernel, strides, padding, dilation, groups, out_dtype,
                           out_block: int, out_channels: int = 0, in_block: int = 0):
    """NCHW conv with kernel packed by pack_stem_kernel, computed on output channel blocks
    (vectorizable) and unpacked to NCHW{out_block}c, or to NCHW when out_block is 0 (the
    first `out_channels` of them when given: weights zero-padded to whole blocks).

    in_block: the conv first copies its input to NCHW{in_block}c (`data_pack`, a stage of
    its own; a 1x1 conv only the pixels it reads) and reduces over (channel blocks, lanes,
    kh, kw): each tile then reads a pixel's channels from whole lines, in_block at a time
    (nchw_packed_input says where that pays)."""
    o_chunks, i_channels, kh_size, kw_size, block = (int(d) for d in kernel.shape)
    n = int(data.shape[0])
    if in_block:
        out_h, out_w = output_size(*(int(d) for d in data.shape[2:4]), (kh_size, kw_size),
                                   strides, padding, dilation)
        packed = conv_on_packed_input(data, kernel, out_dtype, in_block, strides, padding,
                                      dilation, (out_h, out_w))
    else:
        ic = te.reduce_axis((0, i_channels), name="ic")
        out_h, out_w, kh, kw, window = sliding_window(data, (kh_size, kw_size), strides,
                                                       padding, dilation, out_dtype)
        packed = te.compute(
            (n, o_chunks, out_h, out_w, block),
            lambda b, oc, y, x, ob: te.sum(
                window(b, ic, y, x) * kernel[oc, ic, kh, kw, ob].astype(out_dtype),
                axis=[ic, kh, kw],
            ),
            name="conv2d_nchw_packed_out",
        )
    if out_block == block:
        return packed
    if out_block:
        tile = block // out_block
        return te.compute(
            (n, o_chunks * tile, out_h, out_w, out_block),
            lambda b, oc, y, x, ob: packed[b, oc // tile, y, x, oc % tile * out_block + ob],
            name="conv2d_unpack",
        )
    return te.compute(
        (n, out_channels or o_chunks * block, out_h, out_w),
        lambda b, c, y, x: packed[b, c // block, y, x, c % block],
        name="conv2d_unpack",
    )


def pack_float_kernel(kernel, tile: int):
    """OIHW{b}o weights as (O/(b*tile), I/b, KH, KW, b_in, tile*b_out): the micro-kernel
    of conv2d_nchwc_dense then streams them strictly in address order, which the hardware
    prefetcher keeps up with. Deep layers' weights come from DRAM on every inference
    (ResNet-18 has 45 MB of them): in OIHW{b}o order its 512-channel 3x3 conv took 0.95 ms
    instead of 0.59 ms."""
    o_chunks, i_channels, kh_size, kw_size, block = (int(d) for d in kernel.shape)
    return te.compute(
        (o_chunks // tile, i_channels // block, kh_size, kw_size, block, tile * block),
        lambda oo, icc, kh, kw, icb, ov: kernel[oo * tile + ov // block, icc * block + icb,
                                                kh, kw, ov % block],
        name="float_kernel_pack",
    )


def conv2d_nchwc_dense(data, kernel, strides, padding, dilation, groups, out_dtype):
    """Ungrouped conv2d on NCHW{b}c data with weights packed by pack_float_kernel.

    The accumulation runs on `tile` blocks at once, a (N, O/(b*tile), OH, OW, b*tile)
    tensor whose innermost axis the micro-kernel keeps in registers, and is then unpacked
    to NCHW{b}c (inlined into the epilogue by edgec.codegen.schedules).

    Returns:
        te.Tensor (N, O/b, OH, OW, b).
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_tiles, _, kh_size, kw_size, _, wide = (int(d) for d in kernel.shape)
    out_h, out_w, kh, kw, window = sliding_window(data, (kh_size, kw_size), strides, padding,
                                                   dilation, out_dtype)
    icc = te.reduce_axis((0, c_chunks), name="icc")
    icb = te.reduce_axis((0, block), name="icb")
    accumulated = te.compute(
        (n, o_tiles, out_h, out_w, wide),
        lambda b, oc, y, x, ov: te.sum(
            window(b, icc, y, x, icb) * kernel[oc, icc, kh, kw, icb, ov].astype(out_dtype),
            axis=[icc, icb, kh, kw],
        ),
        name="conv2d_nchwc",
    )
    return _unpack(accumulated, block)


def conv2d_nchwc(data, kernel, strides, padding, dilation, groups, out_dtype):
    """Grouped or depthwise conv2d with data (N, C/b, H, W, b) and kernel
    (O/b, C/groups, KH, KW, b); ungrouped ones use conv2d_nchwc_dense.

    Args:
        padding: [top, left, bottom, right] as in Relax.
    Returns:
        te.Tensor (N, O/b, OH, OW, b).
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_chunks, in_per_group, kh_size, kw_size, _ = (int(d) for d in kernel.shape)
    out_h, out_w, kh, kw, window = sliding_window(data, (kh_size, kw_size), strides, padding,
                                                   dilation, out_dtype)
    out_shape = (n, o_chunks, out_h, out_w, block)

    if groups == c_chunks * block and in_per_group == 1 and o_chunks == c_chunks:
        # Depthwise: lane ob of output chunk oc reads the same lane of input chunk oc.
        return te.compute(
            out_shape,
            lambda b, oc, y, x, ob: te.sum(
                window(b, oc, y, x, ob) * kernel[oc, 0, kh, kw, ob].astype(out_dtype),
                axis=[kh, kw],
            ),
            name="depthwise_conv2d_nchwc",
        )
    # Any other grouping: find each output channel's group, then its input channels.
    out_per_group = o_chunks * block // groups
    ic = te.reduce_axis((0, in_per_group), name="ic")

    def grouped(b, oc, y, x, ob):
        channel = (oc * block + ob) // out_per_group * in_per_group + ic
        return te.sum(
            window(b, channel // block, y, x, channel % block)
            * kernel[oc, ic, kh, kw, ob].astype(out_dtype),
            axis=[ic, kh, kw],
        )

    return te.compute(out_shape, grouped, name="group_conv2d_nchwc")


def pack_int8_kernel(kernel, tile: int):
    """OIHW{b}o int8 weights as (O/(b*tile), I/b, KH, KW, b/4, tile*b, 4): each output
    lane's 4 consecutive input channels side by side (the bytes one vpdpbusd, vpmaddubsw or
    sdot multiplies), the whole in the order conv2d_nchwc_int8's micro-kernel reads it."""
    o_chunks, i_channels, kh_size, kw_size, block = (int(d) for d in kernel.shape)
    return te.compute(
        (o_chunks // tile, i_channels // block, kh_size, kw_size, block // 4, tile * block, 4),
        lambda oo, icc, kh, kw, ic4, ov, ici: kernel[oo * tile + ov // block,
                                                     icc * block + ic4 * 4 + ici, kh, kw,
                                                     ov % block],
        name="int8_kernel_pack",
    )


def pack_int8_stem_kernel(kernel, wide: int):
    """An image stem's OIHW int8 weights (3 input channels) as pack_int8_kernel lays out a
    4-channel block: (O/wide, 1, KH, KW, 1, wide, 4), the 4th input channel's weights 0."""
    o_channels, i_channels, kh_size, kw_size = (int(d) for d in kernel.shape)
    return te.compute(
        (o_channels // wide, 1, kh_size, kw_size, 1, wide, 4),
        lambda oo, icc, kh, kw, ic4, ov, ici: te.if_then_else(
            ici < i_channels, kernel[oo * wide + ov, ici, kh, kw], te.const(0, kernel.dtype)),
        name="int8_stem_kernel_pack",
    )


def conv2d_nchw_int8_stem(data, kernel, strides, padding, dilation, groups, out_dtype,
                          out_block: int, dot: str):
    """An 8-bit NCHW image stem (at most 4 channels) on the dot-product instructions: the
    channels interleaved into one 4-byte group per pixel (the 4th a zero that meets zero
    weights), then conv2d_nchwc_int8 with one 4-channel input block, unpacked to
    NCHW{out_block}c. Each vpdpbusd then does 16 lanes x 4 channels of one tap: ResNet-18's
    7x7 stem as 49 instructions per 16 output channels instead of 147 FMAs."""
    n, channels, height, width = (int(d) for d in data.shape)
    interleaved = te.compute(
        (n, 1, height, width, 4),
        lambda b, c, y, x, i: te.if_then_else(i < channels, data[b, i, y, x],
                                              te.const(0, data.dtype)),
        name="stem_data_interleave",
    )
    return conv2d_nchwc_int8(interleaved, kernel, strides, padding, dilation, groups,
                             out_dtype, dot, out_block)


def conv2d_nchwc_int8(data, kernel, strides, padding, dilation, groups, out_dtype, dot,
                      out_block: int = 0, row_to: int = 0):
    """8-bit NCHW{b}c data x int8 kernel packed by pack_int8_kernel -> int32 NCHW{b}c, or
    NCHW{out_block}c when given.

    Like conv2d_nchwc_dense, it accumulates `tile` blocks per pixel and unpacks them. The
    innermost reduction runs over 4 consecutive input channels, which edgec.codegen.schedules
    tensorizes with the edgec.codegen.intrinsics kind `dot` (recorded on the block for it).
    Rows are computed `row_to` pixels long when that is longer (row_tails.int8_padded_width).
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_tiles, _, kh_size, kw_size, _, wide, _ = (int(d) for d in kernel.shape)
    out_h, out_w, kh, kw, window = sliding_window(data, (kh_size, kw_size), strides, padding,
                                                   dilation, out_dtype)
    icc = te.reduce_axis((0, c_chunks), name="icc")
    ic4 = te.reduce_axis((0, block // 4), name="ic4")
    ici = te.reduce_axis((0, 4), name="ici")
    column = padded_row(out_w, row_to)
    accumulated = te.compute(
        (n, o_tiles, out_h, max(out_w, row_to), wide),
        lambda b, oc, y, x, ov: te.sum(
            window(b, icc, y, column(x), ic4 * 4 + ici)
            * kernel[oc, icc, kh, kw, ic4, ov, ici].astype(out_dtype),
            axis=[icc, kh, kw, ic4, ici],
        ),
        name="conv2d_nchwc_int8",
        attrs={"edgec_dot": dot},
    )
    return _unpack(accumulated, out_block or block, out_w)


def padded_row(out_w: int, row_to: int):
    """The input column an output column reads in a row computed `row_to` pixels long: the
    pixels past the real `out_w` repeat the last one (they are cropped), so they read no
    padding the input does not have."""
    if row_to <= out_w:
        return lambda x: x
    return lambda x: te.min(x, out_w - 1)


def integer_sums_in_float(conv):
    """A TE conv of 8-bit data x int8 weights -> int32 that accumulates in float32 instead.

    For the 8-bit convs no dot-product instruction fits (image stems, depthwise convs) the
    int32 path multiplies with vpmulld, several times slower than an FMA. Each product is an
    integer of magnitude at most 255 * 128, so while the sum has at most
    MAX_FLOAT_EXACT_TERMS terms every partial sum stays below 2^24 and float32 holds it
    exactly: the same integers, at float speed (edgec.codegen.legalize checks the bound).
    """

    def compute(data, kernel, strides, padding, dilation, groups, out_dtype, *rest):
        # Converted once, not at every broadcast of the micro-kernel (3 extra instructions
        # per 2 FMAs made ResNet-18's INT8 stem slower than its FP32 one).
        as_float = te.compute(data.shape, lambda *i: data(*i).astype("float32"),
                              name="data_as_float")
        summed = conv(as_float, kernel, strides, padding, dilation, groups, "float32", *rest)
        return te.compute(summed.shape, lambda *i: summed(*i).astype(out_dtype),
                          name="exact_sum_cast")

    return compute


MAX_FLOAT_EXACT_TERMS = (1 << 24) // (255 * 128)  # 514


def _unpack(accumulated, block: int, out_w: int = 0):
    """(N, O/(b*t), OH, OW', b*t) accumulators as NCHW{b}c, OW' cropped to `out_w` when
    given; itself when t is 1 and nothing is cropped."""
    n, o_tiles, out_h, computed_w, wide = (int(d) for d in accumulated.shape)
    out_w = out_w or computed_w
    tile = wide // block
    if tile == 1 and out_w == computed_w:
        return accumulated
    return te.compute(
        (n, o_tiles * tile, out_h, out_w, block),
        lambda b, oc, y, x, ob: accumulated[b, oc // tile, y, x, oc % tile * block + ob],
        name="conv2d_nchwc_unpack",
    )

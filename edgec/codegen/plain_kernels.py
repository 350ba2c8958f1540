"""Compute definitions for convolutions in the plain layouts, NHWC and NCHW.

TVM's own lowering of these layouts, scheduled generically, ran ResNet-18 ~45x slower than
the packed layout (1.2-2.8 s against 23-40 ms). These kernels reuse the packed layout's
micro-kernel (edgec.codegen.schedules.PackedConv): they accumulate a row of output pixels
times `wide` output channels in registers, over weights packed at build time into the order
the micro-kernel streams them, and write the tile to the plain layout in the epilogue while
it is still in cache. Output channels that `wide` does not divide are zero-padded in the
weights and cropped in the epilogue (a 1000-class 1x1 conv, a 3-class segmentation head).
"""

from __future__ import annotations

from tvm import te, tirx, topi

from edgec.codegen.nchw_planes import clamped

# The block attribute of a conv computed over its plane as one row (flat_conv2d_nhwc_int8).
FLAT_PIXELS = "edgec_flat_pixels"


def padded_tiles(channels: int, wide: int) -> int:
    return (channels + wide - 1) // wide


def is_pointwise(kernel_size, strides, padding, dilation) -> bool:
    """Whether a conv is 1x1, stride 1, undilated and unpadded: a GEMM over its pixels."""
    return tuple(int(k) for k in kernel_size) == (1, 1) and not any(
        int(p) for p in padding) and all(int(s) == 1 for s in (*strides, *dilation))


def _weight_dims(kernel, layout: str) -> dict[str, int]:
    """{"O": .., "I": .., "H": .., "W": ..} of a weight in a plain layout (OHWI, HWIO, ...)."""
    return {axis: int(d) for axis, d in zip(layout, kernel.shape, strict=True)}


def _weight_at(kernel, layout: str, o, kh, kw, i):
    return kernel[tuple({"O": o, "H": kh, "W": kw, "I": i}[axis] for axis in layout)]


def pack_nhwc_kernel(kernel, layout: str, wide: int):
    """OHWI (ONNX through ConvertLayout) or HWIO (TFLite) weights as (ceil(O/wide), KH, KW,
    I, wide), zero-padded: for each tap and input channel, `wide` output channels are one
    contiguous vector load, and the micro-kernel of conv2d_nhwc_dense reads the whole in
    address order."""
    dims = _weight_dims(kernel, layout)
    o_channels = dims["O"]
    return te.compute(
        (padded_tiles(o_channels, wide), dims["H"], dims["W"], dims["I"], wide),
        lambda t, kh, kw, ic, v: te.if_then_else(
            t * wide + v < o_channels,
            _weight_at(kernel, layout, te.min(t * wide + v, o_channels - 1), kh, kw, ic),
            te.const(0, kernel.dtype)),
        name="nhwc_kernel_pack",
    )


def _tiles_overlap(lanes: int, channels: int) -> bool:
    """Whether the last depthwise tile overlaps the one before (depthwise_tile_start)."""
    return channels % lanes != 0 and channels >= lanes


def depthwise_tile_start(t, lanes: int, channels: int):
    """First channel of depthwise tile t. When `lanes` does not divide the channels, the
    last tile is moved back to end at the last channel, overlapping the one before: every
    tile is then a contiguous vector load in bounds (116 channels on 16 lanes: tiles at
    0, 16, ..., 96 and 100). Fewer channels than lanes: one tile, its lanes past the last
    channel clamped (a gather) and cropped."""
    if not _tiles_overlap(lanes, channels):
        return t * lanes
    return te.min(t * lanes, channels - lanes)


def _depthwise_channel(t, v, lanes: int, channels: int):
    c = depthwise_tile_start(t, lanes, channels) + v
    return te.min(c, channels - 1) if channels < lanes else c


def pack_nhwc_depthwise_kernel(kernel, layout: str, lanes: int):
    """Depthwise weights, OHWI (C, KH, KW, 1) or HWOI (KH, KW, C, 1), as (ceil(C/lanes), KH,
    KW, lanes) in the channel order of depthwise_tile_start."""
    dims = _weight_dims(kernel, layout)
    channels = dims["O"]
    return te.compute(
        (padded_tiles(channels, lanes), dims["H"], dims["W"], lanes),
        lambda t, kh, kw, v: _weight_at(kernel, layout,
                                        _depthwise_channel(t, v, lanes, channels), kh, kw, 0),
        name="nhwc_depthwise_kernel_pack",
    )


def _taps(height: int, width: int, kernel_size, strides, padding, dilation):
    """(out_h, out_w, kh, kw) of a conv on a height x width input: its output size and its
    tap reduction axes."""
    from edgec.codegen.kernels import output_size  # kernels imports this module

    out_h, out_w = output_size(height, width, kernel_size, strides, padding, dilation)
    return (out_h, out_w, te.reduce_axis((0, kernel_size[0]), name="kh"),
            te.reduce_axis((0, kernel_size[1]), name="kw"))


def _nhwc_window(data, kernel_size, strides, padding, dilation, out_dtype,
                 channels_to: int = 0):
    """Pad NHWC data (its channels too, with zeros up to `channels_to` when given); returns
    (out_h, out_w, kh, kw, window) with window(b, y, x, channel) the input under tap (kh, kw)
    of output pixel (y, x). padding is [top, left, bottom, right] as in Relax."""
    height, width = (int(d) for d in data.shape[1:3])
    out_h, out_w, kh, kw = _taps(height, width, kernel_size, strides, padding, dilation)
    (sh, sw), (dh, dw), (top, left, bottom, right) = strides, dilation, padding
    channel_pad = max(0, channels_to - int(data.shape[3]))
    padded = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, channel_pad],
                         name="data_pad")

    def window(b, y, x, channel):
        return padded[b, y * sh + kh * dh, x * sw + kw * dw, channel].astype(out_dtype)

    return out_h, out_w, kh, kw, window


# Image stems of up to this many taps read the image through the border test (_image_window),
# larger ones a padded copy: per broadcast the test is two clamps, two compares and a
# select, which left ResNet-18's 7x7 stem (49 taps, 4 FMAs per broadcast) ALU-bound: 0.694
# ms with the copy, 1.548 with the test. Per-call minimums, AVX-512, Ice Lake Xeon (family
# 6 model 106), 2 threads; NHWC input and a transpose before it: 0.924.
_BORDER_TEST_TAPS = 9


def _image_window(data, kernel_size, strides, padding, dilation, out_dtype):
    """_nhwc_window's (out_h, out_w, kh, kw, window) for NCHW data (an image an NHWC stem
    reads, edgec.layout.stems.read_nchw_images): up to _BORDER_TEST_TAPS taps read through
    the border test, no padded copy: the copy of 3x3 stems' images took as long as the
    stems' FMAs.
    Per-call minimums with the copy, then with this (AVX-512, Ice Lake Xeon, 2 threads):
    MobileNetV1's 3 -> 32 stem 0.135 -> 0.102 ms, MobileNetV3-Small's 3 -> 16 0.089 ->
    0.060, PP-LCNet's 0.094 -> 0.065, ShuffleNetV2's 3 -> 24 0.132 -> 0.109, U-Net's 3 -> 16
    at 224x224 0.247 -> 0.188 (with the NHWC input's transpose before them: 0.171, 0.115,
    0.131, 0.174, 0.232). The test selects a load whose indices are clamped into the image,
    not an if_then_else of the load, which TVM's vectorizer loaded lane by lane for each
    broadcast (ShuffleNetV2's stem 0.246). The condition is "the clamp changed nothing"
    (see nchw_planes.phase_planes)."""
    from edgec.codegen.kernels import sliding_window

    if kernel_size[0] * kernel_size[1] > _BORDER_TEST_TAPS:  # the packed kernels' window
        out_h, out_w, kh, kw, planes = sliding_window(data, kernel_size, strides, padding,
                                                      dilation, out_dtype)
        return out_h, out_w, kh, kw, lambda b, y, x, channel: planes(b, channel, y, x)
    height, width = (int(d) for d in data.shape[2:4])
    out_h, out_w, kh, kw = _taps(height, width, kernel_size, strides, padding, dilation)
    (sh, sw), (dh, dw), (top, left) = strides, dilation, padding[:2]

    def tested(b, y, x, channel):
        row, col = y * sh + kh * dh - top, x * sw + kw * dw - left
        safe_row, safe_col = clamped(row, height), clamped(col, width)
        return tirx.Select(tirx.all(safe_row == row, safe_col == col),
                           data[b, channel, safe_row, safe_col].astype(out_dtype),
                           te.const(0, out_dtype))

    return out_h, out_w, kh, kw, tested


def _unpack_nhwc(accumulated, channels: int, name: str, out_w: int = 0):
    """(N, T, OH, OW', wide) accumulators as (N, OH, OW, channels), OW' cropped to `out_w`
    when given."""
    n, _, out_h, computed_w, wide = (int(d) for d in accumulated.shape)
    out_w = out_w or computed_w
    return te.compute(
        (n, out_h, out_w, channels),
        lambda b, y, x, c: accumulated[b, c // wide, y, x, c % wide],
        name=name,
    )


def conv2d_nhwc_dense(data, kernel, strides, padding, dilation, groups, out_dtype,
                      out_channels: int, nchw_data: bool = False):
    """Ungrouped NHWC conv with weights packed by pack_nhwc_kernel -> (N, OH, OW, O).

    Accumulates (N, ceil(O/wide), OH, OW, wide), the same register tile as the packed
    layout's conv2d_nchwc_dense; the reduction runs over taps, then input channels, which
    NHWC keeps contiguous for each pixel. `nchw_data`: the input is an NCHW image."""
    n = int(data.shape[0])
    tiles, kh_size, kw_size, i_channels, wide = (int(d) for d in kernel.shape)
    window_of = _image_window if nchw_data else _nhwc_window
    out_h, out_w, kh, kw, window = window_of(data, (kh_size, kw_size), strides, padding,
                                             dilation, out_dtype)
    ic = te.reduce_axis((0, i_channels), name="ic")
    accumulated = te.compute(
        (n, tiles, out_h, out_w, wide),
        lambda b, t, y, x, v: te.sum(
            window(b, y, x, ic) * kernel[t, kh, kw, ic, v].astype(out_dtype),
            # an image's taps plane by plane: one plane's rows, not three (with a padded
            # copy: U-Net's 3 -> 16 stem at 224x224 0.281 -> 0.243 ms, PP-LCNet's 0.104 ->
            # 0.090)
            axis=[ic, kh, kw] if nchw_data else [kh, kw, ic],
        ),
        name="conv2d_nhwc_packed",
    )
    return _unpack_nhwc(accumulated, out_channels, "conv2d_nhwc_unpack")


def nhwc_int8_block(channels: int) -> int:
    """Input channels per reduction chunk of conv2d_nhwc_int8: 16, 8 or 4, the widest that
    divides the channels padded to 4. A chunk's 4-channel groups are read one after the
    other from the same pixel (the same cache line); with 4-channel chunks ResNet-18's 3x3
    convs stepped to another pixel every dot: 1.50x of the packed layout's INT8 time."""
    padded = padded_tiles(channels, 4) * 4
    return next(block for block in (16, 8, 4) if padded % block == 0)


def pack_nhwc_int8_kernel(kernel, layout: str, wide: int, block: int | None = None):
    """8-bit OHWI or HWIO weights as pack_int8_kernel lays out an input block b
    (nhwc_int8_block, or `block`: 64 for the AMX tile): (ceil(O/wide), I'/b, KH, KW, b/4,
    wide, 4), I' the input channels padded to 4; each output lane's 4 consecutive input
    channels side by side (the bytes one dot instruction multiplies), zero-padded in both."""
    dims = _weight_dims(kernel, layout)
    o_channels, i_channels = dims["O"], dims["I"]
    block = block or nhwc_int8_block(i_channels)

    def packed(t, icc, kh, kw, ic4, v, ici):
        o, i = t * wide + v, icc * block + ic4 * 4 + ici
        return te.if_then_else(
            te.all(o < o_channels, i < i_channels),
            _weight_at(kernel, layout, te.min(o, o_channels - 1), kh, kw,
                       te.min(i, i_channels - 1)),
            te.const(0, kernel.dtype))

    shape = (padded_tiles(o_channels, wide), padded_tiles(i_channels, block),
             dims["H"], dims["W"], block // 4, wide, 4)
    return te.compute(shape, packed, name="nhwc_int8_kernel_pack")


def conv2d_nhwc_int8(data, kernel, strides, padding, dilation, groups, out_dtype, dot: str,
                     out_channels: int, row_to: int = 0, flat: bool = False):
    """8-bit NHWC data x int8 weights packed by pack_nhwc_int8_kernel -> int32 (N, OH, OW, O)
    on the dot-product instructions: the register tile, block name and reduction order of
    the packed layout's conv2d_nchwc_int8 (edgec.codegen.schedules tensorizes it the same
    way), each pixel's channels read 4 at a time where NHWC keeps them contiguous, a chunk
    of nhwc_int8_block channels per tap. Input channels 4 does not divide are zero-padded
    (they meet zero weights). Rows are computed `row_to` pixels long when that is longer
    (row_tails.int8_padded_width)."""
    from edgec.codegen.kernels import padded_row

    n = int(data.shape[0])
    tiles, chunks, kh_size, kw_size, groups_of_4, wide, _ = (int(d) for d in kernel.shape)
    block = groups_of_4 * 4
    out_h, out_w, kh, kw, window = _nhwc_window(data, (kh_size, kw_size), strides, padding,
                                                dilation, out_dtype, chunks * block)
    icc = te.reduce_axis((0, chunks), name="icc")
    ic4 = te.reduce_axis((0, groups_of_4), name="ic4")
    ici = te.reduce_axis((0, 4), name="ici")
    column = padded_row(out_w, row_to)
    accumulated = te.compute(
        (n, tiles, out_h, max(out_w, row_to), wide),
        lambda b, t, y, x, v: te.sum(
            window(b, y, column(x), icc * block + ic4 * 4 + ici)
            * kernel[t, icc, kh, kw, ic4, v, ici].astype(out_dtype),
            axis=[icc, kh, kw, ic4, ici],
        ),
        name="conv2d_nchwc_int8",
        # The AMX tile intrinsic is made per geometry: strides and dilation go with it.
        attrs={"edgec_dot": dot, "edgec_nhwc": 1, "edgec_strides": [int(s) for s in strides],
               "edgec_dilation": [int(d) for d in dilation],
               **({FLAT_PIXELS: 1} if flat else {})},
    )
    return _unpack_nhwc(accumulated, out_channels, "conv2d_nhwc_unpack", out_w)


def flat_conv2d_nhwc_int8(data, kernel, dot: str, out_channels: int, flat_to: int):
    """A 1x1 stride-1 conv2d_nhwc_int8 on its plane as one image row of `flat_to` pixels
    (amx.flat_length): the input copied flat, zeros past its last pixel; the accumulators
    cropped back into rows by the unpack. The block is marked FLAT_PIXELS: its tiles span
    rows, so its epilogue is a pass of its own (amx_schedule.schedule_amx)."""
    n, height, width, channels = (int(d) for d in data.shape)
    zero = tirx.const(0, data.dtype)
    flat = te.compute(
        (n, 1, flat_to, channels),
        lambda b, y, p, c: te.if_then_else(p < height * width,
                                           data[b, p // width, p % width, c], zero),
        name="data_flat")
    conv = conv2d_nhwc_int8(flat, kernel, [1, 1], [0, 0, 0, 0], [1, 1], 1, "int32", dot,
                            out_channels, flat=True)
    accumulated = conv.op.input_tensors[0]
    wide = int(accumulated.shape[-1])
    return te.compute(
        (n, height, width, out_channels),
        lambda b, y, x, c: accumulated[b, c // wide, 0, y * width + x, c % wide],
        name="conv2d_nhwc_unpack")


def matmul_int8_as_conv(data, kernel, dot: str, columns: int):
    """(M, K) 8-bit rows x int8 weights packed by pack_nhwc_int8_kernel (as OHWI (N, 1, 1,
    K)) -> (M, N) int32: conv2d_nhwc_int8 on the rows as one image row of M pixels."""
    rows, depth = (int(d) for d in data.shape)
    image = te.compute((1, 1, rows, depth), lambda b, y, x, c: data[x, c],
                       name="rows_as_image")
    conv = conv2d_nhwc_int8(image, kernel, [1, 1], [0, 0, 0, 0], [1, 1], 1, "int32", dot,
                            columns)
    return te.compute((rows, columns), lambda m, n: conv[0, 0, m, n], name="image_as_rows")


def depthwise_conv2d_nhwc(data, kernel, strides, padding, dilation, groups, out_dtype):
    """Depthwise NHWC conv with weights packed by pack_nhwc_depthwise_kernel: each output
    lane reads the same channel of the input, a contiguous vector in NHWC."""
    n, _, _, channels = (int(d) for d in data.shape)
    tiles, kh_size, kw_size, lanes = (int(d) for d in kernel.shape)
    out_h, out_w, kh, kw, window = _nhwc_window(data, (kh_size, kw_size), strides, padding,
                                                dilation, out_dtype)
    accumulated = te.compute(
        (n, tiles, out_h, out_w, lanes),
        lambda b, t, y, x, v: te.sum(
            window(b, y, x, _depthwise_channel(t, v, lanes, channels))
            * kernel[t, kh, kw, v].astype(out_dtype),
            axis=[kh, kw],
        ),
        name="depthwise_conv2d_nhwc_packed",
        attrs={"edgec_overlapping_tiles": 1} if _tiles_overlap(lanes, channels) else {},
    )
    if not _tiles_overlap(lanes, channels):
        return _unpack_nhwc(accumulated, channels, "depthwise_conv2d_nhwc_unpack")

    def unpack(b, y, x, c):  # channels of the overlapping last tile come from it
        t = te.min(c // lanes, tiles - 1)
        return accumulated[b, t, y, x, c - depthwise_tile_start(t, lanes, channels)]

    return te.compute((n, out_h, out_w, channels), unpack, name="depthwise_conv2d_nhwc_unpack")


def depthwise_conv2d_nchw(data, kernel, strides, padding, dilation, groups, out_dtype):
    """Depthwise NCHW conv, (C, 1, KH, KW) weights. In NCHW the channels of a pixel are a
    plane apart, so edgec.codegen.schedules.PlainDepthwiseConv vectorizes along the output
    row instead (contiguous at stride 1)."""
    from edgec.codegen.kernels import sliding_window

    n, channels = (int(d) for d in data.shape[:2])
    kh_size, kw_size = (int(d) for d in kernel.shape[2:])
    out_h, out_w, kh, kw, window = sliding_window(data, (kh_size, kw_size), strides, padding,
                                                  dilation, out_dtype)
    return te.compute(
        (n, channels, out_h, out_w),
        lambda b, c, y, x: te.sum(window(b, c, y, x) * kernel[c, 0, kh, kw].astype(out_dtype),
                                  axis=[kh, kw]),
        name="depthwise_conv2d_nchw",
    )

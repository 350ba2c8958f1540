"""Winograd F(4x4, 3x3) for 3x3 stride-1 convs on packed NCHW{b}c data (edgec.codegen.legalize picks
it for outputs of at least 14x14; edgec.codegen.winograd_schedule.WinogradConv schedules it).

ResNet-18's 3x3 convs at 56/28/14 pixels ran 1.4-2.2x faster this way than as direct
convs, which already ran at 90-95% of ONNX Runtime's speed.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx, topi

# Winograd F(4x4, 3x3) (Lavin & Gray, 2016): a 6x6 input tile d gives a 4x4 output tile as
# A^T [(G g G^T) * (B^T d B)] A: 36 multiplies instead of 144 per input channel and tile.
WINOGRAD_TILE = 4
_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=float)
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], dtype=float)
# F(2x2, 3x3): a 4x4 input tile, 16 multiplies instead of 36 per 2x2 output tile.
_BT2 = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
_G2 = np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]])
_AT2 = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)
_TRANSFORMS = {4: (_BT, _G, _AT), 2: (_BT2, _G2, _AT2)}


# F(4x4, 3x3) only where it pays: its weights are 4x the size (36 instead of 9 values per
# filter), so on small images (7x7, ResNet-18's 512 channels: 28 MB more per conv)
# streaming them costs more than the multiplies saved.
WINOGRAD_MIN_OUTPUT = 14
# Below that, on x86, F(2x2, 3x3) from 7x7 outputs up: 16 values per filter (1.8x), and on
# a 7x7 output 16 tiles of 16 multiplies against 441 direct ones (1.7x fewer). Measured on
# a Zen 1 with AVX2; with AVX-512 on an Ice Lake Xeon (family 6 model 106, 2 threads,
# NHWC) ResNet-18's 512 -> 512 convs at 7x7 went 1.237 -> 1.10 ms a call (direct: 52% of
# peak), ResNet-18 0.985x, ResNet-50 0.990x (bench/ab.py, 7 interleaved rounds).
SMALL_WINOGRAD_MIN_OUTPUT = 7


def winograd_tile(call, cpu) -> int | None:
    """The Winograd output tile (4 or 2) of a Relax conv2d on `cpu`, None where Winograd
    does not fit or pay: 3x3 weights, stride and dilation 1; F(4x4, 3x3) on outputs of at
    least WINOGRAD_MIN_OUTPUT pixels a side, F(2x2, 3x3) on x86 from
    SMALL_WINOGRAD_MIN_OUTPUT (NEON's is unmeasured). Axes are
    found by name, so packed (NCHW8c, OIHW8o) and NHWC (OHWI, HWIO) convs alike."""
    attrs = call.attrs
    kernel_layout, out_layout = str(attrs.kernel_layout), str(attrs.out_layout)
    weight = [int(d) for d in call.args[1].ty.shape]
    if not cpu.winograd:
        return None
    if (weight[kernel_layout.index("H")], weight[kernel_layout.index("W")]) != (3, 3):
        return None
    if any(int(s) != 1 for s in (*attrs.strides, *attrs.dilation)):
        return None
    out = [int(d) for d in call.ty.shape]
    side = min(out[out_layout.index("H")], out[out_layout.index("W")])
    if side >= WINOGRAD_MIN_OUTPUT:
        return 4
    if cpu.arch == "x86_64" and side >= SMALL_WINOGRAD_MIN_OUTPUT:
        return 2
    return None


def winograd_for_int8(dot: str | None) -> bool:
    """Whether 8-bit x int8 3x3 convs the `dot` intrinsic would compute run Winograd in
    float32 instead: on AVX2 without VNNI. There vpmaddubsw + vpmaddwd + vpaddd make 32
    multiply-adds in three instructions, no more per cycle than FMAs on a Zen 1 (two 128-bit
    pipes each), so F(4x4, 3x3)'s 4x fewer multiplies win as in FP32 (ResNet-18 INT8 ran
    51.7 ms against FP32's 34.2 on a Zen 1, 2 threads, before this). The data are converted
    as the input transform reads them, the weights transformed from their integers. The
    transforms' float error is below one unit of the int32 sum (256 channels of uniform
    uint8 x 7-bit weights: at most 0.75 on sums up to 3.4e5); _to_output rounds, and the
    requantize after it divides by hundreds of units. VNNI and sdot keep the dot product.
    Where the conv's geometry fits says winograd_tile (which honours the target's switch).
    """
    return dot == "avx2"


def winograd_weight(kernel: np.ndarray, tile: int, m: int = WINOGRAD_TILE) -> np.ndarray:
    """Constant OIHW{b}o 3x3 weights transformed for F(m x m, 3x3) (G g G^T, in float64)
    and laid out as (m+2, m+2, O/(b*tile), I/b, b_in, tile*b_out): per (eps, nu), the order
    the Winograd GEMM's micro-kernel streams them in, like pack_float_kernel's."""
    o_chunks, i_channels, _, _, block = kernel.shape
    oihw = kernel.transpose(0, 4, 1, 2, 3).reshape(o_chunks * block, i_channels, 3, 3)
    transformed = _transform_filters(oihw, m)
    wide, alpha = tile * block, m + 2
    packed = transformed.reshape(alpha, alpha, o_chunks // tile, wide,
                                 i_channels // block, block)
    return np.ascontiguousarray(packed.transpose(0, 1, 2, 4, 5, 3)).astype(kernel.dtype)


def _transform_filters(oihw: np.ndarray, m: int) -> np.ndarray:
    """G g G^T of (O, I, 3, 3) filters for F(m x m, 3x3), in float64: (m+2, m+2, O, I)."""
    g = _TRANSFORMS[m][1]
    return np.einsum("ak,oikl,bl->aboi", g, oihw.astype(np.float64), g)


def winograd_weight_nhwc(kernel: np.ndarray, layout: str, wide: int,
                         m: int = WINOGRAD_TILE) -> np.ndarray:
    """Constant OHWI or HWIO 3x3 weights transformed like winograd_weight for NHWC data,
    which conv2d_plain_winograd reads as one block of all I channels: (m+2, m+2,
    ceil(O/wide), 1, I, wide), output channels zero-padded to whole tiles."""
    oihw = kernel.transpose(*(layout.index(axis) for axis in "OIHW"))
    o_channels, i_channels = oihw.shape[:2]
    transformed = _transform_filters(oihw, m)
    tiles, alpha = (o_channels + wide - 1) // wide, m + 2
    padded = np.zeros((alpha, alpha, tiles * wide, i_channels))
    padded[:, :, :o_channels] = transformed
    packed = padded.reshape(alpha, alpha, tiles, wide, 1, i_channels)
    return np.ascontiguousarray(packed.transpose(0, 1, 2, 4, 5, 3)).astype(kernel.dtype)


def _combination(matrix: np.ndarray, row, term):
    """sum_k matrix[row, k] * term(k) for a symbolic row: one select arm per row with its
    nonzero terms only. Schedules unroll `row`, so the select folds away and no multiply by
    0 or 1 is left."""
    arms = []
    for coefficients in matrix:
        expr = None
        for k, c in enumerate(coefficients):
            if c == 0:
                continue
            value = term(k) if c == 1 else -term(k) if c == -1 else term(k) * float(c)
            expr = value if expr is None else expr + value
        arms.append(expr)
    result = arms[-1]
    for index in range(len(arms) - 2, -1, -1):
        result = tirx.Select(row == index, arms[index], result)
    return result


def conv2d_nchwc_winograd(data, weight, padding, out_dtype):
    """3x3 stride-1 conv2d on NCHW{b}c float data by Winograd F(4x4, 3x3), weights from
    winograd_weight. Stages: input tiles transformed (B^T d B, rows then columns), 36
    GEMMs over input channels with the same register tiles as conv2d_nchwc_dense (tiles as
    rows, `tile` output blocks as vector lanes), output tiles transformed back (A^T m A),
    then cropped to the output size.

    Returns:
        te.Tensor (N, O/b, OH, OW, b).
    """
    block = int(data.shape[4])
    untiled, (out_h, out_w) = _winograd(data, weight, padding, block)
    n, o_chunks = (int(d) for d in untiled.shape[:2])
    return te.compute((n, o_chunks, out_h, out_w, block),
                      lambda b, oc, y, x, ob: _to_output(untiled[b, oc, y, x, ob], out_dtype),
                      name="winograd_crop")


def _to_output(value, out_dtype: str):
    """A Winograd float sum as `out_dtype`: integer sums (8-bit convs computed in float,
    see edgec.codegen.legalize) are rounded, not truncated, since the transforms' float
    error may leave an exact integer just below itself."""
    if out_dtype.startswith(("int", "uint")):
        return te.round(value).astype(out_dtype)
    return value.astype(out_dtype)


def conv2d_plain_winograd(data, weight, padding, out_dtype, out_channels: int,
                          layout: str = "NHWC"):
    """conv2d_nchwc_winograd for NHWC or NCHW data (`layout`), read as NCHW{C}c, one block of
    all channels (NHWC: a view of the same memory; NCHW: a copy transposed to it); weights
    from winograd_weight_nhwc; the output tiles are cropped into the plain layout. Returns
    te.Tensor (N, OH, OW, out_channels) or (N, out_channels, OH, OW)."""
    n = int(data.shape[0])
    height, width = (int(data.shape[layout.index(axis)]) for axis in "HW")
    channels = int(data.shape[layout.index("C")])

    def pixel(b, y, x, i):
        return data[b, y, x, i] if layout == "NHWC" else data[b, i, y, x]

    # NHWC: a view of the same memory, inlined; NCHW: a transposing copy of its own (see
    # winograd_schedule.transposes_planes). One name for both: a tuning record matches its
    # workload whatever the block names and its trace finds blocks by name.
    one_block = te.compute((n, 1, height, width, channels),
                           lambda b, c, y, x, i: pixel(b, y, x, i), name="nhwc_as_one_block")
    wide = int(weight.shape[5])
    untiled, (out_h, out_w) = _winograd(one_block, weight, padding, wide)

    def crop(b, y, x, c):
        return _to_output(untiled[b, c // wide, y, x, c % wide], out_dtype)

    if layout == "NHWC":
        return te.compute((n, out_h, out_w, out_channels), crop, name="winograd_crop")
    return te.compute((n, out_channels, out_h, out_w),
                      lambda b, c, y, x: crop(b, y, x, c), name="winograd_crop")


def _winograd(data, weight, padding, out_block: int):
    """The stages of Winograd F(4x4, 3x3) on NCHW{b}c data up to the untiled output,
    (N, O/out_block, tiles_h*4, tiles_w*4, out_block), and the output size (OH, OW)."""
    n, c_chunks, height, width, block = (int(d) for d in data.shape)
    alpha, _, o_tiles, _, _, wide = (int(d) for d in weight.shape)
    top, left, bottom, right = padding
    out_h, out_w = height + top + bottom - 2, width + left + right - 2
    m = alpha - 2  # the weights were transformed for F(m x m, 3x3)
    bt, _, at = _TRANSFORMS[m]
    tiles_h, tiles_w = (out_h + m - 1) // m, (out_w + m - 1) // m
    tiles = n * tiles_h * tiles_w
    padded = topi.nn.pad(data, [0, 0, top, left, 0],
                         [0, 0, tiles_h * m + 2 - height - top, tiles_w * m + 2 - width - left, 0],
                         name="data_pad")

    def tile_input(icc, p, row, col, icb):
        image, rest = p // (tiles_h * tiles_w), p % (tiles_h * tiles_w)
        value = padded[image, icc, rest // tiles_w * m + row, rest % tiles_w * m + col, icb]
        return value if value.dtype == weight.dtype else value.astype(weight.dtype)

    rows = te.compute(
        (c_chunks, tiles, alpha, alpha, block),
        lambda icc, p, eps, col, icb: _combination(
            bt, eps, lambda row: tile_input(icc, p, row, col, icb)),
        name="winograd_input_rows",
    )
    transformed = te.compute(
        (alpha, alpha, c_chunks, tiles, block),
        lambda eps, nu, icc, p, icb: _combination(
            bt, nu, lambda col: rows[icc, p, eps, col, icb]),
        name="winograd_input",
    )
    icc = te.reduce_axis((0, c_chunks), name="icc")
    icb = te.reduce_axis((0, block), name="icb")
    product = te.compute(
        (alpha, alpha, o_tiles, tiles, wide),
        lambda eps, nu, oc, p, ov: te.sum(
            transformed[eps, nu, icc, p, icb] * weight[eps, nu, oc, icc, icb, ov],
            axis=[icc, icb]),
        name="conv2d_nchwc_winograd",
    )
    out_rows = te.compute(
        (o_tiles, tiles, m, alpha, wide),
        lambda oc, p, i, col, ov: _combination(at, i, lambda row: product[row, col, oc, p, ov]),
        name="winograd_output_rows",
    )
    tile = wide // out_block
    block = out_block
    untiled = te.compute(
        (n, o_tiles * tile, tiles_h * m, tiles_w * m, block),
        lambda b, oc, y, x, ob: _combination(
            at, x % m, lambda col: out_rows[
                oc // tile, (b * tiles_h + y // m) * tiles_w + x // m, y % m, col,
                oc % tile * block + ob]),
        name="winograd_output",
    )
    return untiled, (out_h, out_w)

"""Legalization of float convs in the plain layouts (NHWC with OHWI weights, NCHW with OIHW)
onto edgec.codegen.plain_kernels; anything else returns None and goes on to TVM's own."""

from __future__ import annotations

import tvm
from tvm import relax

from edgec.codegen import (
    nchw_panels,
    nchw_pixels,
    nchw_plane_geometry,
    nchw_planes,
    plain_kernels,
)
from edgec.codegen.kernels import (
    conv2d_nchw_packed_out,
    integer_sums_in_float,
    pack_stem_kernel,
)
from edgec.codegen.nchw_packed_input import packed_input_block
from edgec.codegen.weight_packs import emit_weight_pack
from edgec.codegen.winograd import (
    conv2d_plain_winograd,
    winograd_for_int8,
    winograd_tile,
    winograd_weight_nhwc,
)

# NHWC weights are OHWI after ConvertLayout, HWIO (HWOI depthwise) as TFLite imports them.
_PLAIN = {("NHWC", "OHWI"), ("NHWC", "HWIO"), ("NHWC", "HWOI"), ("NCHW", "OIHW")}


def _float32_with_constant_weight(call: relax.Call) -> bool:
    data, weight = call.args[0], call.args[1]
    if not isinstance(weight, tvm.ir.Constant):
        return False
    return {str(data.ty.dtype), str(weight.ty.dtype), str(call.ty.dtype)} == {"float32"}


def _as_float_kernel(kernel, integer: bool):
    """The TE kernel itself, or for exact integer sums (8-bit data x int8 weights -> int32,
    few terms) the same kernel on float-converted data with a cast of its sums."""
    return integer_sums_in_float(kernel) if integer else kernel


# How many more channels the wide tile may pad before one vector's tile (half the
# accumulators, 8 loads per 8 FMAs instead of 9 per 14 on AVX-512) takes over: SqueezeNet's
# 512 -> 1000 classifier conv at 13x13 in 32-lane tiles (1024) instead of 16 (1008) ran
# 0.85x, the whole model 0.92-0.95x; taking the wide tile always (MobileNetV2's 144 and
# V3-Small's 72, 40 and 240 channels) ran those models 1.03x, a 1.19 penalty 1.00-1.04x
# (Xeon family 6 model 207, x86_64-amx, 2 threads, bench/ab.py both orders).
NARROW_TILE_PENALTY = 1.05


def output_width(channels: int, cpu) -> int:
    """Output channels per register tile: the accumulator width (two vectors where there
    are 32 registers) unless one vector pads enough fewer channels to pay for its tile's
    lower rate (a 24-channel conv is 32 lanes either way; an 8-channel one is better as one
    8-lane AVX-512 half than 32 lanes, 48 channels as 3 x 16 than 2 x 32)."""
    widths = (cpu.accumulator_lanes, cpu.float_lanes)
    return min(widths, key=lambda w: (plain_kernels.padded_tiles(channels, w) * w
                                      * (1 if w == widths[0] else NARROW_TILE_PENALTY), -w))


def depthwise_lanes(channels: int, cpu) -> int:
    """Channels per vector of an NHWC depthwise conv: a full register when the channels
    fill one (a last tile the register does not divide overlaps the one before it, see
    plain_kernels.depthwise_tile_start), else the widest of half a register or 4 that
    divides them, else a full register whose last lanes read a clamped channel (a gather).
    ShuffleNetV2's 116-channel depthwise convs had taken 4 lanes on AVX-512 (the widest
    divisor): 0.46 ms of its 2.4."""
    if channels >= cpu.float_lanes:
        return cpu.float_lanes
    widths = [w for w in (cpu.float_lanes // 2, 4) if w >= 4]
    return next((w for w in widths if channels % w == 0), cpu.float_lanes)


def legalize_plain_conv(bb: relax.BlockBuilder, call: relax.Call, cpu,
                        integer: bool = False, dot: str | None = None) -> relax.Expr | None:
    """The edgec kernel for a float NHWC or NCHW conv2d (dense or depthwise, constant
    weights), None when it is none of those.

    integer: the conv is 8-bit x int8 -> int32 with few enough terms per output that
    float32 sums are exact (edgec.codegen.legalize checks): it runs the same float kernel
    on converted data and weights. These are the INT8 convs whose channels the packed
    block does not divide: ShuffleNetV2's 58-channel stage stays NCHW in NCHW4c, where
    TVM's generic int32 conv took half of its INT8 latency.

    dot: the edgec.codegen.intrinsics kind whose dot product an 8-bit dense conv's operands
    fit (checked by the caller); an NHWC one then runs on it at any number of terms, except
    on "avx2" where 3x3 convs run Winograd in float and exact sums the float kernel.
    """
    attrs = call.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout))
    if (layouts[0], str(attrs.out_layout)) == ("NCHW", "NHWC"):
        return _image_stem(bb, call, cpu) if not (integer or dot) else None
    if layouts not in _PLAIN or str(attrs.out_layout) != layouts[0]:
        return None
    m = winograd_tile(call, cpu)  # None: no Winograd for this conv
    winograd_int8 = (winograd_for_int8(dot) and layouts[0] == "NHWC"
                     and int(attrs.groups) == 1 and m is not None)
    # On AVX2 without VNNI the dot product makes no more multiply-adds per cycle than FMAs
    # (edgec.codegen.winograd.winograd_for_int8), and pads input channels to 4: convs whose
    # sums float32 holds exactly run the float kernel. ResNet-18 INT8's 3-channel 7x7 stem
    # 6.2 -> 3.4 ms; the whole model 0.965x, MobileNetV2 INT8 0.970x (Zen 1, 2 threads).
    exact_in_float = dot == "avx2" and integer
    if (dot and layouts[0] == "NHWC" and int(attrs.groups) == 1 and not winograd_int8
            and not exact_in_float):
        dotted = _nhwc_int8(bb, call, layouts[1], cpu, dot)
        if dotted is not None:
            return dotted
    if (integer or winograd_int8) and isinstance(call.args[1], tvm.ir.Constant):
        weight = relax.const(call.args[1].value.numpy().astype("float32"))
    elif _float32_with_constant_weight(call):
        weight = call.args[1]
    else:
        return None
    data = call.args[0]
    nhwc = layouts[0] == "NHWC"
    channels = int(data.ty.shape[3 if nhwc else 1])
    out_channels = int(call.ty.shape[3 if nhwc else 1])
    per_group = int(weight.ty.shape[layouts[1].index("I")])
    groups = int(attrs.groups)
    args = ([int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
            [int(d) for d in attrs.dilation], groups, str(call.ty.dtype))
    if groups == 1:
        wide = output_width(out_channels, cpu)
        if winograd_int8 or _plain_winograd(m, nhwc, channels, out_channels, integer, cpu):
            transformed = winograd_weight_nhwc(weight.value.numpy(), layouts[1], wide, m)
            return bb.call_te(conv2d_plain_winograd, data, relax.const(transformed), args[1],
                              args[4], out_channels, layouts[0],
                              primfunc_name_hint=f"conv2d_{layouts[0].lower()}_winograd")
        if nhwc:
            return _nhwc_dense(bb, data, weight, layouts[1], args, out_channels, wide, integer)
        kernel_size = [int(weight.ty.shape[layouts[1].index(a)]) for a in "HW"]
        out_h, out_w = int(call.ty.shape[2]), int(call.ty.shape[3])
        rows_fit = nchw_pixels.fits(kernel_size, *args[:3], out_w, cpu)
        plane_fits = nchw_pixels.flat_pays(kernel_size, *args[:3], out_h, out_w, cpu)
        # Planes of whole pixel panels run as a GEMM over them at any channel counts (see
        # nchw_panels); other rows no vector divides (28, 14) as one flat plane (see
        # nchw_pixels.flat_pays), and rows and planes alike only where pixel vectors pay.
        panel = not integer and plane_fits and nchw_panels.panel_tile(
            out_channels, out_h * out_w, cpu.float_lanes, cpu.vector_registers)
        flat = bool(panel) or (not rows_fit and plane_fits)
        if panel or (not integer and (rows_fit or flat)
                     and nchw_pixels.pays(channels, out_channels, wide)):
            vectors, tile = panel or (0, nchw_pixels.tile_channels(out_channels,
                                                                   cpu.vector_registers))
            packed = emit_weight_pack(bb, pack_stem_kernel, weight, tile, name="pack_stem_kernel")
            return bb.call_te(nchw_pixels.conv2d_nchw_pixels, data, packed, args[4],
                              out_channels, cpu.float_lanes, flat, vectors,
                              primfunc_name_hint="conv2d_nchw_pixels")
        # Other dense convs keep the packed tile, transposed into planes in the epilogue. On flat
        # planes (nchw_planes, depthwise only now) 1x1 convs gained on MobileNetV1 (5.98 vs
        # 6.26 ms) and lost on MobileNetV2 (5.07 vs 4.70) and ResNet-50 (37.2 vs 35.5), and
        # ResNet-18's 3x3 convs took it from 1.18x to 1.65x of packed (AVX-512, 2 threads).
        packed = emit_weight_pack(bb, pack_stem_kernel, weight, wide, name="pack_stem_kernel")
        in_block = 0 if integer else packed_input_block(
            channels, kernel_size, *args[:3], out_w, cpu)
        return bb.call_te(_as_float_kernel(conv2d_nchw_packed_out, integer), data, packed,
                          *args, 0, out_channels, in_block, primfunc_name_hint="conv2d_nchw")
    if groups == channels == out_channels and per_group == 1:
        if nhwc:
            packed = emit_weight_pack(bb, plain_kernels.pack_nhwc_depthwise_kernel, weight,
                                      layouts[1], depthwise_lanes(channels, cpu),
                                      name="pack_nhwc_kernel")
            return bb.call_te(_as_float_kernel(plain_kernels.depthwise_conv2d_nhwc, integer),
                              data, packed, *args, primfunc_name_hint="depthwise_conv2d_nhwc")
        planes = _nchw_planes(bb, call, data, weight, cpu, integer)
        if planes is not None:
            return planes
        return bb.call_te(_as_float_kernel(plain_kernels.depthwise_conv2d_nchw, integer), data,
                          weight, *args, primfunc_name_hint="depthwise_conv2d_nchw")
    return None


def _nhwc_int8(bb: relax.BlockBuilder, call: relax.Call, kernel_layout: str, cpu,
               dot: str) -> relax.Expr | None:
    """An 8-bit dense NHWC conv on the `dot` intrinsic (plain_kernels.conv2d_nhwc_int8),
    None when no tile width fits it."""
    from edgec.codegen import amx, intrinsics
    from edgec.codegen.row_tails import int8_padded_width

    columns = _as_columns(bb, call, kernel_layout, cpu)
    if columns is not None:
        return _nhwc_int8(bb, columns, "OHWI", cpu, dot)
    out_channels = int(call.ty.shape[3])
    wide, block = output_width(out_channels, cpu), None
    attrs = call.attrs
    geometry = ([int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                [int(d) for d in attrs.dilation])
    kernel = [int(call.args[1].ty.shape[kernel_layout.index(a)]) for a in "HW"]
    in_channels = int(call.args[0].ty.shape[3])
    out_h, out_w = int(call.ty.shape[1]), int(call.ty.shape[2])
    amx_channels = cpu.int8_tiles == "amx" and in_channels % amx.CHANNELS_PER_STEP == 0
    flat_to = amx.flat_length(out_h, out_w, in_channels, out_channels, kernel,
                              *geometry) if amx_channels else 0
    if flat_to or (amx_channels and amx.fits(in_channels, out_w)):
        wide, block, dot = amx.OUTPUT_CHANNELS, amx.CHANNELS_PER_STEP, "amx"
    elif not intrinsics.lanes(dot, wide):
        return None
    packed = emit_weight_pack(bb, plain_kernels.pack_nhwc_int8_kernel, call.args[1],
                              kernel_layout, wide, block, name="pack_nhwc_int8_kernel")
    if flat_to:
        return bb.call_te(plain_kernels.flat_conv2d_nhwc_int8, call.args[0], packed, dot,
                          out_channels, flat_to, primfunc_name_hint="conv2d_nhwc_int8")
    row_to = int8_padded_width(out_w, dot, wide)
    return bb.call_te(plain_kernels.conv2d_nhwc_int8, call.args[0], packed, *geometry, 1,
                      "int32", dot, out_channels, row_to, primfunc_name_hint="conv2d_nhwc_int8")


def _as_columns(bb: relax.BlockBuilder, call: relax.Call, kernel_layout: str,
                cpu) -> relax.Call | None:
    """An 8-bit NHWC conv that edgec.codegen.im2col puts on AMX tiles as the equivalent 1x1
    conv of its columns (the copy emitted here), None for any other conv."""
    from edgec.codegen import im2col

    attrs, weight = call.attrs, call.args[1]
    kernel = [int(weight.ty.shape[kernel_layout.index(a)]) for a in "HW"]
    in_channels = int(call.args[0].ty.shape[3])
    if not (isinstance(weight, tvm.ir.Constant)
            and im2col.applies(in_channels, kernel, int(attrs.groups), cpu)):
        return None
    depth = im2col.depth(in_channels, kernel)
    cols = bb.emit_te(im2col.columns, call.args[0], kernel,
                      [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                      [int(d) for d in attrs.dilation], depth, primfunc_name_hint="im2col")
    weights = relax.const(im2col.column_weights(weight.value.numpy(), kernel_layout, depth))
    conv = relax.op.nn.conv2d(cols, weights, data_layout="NHWC", kernel_layout="OHWI",
                              out_dtype=str(call.ty.dtype))
    return bb.normalize(conv)


def _nhwc_dense(bb: relax.BlockBuilder, data, weight, kernel_layout: str, args: tuple,
                out_channels: int, wide: int, integer: bool = False,
                nchw_data: bool = False) -> relax.Expr:
    """plain_kernels.conv2d_nhwc_dense on `data` with `weight` packed for it (`args`: the
    conv's strides, padding, dilation, groups and output dtype)."""
    packed = emit_weight_pack(bb, plain_kernels.pack_nhwc_kernel, weight, kernel_layout, wide,
                              name="pack_nhwc_kernel")
    return bb.call_te(_as_float_kernel(plain_kernels.conv2d_nhwc_dense, integer), data, packed,
                      *args, out_channels, nchw_data, primfunc_name_hint="conv2d_nhwc")


def _image_stem(bb: relax.BlockBuilder, call: relax.Call, cpu) -> relax.Expr | None:
    """An NHWC float conv reading an NCHW image (edgec.layout.stems.read_nchw_images): the
    NHWC tile, its window over the image's planes."""
    attrs = call.attrs
    if int(attrs.groups) != 1 or not _float32_with_constant_weight(call):
        return None
    out_channels = int(call.ty.shape[3])
    args = ([int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
            [int(d) for d in attrs.dilation], 1, str(call.ty.dtype))
    return _nhwc_dense(bb, call.args[0], call.args[1], str(attrs.kernel_layout), args,
                       out_channels, output_width(out_channels, cpu), nchw_data=True)


def _plain_winograd(m: int | None, nhwc: bool, channels: int, out_channels: int,
                    integer: bool, cpu) -> bool:
    """Whether a float NHWC or NCHW conv runs Winograd: its geometry fits (`m`, from
    winograd_tile, is not None); in NHWC with AVX-512, from _NHWC_WINOGRAD_CHANNELS input
    channels; in NCHW with _NCHW_WINOGRAD_VECTORS vectors of channels or more out and as
    many in (x86: _NCHW_WINOGRAD_INPUT_VECTORS)."""
    if integer or m is None:
        return False
    if nhwc:
        return cpu.vector_bits < 512 or channels >= _NHWC_WINOGRAD_CHANNELS
    inputs = _NCHW_WINOGRAD_INPUT_VECTORS if cpu.arch == "x86_64" else _NCHW_WINOGRAD_VECTORS
    return (out_channels >= _NCHW_WINOGRAD_VECTORS * cpu.float_lanes
            and channels >= inputs * cpu.float_lanes)


# With AVX-512, NHWC 3x3 convs of fewer input channels run the direct tile: its reduction
# is all taps (9 x 16), while the Winograd GEMM's is 16 channels per transformed pixel
# around two transforms. Ice Lake Xeon (family 6 model 106, 2 threads), per-call minimums:
# SqueezeNet's 16 -> 64 at 55x55 0.211 -> 0.177 ms (and the concat after it 0.081 -> 0.065),
# SqueezeNet 0.969x, U-Net (224x224; 3- and 16-channel convs) 0.986x (bench/ab.py, 9
# rounds); from 32 channels Winograd stays ahead (32 -> 128 at 27x27: 0.131 against 0.184).
_NHWC_WINOGRAD_CHANNELS = 32


# NCHW convs read their Winograd tiles through a view of one block of all channels (each
# transform vector a gather of one vector's channels) and crop across the planes: worth it
# with four vectors of channels in and out (64 on AVX-512, 32 on AVX2, 16 on NEON), where
# the gathers are few per multiply-add. AVX-512: ResNet-18 NCHW 0.81x, ResNet-50 0.90x
# (interleaved, Zen 5); not on U-Net's 16- and 32-channel convs at 128 and 64 pixels (1.36x
# with them, 16 -> 16 at 128x128 0.60 -> 1.14 ms a call) nor SqueezeNet's 16 -> 64 at 55x55
# (0.33 -> 0.42; Ice Lake Xeon, family 6 model 106, 2 threads). AVX2 code on that Xeon
# (per-call minimums, 5 interleaved rounds): 32 -> 32 at 64x64 0.75 -> 0.59 ms, 96 -> 32
# 2.52 -> 1.81, SqueezeNet's 32 -> 128 at 27x27 0.48 -> 0.31; 16 output channels lost
# (16 -> 16 at 128x128 0.76 -> 1.14). NEON by the rpi5 estimate (qemu counts x llvm-mca,
# Cortex-A76, one thread): ResNet-18 NCHW 136.34 -> 81.98 ms (packed 74.18), ResNet-50
# 278.47 -> 224.37 (213.46), and with 16-channel convs too U-Net (128x128) 47.03 -> 26.26
# (packed 21.59), its 16 -> 16 conv at 128x128 3.64 -> 2.17 ms.
_NCHW_WINOGRAD_VECTORS = 4
# Since NCHW Winograd reads a transposed copy of the planes (winograd_schedule.
# transposes_planes) instead of gathering, two vectors of input channels pay on x86 (per-call
# minimums, 7 interleaved rounds, Ice Lake Xeon, 2 threads): AVX2 SqueezeNet's 16 -> 64 at
# 55x55 0.374 -> 0.269 and 0.351 -> 0.244 ms, the model's per-call sum 6.03 -> 5.74;
# AVX-512 its 32 -> 128 at 27x27 0.206 -> 0.169 and 0.196 -> 0.168, U-Net's 32 -> 64 0.159
# -> 0.132; U-Net level on both. NEON keeps four (unmeasured).
_NCHW_WINOGRAD_INPUT_VECTORS = 2

# Pixel vectors of a depthwise flat-plane tile, at most; a short run costs its loop and
# broadcast per tap against computing padded pixels.
_DEPTHWISE_PLANE_VECTORS = 4
_SHORT_TILE_COST = 0.25


def _nchw_planes(bb: relax.BlockBuilder, call: relax.Call, data: relax.Expr,
                 weight: relax.Expr, cpu, integer: bool) -> relax.Expr | None:
    """A depthwise NCHW conv of `data` and (float) `weight` on edgec.codegen.nchw_planes,
    its run of pixel vectors the one whose blocking computes the fewest pixels (short runs
    costed); None when its taps skip a stride phase (a dilation the plain kernels take
    instead)."""
    attrs = call.attrs
    geometry_args = ([int(d) for d in data.ty.shape], [int(d) for d in list(weight.ty.shape)[2:]],
                     [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                     [int(d) for d in attrs.dilation], cpu.float_lanes)
    candidates = [nchw_plane_geometry.plane_geometry(*geometry_args, v, cpu.vector_registers)
                  for v in range(1, _DEPTHWISE_PLANE_VECTORS + 1)]
    if candidates[0] is None:
        return None
    geometry = min(candidates, key=lambda g: g.length * (1 + _SHORT_TILE_COST / g.vectors))

    def conv(data, kernel, strides, padding, dilation, groups, out_dtype):
        return nchw_planes.depthwise_conv2d_nchw_planes(data, kernel, geometry, out_dtype)

    def kernel(data, weight):  # call_te converts only TVM objects and scalars
        return _as_float_kernel(conv, integer)(data, weight, None, None, None, 1,
                                               str(call.ty.dtype))

    return bb.call_te(kernel, data, weight,
                      primfunc_name_hint="depthwise_conv2d_nchw")

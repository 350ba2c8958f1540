"""Legalization of float convs in the plain layouts (NHWC with OHWI weights, NCHW with OIHW)
onto edgec.codegen.plain_kernels; anything else returns None and goes on to TVM's own."""

from __future__ import annotations

import functools

import tvm
from tvm import relax

from edgec.codegen import nchw_planes, plain_kernels
from edgec.codegen.kernels import conv2d_nchw_packed_out, pack_stem_kernel
from edgec.codegen.winograd import (
    conv2d_nhwc_winograd,
    winograd_geometry_fits,
    winograd_weight_nhwc,
)

# NHWC weights are OHWI after ConvertLayout, HWIO (HWOI depthwise) as TFLite imports them.
_PLAIN = {("NHWC", "OHWI"), ("NHWC", "HWIO"), ("NHWC", "HWOI"), ("NCHW", "OIHW")}


def _float32_with_constant_weight(call: relax.Call) -> bool:
    data, weight = call.args[0], call.args[1]
    if not isinstance(weight, tvm.ir.Constant):
        return False
    return {str(data.ty.dtype), str(weight.ty.dtype), str(call.ty.dtype)} == {"float32"}


def output_width(channels: int, cpu) -> int:
    """Output channels per register tile: the accumulator width (two vectors where there
    are 32 registers) unless one vector pads fewer channels (a 24-channel conv is 32 lanes
    either way; an 8-channel one is better as one 8-lane AVX-512 half than 32 lanes)."""
    widths = (cpu.accumulator_lanes, cpu.float_lanes)
    return min(widths, key=lambda w: (plain_kernels.padded_tiles(channels, w) * w, -w))


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


def legalize_plain_conv(bb: relax.BlockBuilder, call: relax.Call, cpu) -> relax.Expr | None:
    """The edgec kernel for a float NHWC or NCHW conv2d (dense or depthwise, constant
    weights), None when it is none of those."""
    attrs = call.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout))
    if layouts not in _PLAIN or str(attrs.out_layout) != layouts[0]:
        return None
    if not _float32_with_constant_weight(call):
        return None
    data, weight = call.args[0], call.args[1]
    nhwc = layouts[0] == "NHWC"
    channels = int(data.ty.shape[3 if nhwc else 1])
    out_channels = int(call.ty.shape[3 if nhwc else 1])
    per_group = int(weight.ty.shape[layouts[1].index("I")])
    groups = int(attrs.groups)
    args = ([int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
            [int(d) for d in attrs.dilation], groups, str(call.ty.dtype))
    if groups == 1:
        wide = output_width(out_channels, cpu)
        if nhwc and cpu.winograd and winograd_geometry_fits(call):
            transformed = winograd_weight_nhwc(weight.value.numpy(), layouts[1], wide)
            return bb.call_te(conv2d_nhwc_winograd, data, relax.const(transformed), args[1],
                              args[4], out_channels, primfunc_name_hint="conv2d_nhwc_winograd")
        if nhwc:
            packed = bb.emit_te(plain_kernels.pack_nhwc_kernel, weight, layouts[1], wide,
                                primfunc_name_hint="pack_nhwc_kernel")
            return bb.call_te(plain_kernels.conv2d_nhwc_dense, data, packed, *args,
                              out_channels, primfunc_name_hint="conv2d_nhwc")
        planes = _nchw_planes(bb, call, cpu, depthwise=False)
        if planes is not None:
            return planes
        packed = bb.emit_te(pack_stem_kernel, weight, wide,
                            primfunc_name_hint="pack_stem_kernel")
        return bb.call_te(conv2d_nchw_packed_out, data, packed, *args, 0, out_channels,
                          primfunc_name_hint="conv2d_nchw")
    if groups == channels == out_channels and per_group == 1:
        if nhwc:
            packed = bb.emit_te(plain_kernels.pack_nhwc_depthwise_kernel, weight, layouts[1],
                                depthwise_lanes(channels, cpu),
                                primfunc_name_hint="pack_nhwc_kernel")
            return bb.call_te(plain_kernels.depthwise_conv2d_nhwc, data, packed, *args,
                              primfunc_name_hint="depthwise_conv2d_nhwc")
        planes = _nchw_planes(bb, call, cpu, depthwise=True)
        if planes is not None:
            return planes
        return bb.call_te(plain_kernels.depthwise_conv2d_nchw, data, weight, *args,
                          primfunc_name_hint="depthwise_conv2d_nchw")
    return None


# Accumulators a flat-plane NCHW register tile keeps: of 32 vector registers (AVX-512,
# AArch64) or 16 (AVX2), the rest hold the input vectors and the broadcast weight.
_PLANE_ACCUMULATORS = {32: 24, 16: 12}
# Pixel vectors of a dense tile, at most: 7 x 16 = 112 pixels is a whole number of rows of
# 112, 56, 28, 14 (MobileNets' planes), so their blocks need no padded rows.
_PLANE_VECTORS = {32: 7, 16: 3}
_DEPTHWISE_PLANE_VECTORS = 4
_MOST_PLANE_CHANNELS = 12  # output channels of a dense tile (one broadcast each)
# What a dense tile's loads cost beside its FMAs, against computing padded pixels: each
# input vector (from L2 on deep layers: one plane per input channel) feeds `channels` FMAs,
# each broadcast weight (L1) feeds `vectors`. A 256-channel 3x3 conv at 14x14 (AVX-512, one
# thread) took 1.33 ms as 6 vectors x 4 channels (288 pixels for 196), 1.33 as 4 x 6
# (256), 1.23 as 2 x 12 (224), 1.38 as 1 x 16 (208); 384 -> 64 channels at 14x14 ran 3.2x
# its NHWC time as 7 vectors x 3 channels. Depthwise tiles (one channel) cost their short
# runs alone.
_INPUT_LOAD_COST = 1.5
_WEIGHT_LOAD_COST = 0.25
_SHORT_TILE_COST = 0.25


def plane_tile(geometry_args: tuple, out_channels: int, cpu, depthwise: bool):
    """(output channels, geometry) of a flat-plane NCHW conv: the run of pixel vectors whose
    blocking computes the fewest pixels (short runs costed), then as many output channels
    as accumulators remain. A 1x1 stride-1 conv without padding whose blocks can cover its
    plane exactly keeps its input's width as the pitch: it then reads the input without a
    copy (nchw_planes.reads_input_directly). None when the taps skip a stride phase."""
    lanes, registers = cpu.float_lanes, cpu.vector_registers
    most = _DEPTHWISE_PLANE_VECTORS if depthwise else _PLANE_VECTORS[registers]
    shape, kernel_size = geometry_args[:2]
    candidates = [nchw_planes.plane_geometry(*geometry_args, lanes, v)
                  for v in range(1, most + 1)]
    if candidates[0] is None:
        return None
    direct = [g for g in (nchw_planes.plane_geometry(*geometry_args, lanes, v, shape[3])
                          for v in range(1, most + 1))
              if nchw_planes.reads_input_directly(shape, kernel_size, g)]

    def channels(g) -> int:
        return 1 if depthwise else min(_MOST_PLANE_CHANNELS,
                                       _PLANE_ACCUMULATORS[registers] // g.vectors, out_channels)

    def cost(g) -> float:
        if depthwise:
            return g.length * (1 + _SHORT_TILE_COST / g.vectors)
        return g.length * (1 + _INPUT_LOAD_COST / channels(g) + _WEIGHT_LOAD_COST / g.vectors)

    geometry = min(direct, key=cost) if direct else min(candidates, key=cost)
    return channels(geometry), geometry


def _nchw_planes(bb: relax.BlockBuilder, call: relax.Call, cpu,
                 depthwise: bool) -> relax.Expr | None:
    """A float NCHW conv on edgec.codegen.nchw_planes, None when its taps skip a stride
    phase (a dilation the plain kernels take instead)."""
    attrs, (data, weight) = call.attrs, call.args[:2]
    shape = [int(d) for d in data.ty.shape]
    kernel_size = [int(d) for d in list(weight.ty.shape)[2:]]
    out_channels = int(call.ty.shape[1])
    geometry_args = (shape, kernel_size, [int(s) for s in attrs.strides],
                     [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation])
    chosen = plane_tile(geometry_args, out_channels, cpu, depthwise)
    if chosen is None:
        return None
    channels, geometry = chosen
    dtype = str(call.ty.dtype)
    # call_te converts only TVM objects and Python scalars; the geometry is bound here.
    if depthwise:
        kernel = functools.partial(nchw_planes.depthwise_conv2d_nchw_planes,
                                   geometry=geometry, out_dtype=dtype)
        return bb.call_te(kernel, data, weight, primfunc_name_hint="depthwise_conv2d_nchw")
    packed = bb.emit_te(pack_stem_kernel, weight, channels,
                        primfunc_name_hint="pack_stem_kernel")
    kernel = functools.partial(nchw_planes.conv2d_nchw_planes, geometry=geometry,
                               out_channels=out_channels, out_dtype=dtype)
    return bb.call_te(kernel, data, packed, primfunc_name_hint="conv2d_nchw")

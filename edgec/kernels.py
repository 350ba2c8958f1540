"""Compute definitions edgec adds to TVM: conv2d on packed NCHW{b}c activations.

TVM 0.27 cannot legalize a Relax conv2d whose layouts carry a channel block, so the packed
layout chosen by edgec.layout is lowered here to TE compute that MetaSchedule then schedules.
Weights use "OIHW{b}o": the output channel block is innermost, which is the vector that
the inner FMA loop broadcasts an input value against.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax, te, topi

_PACKED_KERNEL = re.compile(r"^OIHW(\d+)o$")


def _packed_block(attrs) -> int | None:
    """The channel block of a conv in NCHW{b}c with OIHW{b}o weights and the same output
    layout, None for any other layout combination."""
    from edgec.layout import block_of

    block = block_of(attrs.data_layout)
    kernel = _PACKED_KERNEL.match(attrs.kernel_layout)
    if block is None or kernel is None or attrs.out_layout != attrs.data_layout:
        return None
    return block


def legalize_map(block: int, int8_dot: str | None = None) -> dict:
    """Ops edgec legalizes itself; pass to relax.transform.LegalizeOps(customize_legalize_map).

    Args:
        block: the model's channel block (see edgec.layout.choose_block).
        int8_dot: an edgec.intrinsics kind ("avx2", "vnni") the target has: uint8 x int8
            packed convs are computed for that dot-product micro-kernel.
    """
    return {"relax.nn.conv2d": lambda bb, call: _legalize_conv2d(bb, call, block, int8_dot)}


def _int8_dot_applies(call: relax.Call, block: int, kind: str) -> bool:
    """A dense packed 8-bit x int8 -> int32 conv whose block fits the `kind` intrinsic, with
    constant weights (for "avx2": small enough that vpmaddubsw cannot saturate)."""
    from edgec import intrinsics

    attrs, data, weight = call.attrs, call.args[0], call.args[1]
    if (str(data.ty.dtype), str(weight.ty.dtype), str(call.ty.dtype)) != (
            intrinsics.activation_dtype(kind), "int8", "int32"):
        return False
    if not isinstance(weight, tvm.ir.Constant) or int(attrs.groups) != 1:
        return False
    if _packed_block(attrs) != block or not intrinsics.lanes(kind, block):
        return False
    if kind != "avx2":
        return True
    values = weight.value.numpy()
    return int(np.abs(values.astype(np.int32)).max()) <= intrinsics.MAX_WEIGHT


def _legalize_conv2d(bb: relax.BlockBuilder, call: relax.Call, block: int,
                     int8_dot: str | None = None) -> relax.Expr:
    attrs = call.attrs
    args = (
        [int(s) for s in attrs.strides],
        [int(p) for p in attrs.padding],
        [int(d) for d in attrs.dilation],
        int(attrs.groups),
        str(call.ty.dtype),
    )
    if int8_dot and _int8_dot_applies(call, block, int8_dot):
        # Packing a constant weight is folded at compile time by FoldConstant.
        packed = bb.emit_te(pack_int8_kernel, call.args[1], primfunc_name_hint="pack_int8_kernel")
        return bb.call_te(conv2d_nchwc_int8, call.args[0], packed, *args, int8_dot,
                          primfunc_name_hint="conv2d_nchwc_int8")
    if _packed_block(attrs) is not None:
        return bb.call_te(conv2d_nchwc, call.args[0], call.args[1], *args,
                          primfunc_name_hint="conv2d_nchwc")
    channels = int(call.args[0].ty.shape[1]) if attrs.data_layout == "NCHW" else 0
    out_channels = int(call.ty.shape[1]) if attrs.out_layout == "NCHW" else 0
    few = 0 < channels < block and out_channels % block == 0 and attrs.groups == 1
    if few and attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW":
        # Image stems (3 channels) cannot be packed, so ConvertLayout leaves them in NCHW,
        # where TOPI's naive conv ran ResNet-18's 7x7 stem 25x slower than the rest together.
        return bb.call_te(conv2d_nchw_packed_out, call.args[0], call.args[1], *args, block,
                          primfunc_name_hint="conv2d_nchw_packed_out")
    return call  # plain layouts: TVM's own legalization handles them later


def _sliding_window(data, kernel_size, strides, padding, dilation, out_dtype):
    """Pad NCHW or NCHW{b}c data for a conv; returns (out_h, out_w, kh, kw, window) with
    window(b, channel, y, x[, lane]) the input under tap (kh, kw) of output pixel (y, x),
    cast to out_dtype. padding is [top, left, bottom, right] as in Relax."""
    (height, width), (kh_size, kw_size) = (int(d) for d in data.shape[2:4]), kernel_size
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    out_h = (height + top + bottom - (kh_size - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw_size - 1) * dw - 1) // sw + 1
    lanes = [0] * (len(data.shape) - 4)
    padded = topi.nn.pad(data, [0, 0, top, left, *lanes], [0, 0, bottom, right, *lanes],
                         name="data_pad")
    kh = te.reduce_axis((0, kh_size), name="kh")
    kw = te.reduce_axis((0, kw_size), name="kw")

    def window(b, channel, y, x, *lane):
        return padded[b, channel, y * sh + kh * dh, x * sw + kw * dw, *lane].astype(out_dtype)

    return out_h, out_w, kh, kw, window


def conv2d_nchw_packed_out(data, kernel, strides, padding, dilation, groups, out_dtype, block):
    """NCHW conv computed on output channel blocks (vectorizable) and unpacked to NCHW."""
    o_channels, i_channels, kh_size, kw_size = (int(d) for d in kernel.shape)
    packed_kernel = te.compute(
        (o_channels // block, i_channels, kh_size, kw_size, block),
        lambda oc, ic, kh, kw, ob: kernel[oc * block + ob, ic, kh, kw],
        name="kernel_pack",
    )
    n = int(data.shape[0])
    ic = te.reduce_axis((0, i_channels), name="ic")
    out_h, out_w, kh, kw, window = _sliding_window(data, (kh_size, kw_size), strides, padding,
                                                   dilation, out_dtype)
    packed = te.compute(
        (n, o_channels // block, out_h, out_w, block),
        lambda b, oc, y, x, ob: te.sum(
            window(b, ic, y, x) * packed_kernel[oc, ic, kh, kw, ob].astype(out_dtype),
            axis=[ic, kh, kw],
        ),
        name="conv2d_nchw_packed_out",
    )
    return te.compute(
        (n, o_channels, out_h, out_w),
        lambda b, c, y, x: packed[b, c // block, y, x, c % block],
        name="conv2d_unpack",
    )


def conv2d_nchwc(data, kernel, strides, padding, dilation, groups, out_dtype):
    """conv2d with data (N, C/b, H, W, b) and kernel (O/b, C/groups, KH, KW, b).

    Args:
        padding: [top, left, bottom, right] as in Relax.
    Returns:
        te.Tensor (N, O/b, OH, OW, b).
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_chunks, in_per_group, kh_size, kw_size, _ = (int(d) for d in kernel.shape)
    out_h, out_w, kh, kw, window = _sliding_window(data, (kh_size, kw_size), strides, padding,
                                                   dilation, out_dtype)
    out_shape = (n, o_chunks, out_h, out_w, block)

    if groups == 1 and in_per_group % block == 0:
        icc = te.reduce_axis((0, in_per_group // block), name="icc")
        icb = te.reduce_axis((0, block), name="icb")
        return te.compute(
            out_shape,
            lambda b, oc, y, x, ob: te.sum(
                window(b, icc, y, x, icb)
                * kernel[oc, icc * block + icb, kh, kw, ob].astype(out_dtype),
                axis=[icc, icb, kh, kw],
            ),
            name="conv2d_nchwc",
        )
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


def pack_int8_kernel(kernel):
    """OIHW{b}o int8 weights as (O/b, I/4, KH, KW, b, 4): each output lane's 4 consecutive
    input channels side by side, the 32 bytes one vpmaddubsw multiplies."""
    o_chunks, i_channels, kh_size, kw_size, block = (int(d) for d in kernel.shape)
    return te.compute(
        (o_chunks, i_channels // 4, kh_size, kw_size, block, 4),
        lambda oc, ic4, kh, kw, ob, ici: kernel[oc, ic4 * 4 + ici, kh, kw, ob],
        name="int8_kernel_pack",
    )


def conv2d_nchwc_int8(data, kernel, strides, padding, dilation, groups, out_dtype, dot):
    """8-bit NCHW{b}c data x int8 packed kernel (see pack_int8_kernel) -> int32 NCHW{b}c.

    The innermost reduction runs over 4 consecutive input channels, which edgec.schedules
    tensorizes with the edgec.intrinsics kind `dot` (recorded on the block for it).
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_chunks, _, kh_size, kw_size, _, _ = (int(d) for d in kernel.shape)
    out_h, out_w, kh, kw, window = _sliding_window(data, (kh_size, kw_size), strides, padding,
                                                   dilation, out_dtype)
    icc = te.reduce_axis((0, c_chunks), name="icc")
    ic4 = te.reduce_axis((0, block // 4), name="ic4")
    ici = te.reduce_axis((0, 4), name="ici")
    return te.compute(
        (n, o_chunks, out_h, out_w, block),
        lambda b, oc, y, x, ob: te.sum(
            window(b, icc, y, x, ic4 * 4 + ici)
            * kernel[oc, icc * (block // 4) + ic4, kh, kw, ob, ici].astype(out_dtype),
            axis=[icc, kh, kw, ic4, ici],
        ),
        name="conv2d_nchwc_int8",
        attrs={"edgec_dot": dot},
    )

"""Legalization: which edgec.codegen.kernels compute each Relax conv2d and matmul becomes.

TVM's own legalization handles every other op (and convs edgec has no kernel for) later.
Weight repacking is emitted as its own TE function: on constant weights FoldConstant runs it
at build time, so the compiled model reads weights in the order its micro-kernels want.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax, topi

from edgec.codegen.kernels import (
    MAX_FLOAT_EXACT_TERMS,
    conv2d_nchw_int8_stem,
    conv2d_nchw_packed_out,
    conv2d_nchwc,
    conv2d_nchwc_dense,
    conv2d_nchwc_int8,
    dense_packed,
    integer_sums_in_float,
    pack_dense_weight,
    pack_float_kernel,
    pack_int8_kernel,
    pack_int8_stem_kernel,
    pack_stem_kernel,
)
from edgec.codegen.legalize_plain import legalize_plain_conv, output_width
from edgec.codegen.plain_kernels import matmul_int8_as_conv, pack_nhwc_int8_kernel
from edgec.codegen.row_tails import int8_padded_width
from edgec.codegen.weight_packs import emit_weight_pack
from edgec.codegen.winograd import (
    conv2d_nchwc_winograd,
    winograd_for_int8,
    winograd_tile,
    winograd_weight,
)
from edgec.layout.blocks import block_of

_PACKED_KERNEL = re.compile(r"^OIHW(\d+)o$")


def _packed_block(attrs) -> int | None:
    """The channel block of a conv in NCHW{b}c with OIHW{b}o weights and the same output
    layout, None for any other layout combination."""
    block = block_of(attrs.data_layout)
    kernel = _PACKED_KERNEL.match(attrs.kernel_layout)
    if block is None or kernel is None or attrs.out_layout != attrs.data_layout:
        return None
    return block


def legalize_map(block: int, cpu) -> dict:
    """Ops edgec legalizes itself; pass to relax.transform.LegalizeOps(customize_legalize_map).

    Args:
        block: the model's channel block (see edgec.layout.choose_block).
        cpu: the target's edgec.cpu.CpuCaps: its int8 dot-product kind, SIMD width and
            register count shape the micro-kernels.
    """
    from edgec.codegen.row_pools import legalize_max_pool2d
    from edgec.codegen.softmax import legalize_softmax

    lanes = cpu.accumulator_lanes
    return {"relax.nn.conv2d":
            lambda bb, call: _legalize_conv2d(bb, call, block, cpu, lanes),
            "relax.matmul": lambda bb, call: _legalize_matmul(bb, call, cpu),
            "relax.nn.softmax": legalize_softmax,
            "relax.nn.max_pool2d": legalize_max_pool2d}


def _blocks_per_tile(out_chunks: int, block: int, lanes: int) -> int:
    """Channel blocks computed together: lanes // block, halved until it divides out_chunks."""
    tile = max(1, lanes // block)
    while out_chunks % tile:
        tile //= 2
    return tile


def _int8_dot_applies(call: relax.Call, block: int, kind: str) -> bool:
    """A dense packed 8-bit x int8 -> int32 conv whose block fits the `kind` intrinsic, with
    constant weights (for "avx2": small enough that vpmaddubsw cannot saturate)."""
    from edgec.codegen import intrinsics

    if _packed_block(call.attrs) != block or not intrinsics.lanes(kind, block):
        return False
    return _dot_operands_fit(call, kind)


def _dot_operands_fit(call: relax.Call, kind: str) -> bool:
    """An ungrouped conv whose operands `kind`'s dot product takes (_dot_takes)."""
    return int(call.attrs.groups) == 1 and _dot_takes(call, kind)


def _dot_takes(call: relax.Call, kind: str | None) -> bool:
    """A conv or matmul of `kind`'s 8-bit activations x constant int8 weights -> int32 that
    the dot product computes exactly (for "avx2": no |weight| past MAX_WEIGHT)."""
    from edgec.codegen import intrinsics

    data, weight = call.args[0], call.args[1]
    if kind is None or (str(data.ty.dtype), str(weight.ty.dtype), str(call.ty.dtype)) != (
            intrinsics.activation_dtype(kind), "int8", "int32"):
        return False
    if not isinstance(weight, tvm.ir.Constant):
        return False
    if kind != "avx2":
        return True
    values = weight.value.numpy()
    return int(np.abs(values.astype(np.int32)).max()) <= intrinsics.MAX_WEIGHT


def _int8_stem_applies(call: relax.Call, block: int, wide: int, kind: str | None) -> bool:
    """An 8-bit NCHW image stem of at most 4 channels with a packed output, whose
    accumulator width fits the `kind` intrinsic."""
    from edgec.codegen import intrinsics

    attrs = call.attrs
    if kind is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return False
    if block_of(attrs.out_layout) != block:  # None for NCHW
        return False
    if int(call.args[0].ty.shape[1]) > 4 or not intrinsics.lanes(kind, wide):
        return False
    return _dot_operands_fit(call, kind)


def _winograd_tile(call: relax.Call, block: int, cpu) -> int | None:
    """The Winograd output tile (edgec.codegen.winograd.winograd_tile) of a packed 3x3
    stride-1 ungrouped conv with constant weights: float32, or 8-bit where the AVX2 dot
    product would compute it (winograd_for_int8); None for every other conv."""
    attrs, data, weight = call.attrs, call.args[0], call.args[1]
    if _packed_block(attrs) != block or int(attrs.groups) != 1:
        return None
    if not isinstance(weight, tvm.ir.Constant):
        return None
    dtypes = {str(data.ty.dtype), str(weight.ty.dtype), str(call.ty.dtype)}
    if dtypes == {"float32"}:
        channels = int(data.ty.shape[1]) * int(data.ty.shape[4])
        return winograd_tile(call, cpu) if channels % block == 0 else None
    if winograd_for_int8(cpu.int8_dot) and _int8_dot_applies(call, block, "avx2"):
        return winograd_tile(call, cpu)
    return None


def _sums_exact_in_float(call: relax.Call) -> bool:
    """An 8-bit x int8 -> int32 conv with few enough terms per output that float32 sums
    are exact (see edgec.codegen.kernels.integer_sums_in_float)."""
    data, weight = call.args[0], call.args[1]
    if str(data.ty.dtype) not in ("uint8", "int8") or str(weight.ty.dtype) != "int8":
        return False
    kernel_layout = str(call.attrs.kernel_layout)
    if str(call.ty.dtype) != "int32" or sorted(kernel_layout[:4]) != sorted("OIHW"):
        return False
    terms = 1
    for axis in "IHW":  # input channels per group, kernel height, kernel width
        terms *= int(weight.ty.shape[kernel_layout.index(axis)])
    return terms <= MAX_FLOAT_EXACT_TERMS


def _legalize_conv2d(bb: relax.BlockBuilder, call: relax.Call, block: int, cpu,
                     lanes: int) -> relax.Expr:
    attrs, int8_dot = call.attrs, cpu.int8_dot
    args = (
        [int(s) for s in attrs.strides],
        [int(p) for p in attrs.padding],
        [int(d) for d in attrs.dilation],
        int(attrs.groups),
        str(call.ty.dtype),
    )
    m = _winograd_tile(call, block, cpu)
    if m:
        tile = _blocks_per_tile(int(call.args[1].ty.shape[0]), block, lanes)
        weight = call.args[1].value.numpy().astype(np.float32)  # 8-bit ones too
        return bb.call_te(conv2d_nchwc_winograd, call.args[0],
                          relax.const(winograd_weight(weight, tile, m)), args[1], args[4],
                          primfunc_name_hint="conv2d_nchwc_winograd")
    if int8_dot and _int8_dot_applies(call, block, int8_dot):
        tile = _blocks_per_tile(int(call.args[1].ty.shape[0]), block, lanes)
        packed = emit_weight_pack(bb, pack_int8_kernel, call.args[1], tile, name="pack_int8_kernel")
        row_to = int8_padded_width(int(call.ty.shape[3]), int8_dot, tile * block)
        return bb.call_te(conv2d_nchwc_int8, call.args[0], packed, *args, int8_dot, 0, row_to,
                          primfunc_name_hint="conv2d_nchwc_int8")
    conv_dense, conv_nchwc, conv_stem = conv2d_nchwc_dense, conv2d_nchwc, conv2d_nchw_packed_out
    if _sums_exact_in_float(call):
        conv_dense, conv_nchwc, conv_stem = (integer_sums_in_float(conv)
                                             for conv in (conv_dense, conv_nchwc, conv_stem))
    if _packed_block(attrs) is not None:
        data, weight = call.args[0], call.args[1]
        channels = int(data.ty.shape[1]) * int(data.ty.shape[4])
        if int(attrs.groups) == 1 and channels % block == 0:
            tile = _blocks_per_tile(int(weight.ty.shape[0]), block, lanes)
            packed = emit_weight_pack(bb, pack_float_kernel, weight, tile,
                                      name="pack_float_kernel")
            return bb.call_te(conv_dense, data, packed, *args,
                              primfunc_name_hint="conv2d_nchwc")
        return bb.call_te(conv_nchwc, data, weight, *args, primfunc_name_hint="conv2d_nchwc")
    channels = int(call.args[0].ty.shape[1]) if attrs.data_layout == "NCHW" else 0
    out_block = block_of(attrs.out_layout) if attrs.out_layout != "NCHW" else 0
    out_channels = int(call.ty.shape[1]) * (out_block or 1)
    few = 0 < channels < block and out_channels % block == 0 and attrs.groups == 1
    if few and attrs.kernel_layout == "OIHW" and out_block in (0, block):
        # Image stems (3 channels) cannot be packed, so ConvertLayout leaves their input in
        # NCHW, where TOPI's naive conv ran ResNet-18's 7x7 stem 25x slower than the rest
        # together. edgec.layout.stems gives them a packed output.
        wide = block * _blocks_per_tile(out_channels // block, block, lanes)
        if _int8_stem_applies(call, block, wide, int8_dot):
            packed = emit_weight_pack(bb, pack_int8_stem_kernel, call.args[1], wide,
                                      name="pack_int8_stem_kernel")
            return bb.call_te(conv2d_nchw_int8_stem, call.args[0], packed, *args, block,
                              int8_dot, primfunc_name_hint="conv2d_nchw_int8_stem")
        packed = emit_weight_pack(bb, pack_stem_kernel, call.args[1], wide, name="pack_stem_kernel")
        return bb.call_te(conv_stem, call.args[0], packed, *args, out_block,
                          primfunc_name_hint="conv2d_nchw_packed_out")
    dot = int8_dot if int8_dot and _dot_operands_fit(call, int8_dot) else None
    plain = legalize_plain_conv(bb, call, cpu, integer=_sums_exact_in_float(call), dot=dot)
    return plain if plain is not None else _by_tvm(bb, call)


def _by_tvm(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """A conv no edgec kernel covers goes to TVM's own legalization (the compile report lists
    it among the generic functions). TVM legalizes a conv only when its output layout equals
    its input layout; otherwise it leaves the op in place and VM codegen fails ("CodeGenVM
    cannot emit this Relax operator directly"). ConvertLayout makes such convs (NCHW in,
    NCHW8c out) for a PaddlePaddle 1x1 conv after a stem: those compute in their input
    layout, then transform the result."""
    attrs = call.attrs
    if attrs.out_layout == attrs.data_layout:
        return call  # plain layouts: TVM's own legalization handles them later
    same = bb.normalize(relax.op.nn.conv2d(
        call.args[0], call.args[1], attrs.strides, attrs.padding, attrs.dilation,
        attrs.groups, attrs.data_layout, attrs.kernel_layout, attrs.data_layout,
        attrs.out_dtype))
    computed = bb.emit(tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")(bb, same))
    return bb.call_te(topi.layout_transform, computed, attrs.data_layout, attrs.out_layout,
                      primfunc_name_hint="layout_transform")


def _legalize_matmul(bb: relax.BlockBuilder, call: relax.Call, cpu) -> relax.Expr:
    """A classifier head (a few rows times a constant K x N weight): float on weights packed
    by pack_dense_weight, 8-bit on the dot product as a 1x1 NHWC conv; any other matmul is
    left to TVM."""
    data, weight = call.args
    if not isinstance(weight, tvm.ir.Constant) or len(weight.ty.shape) != 2:
        return call
    if len(data.ty.shape) != 2 or int(data.ty.shape[0]) > 4:
        return call
    dtypes = (str(data.ty.dtype), str(weight.ty.dtype), str(call.ty.dtype))
    if set(dtypes) == {"float32"}:
        packed = emit_weight_pack(bb, pack_dense_weight, weight, cpu.matmul_columns,
                                  name="pack_dense_weight")
        return bb.call_te(dense_packed, data, packed, int(weight.ty.shape[1]),
                          primfunc_name_hint="dense_packed")
    dotted = _int8_matmul(bb, call, cpu) if _dot_takes(call, cpu.int8_dot) else None
    return dotted if dotted is not None else call


def _int8_matmul(bb: relax.BlockBuilder, call: relax.Call, cpu) -> relax.Expr | None:
    """The head as a 1x1 NHWC conv over one image row of M pixels (plain_kernels.
    matmul_int8_as_conv): ShuffleNetV2's 1024 x 1000 INT8 head had run on TVM's generic
    int32 matmul."""
    from edgec.codegen import intrinsics

    weight = call.args[1].value.numpy()
    columns = int(weight.shape[1])
    wide = output_width(columns, cpu)
    if not intrinsics.lanes(cpu.int8_dot, wide):
        return None
    ohwi = relax.const(np.ascontiguousarray(weight.T.reshape(columns, 1, 1, -1)))
    packed = emit_weight_pack(bb, pack_nhwc_int8_kernel, ohwi, "OHWI", wide,
                              name="pack_nhwc_int8_kernel")
    return bb.call_te(matmul_int8_as_conv, call.args[0], packed, cpu.int8_dot, columns,
                      primfunc_name_hint="matmul_int8")

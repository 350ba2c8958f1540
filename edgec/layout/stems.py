"""Let an image stem write the packed layout itself.

ConvertLayout leaves a conv whose input channels the block does not divide (3-channel
stems) in NCHW and packs its result afterwards: the stem's NCHW output, its epilogue
(bias, ReLU or hard-swish), a max pool and then a layout_transform each pass over the
largest activations of the model. Here the layout_transform is pushed up through that
elementwise/pool chain into the conv (NCHW data, NCHW{b}c out), which edgec.codegen.kernels
computes directly.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgec.layout.blocks import block_of
from edgec.tvm_compat.relax_modules import replace_main

_ELEMENTWISE = {
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
    "relax.minimum", "relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.nn.silu",
    "relax.astype", "relax.round",  # an INT8 stem's requantization
}

_POOLS = {"relax.nn.max_pool2d": relax.op.nn.max_pool2d,
          "relax.nn.avg_pool2d": relax.op.nn.avg_pool2d}


def pack_stem_outputs(ir: tvm.IRModule, layout: str) -> tvm.IRModule:
    """`ir` with NCHW convs followed (through elementwise ops) by a transform to `layout`
    computing `layout` directly; unchanged when that would compute anything twice."""
    block = block_of(layout)
    if block is None:
        return ir
    rewriter = _Packer(ir, block)
    main = rewriter.visit_expr(ir["main"])
    main = relax.analysis.remove_all_unused(main)
    if _conv_count(main) != _conv_count(ir["main"]):  # a stem output had other users
        return ir
    return replace_main(ir, main)


def _conv_count(func: relax.Function) -> int:
    count = 0

    def visit(expr) -> None:
        nonlocal count
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            count += 1

    relax.analysis.post_order_visit(func, visit)
    return count


def _is_packing(call: relax.Call, block: int) -> bool:
    """A layout_transform from NCHW (1, C, H, W) to NCHW{block}c (1, C/b, H, W, b)."""
    if getattr(call.op, "name", "") != "relax.layout_transform":
        return False
    source = [int(d) for d in call.args[0].ty.shape]
    packed = [int(d) for d in call.ty.shape]
    if len(source) != 4 or packed != [source[0], source[1] // block, *source[2:], block]:
        return False
    index_map = call.attrs.index_map
    probe = [3, 2 * block + 5, 7, 11]  # (n, c, h, w) with c % block == 5
    mapped = [int(v) for v in index_map.map_indices([tvm.tirx.IntImm("int64", p)
                                                     for p in probe])]
    return mapped == [3, 2, 7, 11, 5] and source[1] % block == 0


@mutator
class _Packer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, block: int) -> None:
        super().__init__(mod)
        self.block = block
        self.values = relax.analysis.get_var2val(mod["main"])
        self.packed: dict = {}

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if _is_packing(call, self.block):
            packed = self._packed(call.args[0])
            if packed is not None:
                return packed
        return super().visit_call_(call)

    def _packed(self, expr: relax.Expr) -> relax.Expr | None:
        """`expr` (NCHW) computed in NCHW{b}c, or None when its producers do not allow it."""
        if isinstance(expr, tvm.ir.Constant):
            return self._packed_constant(expr)
        if not isinstance(expr, relax.Var) or expr not in self.values:
            return None
        if expr in self.packed:
            return self.packed[expr]
        call = self.values[expr]
        if not isinstance(call, relax.Call):
            return None
        name = getattr(call.op, "name", "")
        if name == "relax.nn.conv2d":
            result = self._packed_conv(call)
        elif name in _POOLS:
            result = self._packed_pool(call)
        elif name in _ELEMENTWISE:
            args = [self._packed(arg) for arg in call.args]
            result = None if any(a is None for a in args) else relax.Call(
                call.op, args, call.attrs)
        else:
            result = None
        if result is not None:
            result = self.builder_.emit(result)
        self.packed[expr] = result
        return result

    def _packed_conv(self, call: relax.Call) -> relax.Expr | None:
        attrs = call.attrs
        layouts = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout)
        if layouts != ("NCHW", "OIHW", "NCHW") or int(attrs.groups) != 1:
            return None
        if int(call.ty.shape[1]) % self.block:
            return None
        return relax.op.nn.conv2d(
            self.visit_expr(call.args[0]), self.visit_expr(call.args[1]),
            strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation, groups=1,
            data_layout="NCHW", kernel_layout="OIHW", out_layout=f"NCHW{self.block}c",
            out_dtype=attrs.out_dtype)

    def _packed_pool(self, call: relax.Call) -> relax.Expr | None:
        attrs = call.attrs
        data = self._packed(call.args[0])
        if data is None or (attrs.layout, attrs.out_layout) != ("NCHW", "NCHW"):
            return None
        packed = f"NCHW{self.block}c"
        return _POOLS[call.op.name](
            data, pool_size=attrs.pool_size, strides=attrs.strides, padding=attrs.padding,
            dilation=attrs.dilation, ceil_mode=attrs.ceil_mode,
            count_include_pad=attrs.count_include_pad, layout=packed, out_layout=packed)

    def _packed_constant(self, const: tvm.ir.Constant) -> relax.Expr | None:
        """Scalars broadcast unchanged; a (1, C, 1, 1) per-channel constant is packed."""
        value = const.value.numpy()
        if value.ndim == 0:
            return const
        if value.ndim != 4 or value.shape[0] != 1 or value.shape[2:] != (1, 1):
            return None
        channels = value.shape[1]
        if channels % self.block:
            return None
        packed = value.reshape(1, channels // self.block, self.block, 1, 1)
        return relax.const(np.ascontiguousarray(packed.transpose(0, 1, 3, 4, 2)))


# Input channels up to which an NHWC stem reads the NCHW image itself: an image's 3 (or 1,
# or 4), where a transpose to NHWC first was a pass over the whole input for nothing.
_IMAGE_CHANNELS = 4


def read_nchw_images(ir: tvm.IRModule) -> tvm.IRModule:
    """`ir` (NHWC) with each float conv of at most _IMAGE_CHANNELS input channels whose
    input is a transpose of an NCHW tensor reading that tensor (NCHW data, NHWC out):
    edgec.codegen.plain_kernels' NHWC tile broadcasts one input value at a time, from a
    plane as well as from a pixel. The transpose of a 224x224 image took 0.046 ms of
    MobileNetV1's 4.88 (AVX-512, Ice Lake Xeon, 2 threads), where ONNX Runtime's stem
    reads NCHW."""
    main = _ImageReader(ir).visit_expr(ir["main"])
    return replace_main(ir, relax.analysis.remove_all_unused(main))


@mutator
class _ImageReader(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.values = relax.analysis.get_var2val(mod["main"])

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        image = self._nchw_image(call)
        if image is None:
            return super().visit_call_(call)
        attrs = call.attrs
        return relax.op.nn.conv2d(
            self.visit_expr(image), self.visit_expr(call.args[1]), strides=attrs.strides,
            padding=attrs.padding, dilation=attrs.dilation, groups=1, data_layout="NCHW",
            kernel_layout=attrs.kernel_layout, out_layout="NHWC", out_dtype=attrs.out_dtype)

    def _nchw_image(self, call: relax.Call) -> relax.Expr | None:
        """The NCHW tensor a float NHWC stem conv reads through a transpose, else None."""
        if getattr(call.op, "name", "") != "relax.nn.conv2d":
            return None
        attrs, data = call.attrs, call.args[0]
        if (attrs.data_layout, attrs.out_layout, int(attrs.groups)) != ("NHWC", "NHWC", 1):
            return None
        if str(data.ty.dtype) != "float32" or str(call.ty.dtype) != "float32":
            return None
        if not isinstance(call.args[1], tvm.ir.Constant):  # edgec's kernel packs constants
            return None
        transpose = self.values.get(data) if isinstance(data, relax.Var) else None
        if not (isinstance(transpose, relax.Call)
                and getattr(transpose.op, "name", "") == "relax.permute_dims"
                and transpose.attrs.axes is not None
                and [int(a) for a in transpose.attrs.axes] == [0, 2, 3, 1]):
            return None
        image = transpose.args[0]
        channels = int(image.ty.shape[1])
        return image if channels <= _IMAGE_CHANNELS else None

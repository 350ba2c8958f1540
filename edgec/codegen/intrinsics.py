"""edgec's tensor intrinsics: the one place that touches TVM's TensorIntrin registry.

Each is an 8-bit x int8 -> int32 dot product of a vector of output lanes times 4 input
channels: C[i] += sum_k A[k] * B[i, k], the 4 activations broadcast to every lane.

- "avx2": vpmaddubsw sums u8 x s8 pairs into int16, vpmaddwd sums those into int32 (32
  multiply-accumulates in two instructions, 8 lanes). TVM 0.27 registers x86 int8 dot
  products only for AVX-512 and VNNI; without this, AVX2 int8 convs compile to widened
  int32 multiplies, no faster than FP32. vpmaddubsw saturates a pair sum beyond int16, so it
  is exact only when every |weight| <= MAX_WEIGHT (255 * 64 * 2 = 32640 fits):
  edgec.codegen.legalize
  checks that before using it, and the quantize stage asks for 7-bit weights on AVX2
- "vnni": one vpdpbusd per 8 or 16 lanes (the ymm or zmm form), exact for all int8 weights.
- "sdot": AArch64's sdot (Armv8.2 dotprod), 4 lanes, int8 x int8: activations are
  quantized to int8 for it (edgec.pipeline asks ONNX Runtime for QInt8 activations).
"""

from __future__ import annotations

import tvm.script
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

KINDS = ("avx2", "vnni", "sdot")
MAX_WEIGHT = 64  # "avx2" only


def lanes(kind: str, block: int) -> int | None:
    """Output lanes per instruction of `kind` for `block` contiguous output channels (a
    channel block, or several accumulated together); None: no fit."""
    if kind == "avx2":
        return 8 if block % 8 == 0 else None
    if kind == "sdot":
        return 4 if block % 4 == 0 else None
    return next((width for width in (16, 8) if block % width == 0), None)


def activation_dtype(kind: str) -> str:
    """The activation type the `kind` dot product multiplies (weights are always int8)."""
    return "int8" if kind == "sdot" else "uint8"


# Description and implementations share one signature: TensorIntrin matches them buffer by
# buffer, so they are written once, as TVMScript text, around each body.
_SIGNATURE = """
@T.prim_func(s_tir=True)
def {name}(
    A: T.Buffer((4,), "{a_dtype}", offset_factor=1),
    B: T.Buffer(({width}, 4), "int8", offset_factor=1),
    C: T.Buffer(({width},), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:{width}], A[0:4], B[0:{width}, 0:4])
        T.writes(C[0:{width}])
"""

# C[i] += sum over k of A[k] * B[i, k], in int32: what every kind computes.
_DESCRIPTION = """
        for i in T.serial(0, {width}):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")
"""

# AVX2: the 4 input values, broadcast to every lane as one int32, then seen as 32 bytes;
# vpmaddubsw sums u8 x s8 pairs into int16, vpmaddwd (times 1) sums those pairs into int32.
_AVX2 = """
        a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a_u8 = T.reinterpret(T.broadcast(a_i32, 8), dtype="uint8x32")
        b_i8 = B.vload([0, 0], dtype="int8x32")
        pairs = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), a_u8, b_i8,
            dtype="int16x16")
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.int16x16(1),
            dtype="int32x8")
"""

# VNNI's vpdpbusd (u8 x s8) and AArch64's sdot (s8 x s8): C = intrinsic(C, A in every lane,
# B), where lane i sums the products of bytes 4i..4i+3 of both operands. LLVM 20+ types both
# multiplicands as byte vectors (TVM's own VNNI intrinsic still passes int32 vectors, which
# this LLVM rejects).
_ACCUMULATING_DOT = """
        a_i32 = T.reinterpret(A.vload([0], "{a_dtype}x4"), dtype="int32")
        a_bytes = T.reinterpret(T.broadcast(a_i32, {width}), dtype="{a_dtype}x{bytes}")
        C[T.ramp(T.int32(0), 1, {width})] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("{llvm}"),
            C.vload([0], dtype="int32x{width}"), a_bytes,
            B.vload([0, 0], dtype="int8x{bytes}"), dtype="int32x{width}")
"""


def _prim_func(name: str, body: str, width: int, a_dtype: str, **fields):
    source = (_SIGNATURE + body).format(name=name, width=width, a_dtype=a_dtype, **fields)
    return tvm.script.from_source(source, extra_vars={"T": T}, s_tir=True)


def _description(width: int, a_dtype: str):
    return _prim_func("description", _DESCRIPTION, width, a_dtype)


def _implementation(kind: str, width: int):
    if kind == "avx2":
        return _prim_func("implementation", _AVX2, 8, "uint8")
    llvm = ("llvm.aarch64.neon.sdot.v4i32.v16i8" if kind == "sdot"
            else f"llvm.x86.avx512.vpdpbusd.{32 * width}")
    return _prim_func("implementation", _ACCUMULATING_DOT, width, activation_dtype(kind),
                      bytes=4 * width, llvm=llvm)


def dot(kind: str, width: int) -> str:
    """Register (once) and return the name of the `kind` dot intrinsic with `width` lanes."""
    a_dtype = activation_dtype(kind)
    name = f"edgec_dot_{width}x4_{a_dtype[0]}8i8i32_{kind}"
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, _description(width, a_dtype), _implementation(kind, width))
    return name


def register_all() -> None:
    """Register every edgec intrinsic: replaying a tuning record that tensorized with one
    (an INT8 conv) fails unless the intrinsic is registered first."""
    for kind, widths in (("avx2", (8,)), ("vnni", (8, 16)), ("sdot", (4,))):
        for width in widths:
            dot(kind, width)

"""edgec's tensor intrinsics: the one place that touches TVM's TensorIntrin registry.

TVM 0.27 registers x86 int8 dot products only for AVX-512 and VNNI. On AVX2 the int8
convolutions would otherwise compile to widened int32 multiplies (8 multiply-accumulates per
instruction, no better than FP32). This adds the AVX2 micro-kernel: 8 output lanes times 4
input channels, u8 x s8 pairs summed by vpmaddubsw into int16, then by vpmaddwd into int32
(32 multiply-accumulates in two instructions).

vpmaddubsw saturates a pair sum beyond int16, so the kernel is exact only when every
|weight| <= MAX_WEIGHT (255 * 64 * 2 = 32640 fits); edgec.kernels checks that before using
it, and the quantize stage asks for 7-bit weights on x86 so that it applies.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

DOT_8X4_AVX2 = "edgec_dot_8x4_u8i8i32_avx2"
LANES, DEPTH = 8, 4
MAX_WEIGHT = 64


@T.prim_func(s_tir=True)
def _dot_8x4_desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        for i in T.serial(0, 8):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_8x4_avx2(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        # The 4 input values, broadcast to every lane as one int32, then seen as 32 bytes.
        a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a_u8 = T.reinterpret(T.broadcast(a_i32, 8), dtype="uint8x32")
        b_i8 = B.vload([0, 0], dtype="int8x32")
        pairs = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), a_u8, b_i8,
            dtype="int16x16")
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.int16x16(1),
            dtype="int32x8")


def dot_8x4_avx2() -> str:
    """Register (once) and return the name of the AVX2 u8 x s8 -> s32 8x4 dot intrinsic."""
    if TensorIntrin.get(DOT_8X4_AVX2, allow_missing=True) is None:
        TensorIntrin.register(DOT_8X4_AVX2, _dot_8x4_desc, _dot_8x4_avx2)
    return DOT_8X4_AVX2

"""A residual add of two 8-bit tensors, rounded as ONNX Runtime rounds it.

The QDQ graph says quantize(dequantize(a) + dequantize(b)): two float products, a float
sum, a division by the output scale. ONNX Runtime fuses that into QLinearAdd, which MLAS
computes as

    rint(fma(a, s_a/s_c, fma(b, s_b/s_c, z_c - fma(s_a/s_c, z_a, s_b/s_c * z_b))))

in float32, each fma rounded once. The two agree but where the sum lies within a few ulps
of a half step: on all 65536 (a, b) pairs for 400 random scale sets the QDQ formula
differed from ONNX Runtime 106 times in 26.2 M, this one never. One such flip in
SSD-Lite's first residual add (2.4999976 by the QDQ formula, 2.5 by ORT's) grew through
the random-weight net to 0.16 on a softmax score, and compile's check refused the build.
Matching the reference runtime bit for bit keeps that check tight.

Each fma is written as a float32 multiply and add. TVM lowers every such pair to LLVM's
fmuladd, which the backend fuses into one instruction where the CPU has one (FMA3 on every
x86 target edgec ships, FMLA on every aarch64 core): rounded once, as MLAS's FMA3 and NEON
kernels round it. Without an FMA unit it is a multiply and an add, as MLAS's SSE2 kernel
computes it. The first version emulated the single rounding in float64 (exact product, one
rounding on the cast back): the same bits, but a conversion to double and back around each
fma doubled the residual adds' epilogue; ResNet-50 INT8 ran 0.86x of that (bench/ab.py, 7
rounds, Zen 4, avx512-vnni), where 1x1 convs carrying an add had run at half the MAC rate
of the others.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from edgec.quant.integer_patterns import INT_RANGE, QParams
from edgec.tvm_compat.ir_shapes import static_shape


def _fma32(x: float, y: float, z: float) -> np.float32:
    return np.float32(np.float64(x) * np.float64(y) + np.float64(z))


def ort_add_constants(a: QParams, b: QParams, out: QParams) -> tuple[float, float, float]:
    """(s_a/s_c, s_b/s_c, fixed part) as float32 values, computed as MLAS computes them."""
    ratio_a = np.float32(np.float32(a.scale) / np.float32(out.scale))
    ratio_b = np.float32(np.float32(b.scale) / np.float32(out.scale))
    offsets = _fma32(ratio_a, np.float32(a.zero_point),
                     np.float32(ratio_b * np.float32(b.zero_point)))
    fixed = np.float32(np.float32(out.zero_point) - offsets)
    return float(ratio_a), float(ratio_b), float(fixed)


def applies(a: QParams, b: QParams, out: QParams, a_float: relax.Expr,
            b_float: relax.Expr) -> bool:
    """Whether ONNX Runtime would run this add as QLinearAdd on two full tensors: all three
    8-bit of one type, the dequantized inputs of one static shape (a broadcast scalar takes
    another MLAS path)."""
    if not a.dtype == b.dtype == out.dtype or out.dtype not in INT_RANGE:
        return False
    dims = static_shape(a_float)
    return dims is not None and dims == static_shape(b_float)


def ort_add(a_values: relax.Expr, b_values: relax.Expr, a: QParams, b: QParams,
            out: QParams) -> relax.Expr:
    """The 8-bit sum of two 8-bit tensors, bit-exact with ONNX Runtime's QLinearAdd."""
    ratio_a, ratio_b, fixed = ort_add_constants(a, b, out)

    def fma(values: relax.Expr, ratio: float, addend: relax.Expr) -> relax.Expr:
        product = relax.op.multiply(relax.op.astype(values, "float32"),
                                    relax.const(ratio, "float32"))
        return relax.op.add(product, addend)

    partial = fma(b_values, ratio_b, relax.const(fixed, "float32"))
    total = fma(a_values, ratio_a, partial)
    low, high = INT_RANGE[out.dtype]
    clamped = relax.op.minimum(
        relax.op.maximum(relax.op.round(total), relax.const(float(low), "float32")),
        relax.const(float(high), "float32"))
    return relax.op.astype(clamped, out.dtype)

"""Asking TVM's LLVM whether a target's mcpu and mattr mean anything.

An unknown -mcpu makes LLVM fall back to a generic CPU and an unknown +feature is ignored,
each with a warning per compiled function (90 lines for a MobileNet) and code that is
slower than asked for, with exit 0. edgec checks once, before compiling, and refuses.
"""

from __future__ import annotations

from typing import Any

from edgec.tvm_compat.log_filters import filtered_stderr


def invalid_settings(tvm_table: dict[str, Any]) -> list[str]:
    """What LLVM does not recognise in a [tvm] table: "mcpu X" and "mattr +Y" entries."""
    import tvm
    from tvm.target import codegen

    bad = []
    with filtered_stderr(lambda _line: False):  # LLVM warns once per query
        target = tvm.target.Target(dict(tvm_table))
        mcpu = tvm_table.get("mcpu")
        if mcpu and mcpu not in codegen.llvm_get_cpu_archlist(target):
            bad.append(f"mcpu {mcpu}")
        features = set(codegen.llvm_get_cpu_features(target))
        for attr in tvm_table.get("mattr", []):
            if attr.startswith("+") and attr[1:] not in features:
                bad.append(f"mattr {attr}")
    return bad


def is_aarch64(target) -> bool:
    """Whether a TVM target's code is AArch64 (its mtriple), as opposed to x86."""
    return str(target.attrs.get("mtriple", "")).startswith("aarch64")


def vector_registers(target) -> int:
    """SIMD registers a TVM target's code has: 32 on AArch64 and on x86 with AVX-512F
    (which gives ymm code 32 too), 16 on AVX2. The schedules see only the TVM target; this
    is edgec.cpu.CpuCaps.vector_registers read from what LLVM makes of its mcpu and mattr."""
    from tvm.target import codegen

    if is_aarch64(target):
        return 32
    with filtered_stderr(lambda _line: False):
        return 32 if codegen.target_has_features("avx512f", target) else 16


def vector_bytes(target) -> int:
    """Bytes of one SIMD register in a TVM target's float code: 16 on AArch64 (NEON), 64 on
    x86 with AVX-512F, 32 on AVX2 (edgec.cpu.CpuCaps.float_lanes x 4)."""
    from tvm.target import codegen

    if is_aarch64(target):
        return 16
    with filtered_stderr(lambda _line: False):
        return 64 if codegen.target_has_features("avx512f", target) else 32

"""Which of TVM's tensor-intrinsic tables get parsed (tvm.s_tir.tensor_intrin, 0.27): the
import registers every table, each a few dozen TVMScript functions parsed at import."""

from __future__ import annotations

import sys
import types

# Importing tvm.s_tir.tensor_intrin pulls these GPU intrinsic tables in: ~12 s of its ~14 s.
# MetaSchedule imports it in every LocalBuilder worker, and LocalBuilder's pool restarted per
# batch and timed out after 30 s, so on small machines every build "timed out" and nothing
# was tuned. Of the CPU tables, arm_cpu's takes 7.2 s to parse on a Zen 1, x86's 0.8 s: a
# tune loads only its own architecture's, and builders none.
_GPU_INTRINSICS = ("cuda", "rocm", "hexagon", "metal")
_CPU_INTRINSICS = {"x86_64": "x86", "aarch64": "arm_cpu"}


def load_cpu_intrinsics_only(arch: str | None = None) -> None:
    """Make `import tvm.s_tir.tensor_intrin` register only `arch`'s CPU tensor intrinsics
    (MetaSchedule's search rules tensorize with them), or none for arch "": a builder
    compiles scheduled modules, which carry the intrinsics' bodies already."""
    import importlib

    wanted = {_CPU_INTRINSICS.get(arch, "")} if arch is not None else set(
        _CPU_INTRINSICS.values())
    for name in (*_GPU_INTRINSICS, "riscv_cpu", *_CPU_INTRINSICS.values()):
        if name not in wanted:
            full = f"tvm.s_tir.tensor_intrin.{name}"
            sys.modules.setdefault(full, types.ModuleType(full))
    import tvm.s_tir.tensor_intrin  # noqa: F401

    for name in wanted - {""}:  # one stubbed by an earlier tune for another architecture
        full = f"tvm.s_tir.tensor_intrin.{name}"
        if full in sys.modules and not hasattr(sys.modules[full], "__file__"):
            del sys.modules[full]
        importlib.import_module(full)


def load_no_intrinsics() -> None:
    load_cpu_intrinsics_only("")


def target_arch(target) -> str:
    """x86_64 or aarch64 (or another triple's first part) for a tvm Target."""
    import platform

    triple = str(target.attrs.get("mtriple", "")) or platform.machine()
    return triple.split("-")[0]

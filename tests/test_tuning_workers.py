"""The tuner's candidate builder: worker processes kept across batches, and only the tensor
intrinsics the tune's architecture needs.

Checks run the built candidates against numpy and read the workers' process ids and TVM's
own intrinsic registry.
"""

from __future__ import annotations

import numpy as np


def scale_candidate(factor: float):
    """A scheduled PrimFunc module as MetaSchedule hands a builder: y = x * factor."""
    import tvm
    from tvm import te

    x = te.placeholder((64,), "float32", name="x")
    y = te.compute((64,), lambda i: x[i] * factor, name="y")
    return tvm.IRModule({"main": te.create_prim_func([x, y])})


def export_with_pid(mod) -> str:
    """MetaSchedule's default export, into a folder named by the worker's process id."""
    import os
    import tempfile

    from tvm.support.tar import tar

    folder = tempfile.mkdtemp(prefix=f"pid{os.getpid()}-")
    path = os.path.join(folder, "candidate.tar")
    mod.export_library(path, fcompile=tar)
    return path


def test_builder_workers_serve_several_batches_and_their_candidates_compute_right():
    """LocalBuilder started 2 new processes per batch (each importing TVM: ~13 s of a
    batch's ~14 s on a Zen 1); the pooled builder's batches come from the same processes,
    and what they build runs and computes what numpy does."""
    import sys

    import cloudpickle
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from edgec.tvm_compat import metaschedule

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests/
    builder = metaschedule.make_builder(None, workers=2)
    builder.f_export = export_with_pid
    target = tvm.target.Target({"kind": "llvm"})
    try:
        batches = [builder.build([ms.builder.BuilderInput(scale_candidate(f), target)
                                  for f in (2.0, 3.0, 5.0)]) for _ in range(3)]
    finally:
        builder.close()
    x = np.arange(64, dtype=np.float32)
    pids = []
    for batch in batches:
        for factor, result in zip((2.0, 3.0, 5.0), batch, strict=True):
            assert result.error_msg is None, result.error_msg
            folder = result.artifact_path.split("/")[-2]
            pids.append(int(folder.split("-")[0][3:]))
            lib = tvm.runtime.load_module(result.artifact_path)
            y = tvm.runtime.tensor(np.zeros(64, np.float32))
            lib["main"](tvm.runtime.tensor(x), y)
            np.testing.assert_array_equal(y.numpy(), x * factor)
    assert len(set(pids)) <= 2, f"9 builds in 3 batches came from processes {sorted(set(pids))}"


INTRINSICS_PROBE = """
import sys
from tvm.s_tir import TensorIntrin
from edgec.tvm_compat import tensor_intrinsics

def registered(name):
    return TensorIntrin.get(name, allow_missing=True) is not None

tensor_intrinsics.load_cpu_intrinsics_only("x86_64")
arm = sys.modules["tvm.s_tir.tensor_intrin.arm_cpu"]
print(registered("dot_16x4_vnni"), registered("dot_4x4_i8i8s32_sdot"), hasattr(arm, "__file__"))
tensor_intrinsics.load_cpu_intrinsics_only("aarch64")
print(registered("dot_16x4_vnni"), registered("dot_4x4_i8i8s32_sdot"))
"""


def test_a_tune_registers_its_own_architectures_intrinsics_and_the_other_later():
    """An x86 tune parses x86's tables only (arm_cpu's take 7 s of ~8); a later aarch64 tune
    in the same process still finds the Arm dot-product intrinsics its search rules use.
    (A fresh process: in this one an earlier test may have loaded every table.)"""
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run([sys.executable, "-c", INTRINSICS_PROBE], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False", "True", "True"], out.stdout

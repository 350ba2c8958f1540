"""The instruction-level latency estimate (edgec bench --estimate): an instruction-count
guard on one small model's rpi4 build, so an ARM kernel regression fails CI, and the
command line around it. Its accuracy against real timings is bench/estimate_check.py's job
(timed tests do not belong in CI on VMs that drift 1.5x)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from edgec.boards import emulator_root
from edgec.boards.estimate import cores, estimate
from edgec.errors import ConfigError

# MobileNetV3-Small for rpi4 (NCHW4c, NEON), measured 2026-12-01: 28,621,091 instructions
# per steady-state inference, 28,434,801 of them in compiled code (the same on a repeat);
# the TVM runtime between them 0.19 M. A kernel that loses its register blocking or its
# vectorization adds far more than the 6% headroom.
INSTRUCTIONS = (27.0e6, 30.5e6)


def test_an_unknown_core_is_refused_with_a_close_match():
    with pytest.raises(ConfigError, match="cortex-a72"):
        cores.lookup("cortex-a27")


@pytest.mark.slow
def test_mobilenet_v3_small_for_rpi4_executes_the_instructions_it_did(tmp_path):
    emulator_root.prepare()
    library = tmp_path / "mnv3s-rpi4.so"
    built = run_cli("compile", "zoo:mobilenet_v3_small", "--target", "rpi4", "-o",
                    str(library), "--no-check")
    assert built.returncode == 0, built.stderr
    report = estimate(library, "rpi4")
    assert INSTRUCTIONS[0] < report.instructions < INSTRUCTIONS[1], report.instructions
    runtime = sum(f.instructions for f in report.functions if f.name.startswith("(runtime"))
    assert runtime < 1e6, runtime
    assert 5 < report.ms < 40, report.summary()  # 15.2 ms at the Pi 4's 1.8 GHz
    # The command line: the target file's [board] table picks the core and its clock.
    shown = run_cli("bench", str(library), "--estimate", "--json", str(tmp_path / "e.json"))
    assert shown.returncode == 0, shown.stderr
    assert "cortex-a72" in shown.stdout and "estimated" in shown.stdout
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["core"]["clock_ghz"] == 1.8 and saved["instructions"] > INSTRUCTIONS[0]


def conv_candidates(tmp_path, target_name: str):
    """The 1x1 conv (64 -> 64 channels, 16x16; a 3x3 one would go Winograd, with fewer
    multiplies than its shape says) of a one-conv model lowered for the target, as
    MetaSchedule candidates built for it: edgec's default kernel and the naive loop nest
    (the unscheduled PrimFunc). Returns ([(library, args)] x2, multiply-adds of the conv)."""
    from onnx import TensorProto, helper, numpy_helper
    from tvm.s_tir import meta_schedule as ms_api
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from conftest import save_model
    from edgec import build, pipeline, targets
    from edgec.codegen.schedules import schedule_function
    from edgec.tvm_compat import metaschedule as ms

    weight = numpy_helper.from_array(np.full((64, 64, 1, 1), 0.01, np.float32), "w")
    model = save_model([helper.make_node("Conv", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 16, 16])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 16, 16])],
                       [weight], tmp_path / "conv.onnx")
    target = targets.load(target_name)
    ir = build.lower(pipeline.prepare(str(model), target, None, "default"), target,
                     default_schedules=False)
    tvm_target = target.tvm_target()
    task = max(ms.extract_tasks(ir, tvm_target), key=lambda t: ms.estimate_flops(ms.task_mod(t)))
    mod = ms.task_mod(task)
    import tvm

    with tvm_target:
        kernel = schedule_function(mod["main"], tvm_target)
    naive = tvm.s_tir.Schedule(mod)
    builder = ms.make_builder(target.cross_compiler)
    built = builder.build([ms_api.builder.BuilderInput(s.mod, tvm_target)
                           for s in (kernel, naive)])
    jobs = []
    for sch, result in zip((kernel, naive), built, strict=True):
        assert result.error_msg is None, result.error_msg
        args = ArgInfo.from_prim_func(sch.mod["main"])
        jobs.append((result.artifact_path, [(tuple(a.shape), str(a.dtype)) for a in args]))
    return jobs, 64 * 64 * 16 * 16


@pytest.mark.slow
def test_kernel_estimates_see_every_multiply_of_a_naive_loop_and_the_neon_kernels_vectors(
        tmp_path):
    """The simulated board's measurement (one kernel counted under qemu, priced by
    llvm-mca): the naive loop nest executes at least one instruction per multiply-add (the
    conv's MACs, from its shape), edgec's NEON kernel fewer than one per two (4-lane FMAs),
    and the estimate ranks the kernel well ahead. A broken library in the same batch fails
    alone."""
    from edgec.boards.estimate import kernels

    emulator_root.prepare()
    (kernel, naive), macs = conv_candidates(tmp_path, "rpi5")
    broken = (str(tmp_path / "missing.so"), kernel[1])
    fast, missing, slow = kernels.estimate_kernels([kernel, broken, naive],
                                                   cores.lookup("cortex-a76"), "aarch64")
    assert slow.instructions >= macs, (slow.instructions, macs)
    assert 0 < fast.instructions < macs / 2, (fast.instructions, macs)
    assert fast.seconds is not None and slow.seconds is not None
    assert slow.seconds > 3 * fast.seconds, (slow, fast)
    # Its compute term against the A76's peak (16 FLOPs a cycle at 2.4 GHz): a lower bound.
    assert fast.compute_s >= 2 * macs / (16 * 2.4e9), fast
    assert missing.seconds is None and "missing.so" in missing.error

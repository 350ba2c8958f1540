"""The simulated board: tuning for an absent aarch64 board with the instruction-level estimate
as MetaSchedule's runner (edgec.boards.estimate.kernels), instead of timing on the board.

Each candidate is cross-compiled as for a real board, run once under qemu-aarch64 with the
block counter, and priced with llvm-mca on the target's [board] core at its clock. Counts do
not drift with the machine's load, so a candidate measured twice gets the same figure, and
records from here are kept apart from a real board's ("estimated" in the CPU label): compile
applies them with the usual note about records from another CPU.

What it can and cannot tell: the estimate prices instructions (vector width, register
blocking, unrolling, Winograd's fewer multiplies) and each kernel's tensors streaming in once;
it does not see cache misses that one loop order takes and another avoids. Its accuracy on
whole models is in the README ("ARM speed, estimated"); on ranking kernel variants of one
task, bench/kernel_estimate_check.py measures it against real timings on x86.
"""

from __future__ import annotations

from collections.abc import Callable

from edgec.errors import ConfigError
from edgec.targets import Target

# What a searched candidate's estimate is multiplied by before it is compared with the
# measured default: it must beat the default by this margin to be kept. Measured on x86, where
# the same estimate can be checked against timings (bench/kernel_estimate_check.py, ResNet-18's
# 15 conv tasks with 3+ variants, x86_64 target, this Xeon, 2026-12-02): estimated and timed
# variants rank alike (median Spearman 0.79), yet the estimate's favourite was slower than
# the default in 11 of 15 tasks (up to 1.42x; 1.15x over the model): llvm-mca's L1 hits hide
# what larger tiles and other loop orders cost. Kept only when estimated >= 15% faster, one
# task changed, 0.994x the defaults (10%: five changed, two of them 1.23x and 1.42x slower).
HANDICAP = 1 / 0.85


def applies_to(target: Target) -> bool:
    """Whether tuning without a board goes through the simulated board: an aarch64 target
    (this machine cannot run its code) whose target file names a [board] core."""
    return not target.is_native and target.arch == "aarch64" and bool(target.board.get("core"))


def label(target: Target) -> str:
    """The "CPU measured on" of its records: the board's core, and that it is estimated."""
    board = target.board
    return (f"{target.name} board ({board['core']} at {board.get('clock_ghz', '?')} GHz), "
            "estimated: qemu counts x llvm-mca")


def check(target: Target, progress: Callable[[str], None] | None = None) -> None:
    """Raise unless the estimate can run here (qemu-user, llvm-19, the board's Python);
    prepares the emulated board's Python on first use (~150 MB download, once).

    Raises:
        ConfigError: the target has no [board] core.
        MissingDependencyError: qemu-user or llvm-19 is missing (with the apt line).
    """
    from edgec.boards import emulator_root
    from edgec.boards.estimate import costing, counting

    if not applies_to(target):
        raise ConfigError(f"target {target.name} has no [board] core to simulate; tune on the "
                          "board with --rpc HOST:PORT or --tracker HOST:PORT --key KEY")
    costing.check_tools()
    emulator_root.prepare(progress=progress)
    counting.guest("aarch64")  # raises when qemu-aarch64 is missing


def runner(target: Target, handicap: float = 1.0):
    """A MetaSchedule runner pricing candidates on the target's board core; `handicap`
    multiplies every figure (HANDICAP for the search's candidates, 1 for the defaults)."""
    from edgec.boards.estimate import cores, kernels
    from edgec.tvm_compat import metaschedule as ms

    board = target.board
    core = cores.with_overrides(cores.lookup(board["core"]),
                                **{k: board[k] for k in ("clock_ghz", "dram_gbps") if k in board})

    def estimate(jobs):
        return [(None if r.seconds is None else r.seconds * handicap, r.error)
                for r in kernels.estimate_kernels(jobs, core, target.arch)]

    return ms.make_estimating_runner(estimate)

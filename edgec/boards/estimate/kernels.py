"""The estimate of single compiled kernels: a simulated board for tuning.

MetaSchedule's candidates (one PrimFunc each, cross-compiled for the board) are run one after
another in a single emulated process (guest_kernels.py), each counted on its own by the
block counter (plugin.c, each=1), then priced like a whole library's blocks: llvm-mca cycles
of the blocks inside the candidate's library at the core's clock, plus the time its
arguments take to stream from the smallest cache level that holds them all (memory.py).
Runtime code around the call is left out. The memory term is the same for every candidate
of one task, so candidates of a task are ranked by their compute cycles alone: which is what
the instruction-level estimate can see (vectorisation, register blocking, unrolling), and
not what it cannot (cache misses from a different loop order are not priced).

Counts do not depend on what else the machine runs, so, unlike timings, the jobs are spread
over all cores: one emulated process per core.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import costing, counting, memory
from .cores import Core

HERE = Path(__file__).parent
TIMEOUT_S = 900  # one emulated process (a share of one batch)

Job = tuple[str, Sequence[tuple[Sequence[int], str]]]  # library, [(shape, dtype)] of its args


@dataclass(frozen=True)
class KernelEstimate:
    """One kernel call's estimate on one core (seconds None: it failed, see error)."""

    seconds: float | None
    instructions: int = 0
    compute_s: float = 0.0
    memory_s: float = 0.0
    error: str = ""


def estimate_kernels(jobs: Sequence[Job], core: Core, arch: str,
                     progress: Callable[[str], None] | None = None) -> list[KernelEstimate]:
    """Estimate one call of each job's kernel ("main" of a one-function library) on `core`.

    Raises:
        MissingDependencyError: qemu-user, gcc, llvm-19 or the emulated board is missing.
    """
    say = progress or (lambda _line: None)
    costing.check_tools()
    counting.plugin_library()  # built once here, not by each thread at once
    workers = max(1, min(os.cpu_count() or 1, len(jobs)))
    chunks = [list(range(len(jobs)))[i::workers] for i in range(workers)]
    say(f"counting {len(jobs)} kernels under qemu-{arch} ({workers} processes)")
    with ThreadPoolExecutor(workers) as pool:
        counted = list(pool.map(lambda chunk: _count_chunk([jobs[i] for i in chunk], arch),
                                chunks))
    by_job: list[tuple[list[counting.Block], str]] = [([], "")] * len(jobs)
    for chunk, results in zip(chunks, counted, strict=True):
        for index, result in zip(chunk, results, strict=True):
            by_job[index] = result
    say(f"pricing {sum(len(b) for b, _ in by_job)} executed blocks with llvm-mca "
        f"-mcpu={core.mca_cpu}")
    everything = [block for blocks, _ in by_job for block in blocks]
    prices = iter(costing.price_blocks(everything, core))  # one batch: shared code priced once
    out = []
    for (blocks, error), job in zip(by_job, jobs, strict=True):
        mine = [next(prices) for _ in blocks]
        if error:
            out.append(KernelEstimate(None, error=error))
            continue
        cycles = sum(b.count * p.cycles for b, p in zip(blocks, mine, strict=True))
        moved = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in job[1])
        compute_s = cycles / (core.clock_ghz * 1e9)
        memory_s = memory.memory_seconds(core, memory.Traffic(1, 0, moved, moved), moved)
        out.append(KernelEstimate(compute_s + memory_s, sum(b.count * len(b.insns)
                                                            for b in blocks),
                                  compute_s, memory_s))
    return out


def _count_chunk(jobs: list[Job], arch: str) -> list[tuple[list[counting.Block], str]]:
    """(blocks inside the kernel's library, error) per job; a job that crashes or hangs the
    emulated process fails alone: the rest run again in a new one."""
    results: list[tuple[list[counting.Block], str]] = []
    while len(results) < len(jobs):
        todo = jobs[len(results):]
        done, failure = _run_guest(todo, arch)
        results += done
        if len(results) < len(jobs):  # the job after the last result stopped the process
            results.append(([], failure or "the emulated process wrote no result for it"))
    return results


def _run_guest(jobs: list[Job], arch: str) -> tuple[list[tuple[list[counting.Block], str]],
                                                      str | None]:
    """One emulated process over `jobs`: the results it finished, and why it stopped early."""
    prefix, python, env = counting.guest(arch)
    plugin = counting.plugin_library()
    with tempfile.TemporaryDirectory(prefix="edgec-kernels-") as tmp:
        jobs_path, results_path = Path(tmp) / "jobs.json", Path(tmp) / "results.jsonl"
        blocks_path = Path(tmp) / "blocks"
        jobs_path.write_text(json.dumps([
            {"library": str(Path(lib).resolve()),
             "args": [[list(map(int, shape)), str(dtype)] for shape, dtype in args]}
            for lib, args in jobs]))
        cmd = [*prefix, "-plugin", f"{plugin},out={blocks_path},each=1", python,
               str(HERE / "guest_kernels.py"), str(jobs_path), str(results_path)]
        failure = None
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                                  timeout=TIMEOUT_S)
            if done.returncode != 0:
                tail = (done.stderr + done.stdout).strip().splitlines()[-3:]
                failure = f"the emulated process exited with {done.returncode}: " + \
                    " / ".join(tail)
        except subprocess.TimeoutExpired:
            failure = f"no result within {TIMEOUT_S} s under qemu"
        lines = results_path.read_text().splitlines() if results_path.exists() else []
        out = []
        for segment, line in enumerate(lines):
            result = json.loads(line)
            if "error" in result:
                out.append(([], result["error"]))
                continue
            blocks = counting.read_blocks(Path(f"{blocks_path}.{segment}"))
            ranges = result["ranges"]
            out.append(([b for b in blocks if any(a <= b.vaddr < z for a, z in ranges)], ""))
    return out, failure

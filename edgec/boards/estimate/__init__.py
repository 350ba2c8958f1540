"""Single-thread latency of a compiled library on a named CPU core, estimated without the board.

    report = estimate(Path("r18-rpi4.so"), "cortex-a72")
    print(report.summary())

One inference runs under qemu user mode (TVM_NUM_THREADS=1) with a TCG plugin that counts
each executed block (counting.py); every hot block is priced with llvm-mca on the core's
scheduling model (costing.py); each compiled function gets its blocks' cycles and a memory
term for the bytes it moves (memory.py); cycles become milliseconds at the core's clock
(cores.py). Blocks outside the library (TVM runtime, Python, libc) are runtime overhead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgec.errors import ConfigError
from edgec.package import PackageInfo, read_info

from . import costing, counting, memory
from .cores import HOST, Core, lookup, names, with_overrides

__all__ = ["EstimateReport", "FunctionEstimate", "estimate", "names", "report_from_counts"]

RUNTIME = "(runtime overhead)"  # blocks outside the library, named by file
# How a function's compute and memory terms combine (memory.combine). Measured on x86 with
# bench/estimate_check.py (11 libraries, 2026-12-01): "sum" Spearman 0.936, median error
# 10.6%, worst 26%; "max" 0.918, 9.7%, worst 41%. llvm-mca's cycles assume L1 hits, so
# the time to bring tensors in adds to them rather than hiding under them.
COMBINE = "sum"


@dataclass(frozen=True)
class FunctionEstimate:
    """One compiled function's share of one inference."""

    name: str
    calls: int
    instructions: int
    compute_ms: float  # llvm-mca cycles at the core's clock
    memory_ms: float  # bytes moved at the bandwidth of where they live
    ms: float  # the two combined
    fp_ops: float
    int8_ops: float
    weight_bytes: int
    activation_bytes: int
    largest_call_activations: int


@dataclass(frozen=True)
class EstimateReport:
    """The estimate for one library on one core; `.summary()` prints it as a table."""

    library: str
    model: str
    cpu: str
    core: dict
    ms: float
    instructions: int
    fp_ops: float
    int8_ops: float
    functions: tuple[FunctionEstimate, ...]  # slowest first, runtime overhead included
    combine: str
    footprint_bytes: int  # weights plus the largest call's activations (memory.footprint)
    unpriced_instructions: int  # executed instructions priced at 1 cycle (cold or unreadable)
    emulation_s: float
    pricing_s: float

    @property
    def compute_ms(self) -> float:
        return sum(f.compute_ms for f in self.functions)

    def total_ms(self, combine: str) -> float:
        """The total under another way of combining compute and memory (for validation)."""
        return sum(memory.combine(f.compute_ms, f.memory_ms, combine) for f in self.functions)

    def summary(self, top: int = 15) -> str:
        core = self.core
        clock = core["clock_ghz"] * 1e9
        flops_per_cycle = self.fp_ops / (self.ms * 1e-3 * clock) if self.ms else 0.0
        int8_per_cycle = self.int8_ops / (self.ms * 1e-3 * clock) if self.ms else 0.0
        lines = [
            f"{self.model} ({Path(self.library).name}) on {self.cpu}: "
            f"{self.ms:.2f} ms estimated, one thread",
            f"  core: {core['mca_cpu']} model at {core['clock_ghz']} GHz, "
            f"DRAM {core['dram_gbps']} GB/s ({core['board']})",
            f"  instructions: {self.instructions / 1e6:.1f} M; "
            f"compute {self.compute_ms:.2f} ms, memory and compute combined by {self.combine}",
            f"  FP32: {self.fp_ops / 1e9:.3f} GFLOP, {flops_per_cycle:.2f} FLOPs/cycle "
            f"(peak {core['peak_fp32_per_cycle']:g})"
            + (f"; int8: {self.int8_ops / 1e9:.3f} G ops, {int8_per_cycle:.2f}/cycle "
               f"(peak {core['peak_int8_per_cycle']:g})" if self.int8_ops else ""),
            "",
            f"  {'function':<44} {'ms':>8} {'share':>6} {'compute':>8} {'memory':>8} "
            f"{'calls':>5} {'FLOPs/cyc':>9}",
        ]
        for f in self.functions[:top]:
            ops = f.fp_ops + f.int8_ops
            per_cycle = ops / (f.ms * 1e-3 * clock) if f.ms else 0.0
            lines.append(
                f"  {f.name[:44]:<44} {f.ms:8.3f} {100 * f.ms / self.ms:5.1f}% "
                f"{f.compute_ms:8.3f} {f.memory_ms:8.3f} {f.calls:5d} {per_cycle:9.2f}"
            )
        if len(self.functions) > top:
            rest = self.functions[top:]
            lines.append(f"  {f'... {len(rest)} more':<44} {sum(f.ms for f in rest):8.3f}")
        lines.append(
            f"  (emulated run {self.emulation_s:.0f} s, pricing {self.pricing_s:.0f} s; "
            f"{self.unpriced_instructions} instructions priced at 1 cycle)"
        )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def estimate(library: Path, cpu: str, *, inputs: Mapping[str, np.ndarray] | None = None,
             progress: Callable[[str], None] | None = None, warm: bool = True,
             core_overrides: Mapping[str, float] | None = None) -> EstimateReport:
    """Estimate one single-threaded inference of `library` (OUT.so + OUT.so.json) on `cpu`.

    Args:
        library: an edgec-compiled library; its sidecar names the architecture and inputs.
        cpu: a core from `names()` ("cortex-a72", ...), a board alias ("rpi4") or "x86-host".
        inputs: input arrays by name; random ones of the declared shapes by default.
        progress: called with a short line before each slow step.
        warm: count a second, steady-state inference (the default) rather than the first,
            which emulates one inference less but counts ~4 M first-run runtime instructions.
        core_overrides: figures of the board that replace the core table's (clock_ghz,
            dram_gbps), e.g. from a target file's [board] table.

    Returns:
        The report: total and per-function milliseconds, instructions, FLOPs per cycle.

    Raises:
        ConfigError: unknown cpu, or a cpu of another architecture than the library's.
        MissingDependencyError: qemu-user, llvm-19 or gcc is missing (with the apt line),
            or the emulated aarch64 board is not prepared.
        ArtifactError: the library or its sidecar is missing, or it fails under qemu.
    """
    say = progress or (lambda _line: None)
    core, info = _core_for(library, cpu, core_overrides)
    costing.check_tools()
    counts = counting.count(Path(library), info, inputs, say, warm=warm)
    say(f"pricing {len(counts.blocks)} executed blocks with llvm-mca -mcpu={core.mca_cpu}")
    return report_from_counts(Path(library), cpu, counts, core_overrides)


def price_cycles(blocks: list[counting.Block], cpu: str) -> float:
    """Cycles of everything `blocks` executed on `cpu`, priced as `estimate` prices a
    library's blocks (for other runtimes counted under the same plugin: bench/arm.py)."""
    core = lookup(cpu)
    prices = costing.price_blocks(blocks, core)
    return sum(b.count * p.cycles for b, p in zip(blocks, prices, strict=True))


def report_from_counts(library: Path, cpu: str, counts: counting.Counts,
                       core_overrides: Mapping[str, float] | None = None) -> EstimateReport:
    """Price an emulated run's counts for `cpu` (the second half of `estimate`).

    Useful on its own to price one run for several cores, or again after a pricing change.

    Raises:
        ConfigError, ArtifactError: as `estimate`.
    """
    core, info = _core_for(library, cpu, core_overrides)
    start = time.perf_counter()
    per_block = costing.price_blocks(counts.blocks, core)
    pricing_s = time.perf_counter() - start
    functions = _per_function(Path(library), counts, per_block, core)
    live = memory.footprint(memory.traffic(counts.calls, counts.inputs))
    total = sum(f.ms for f in functions)
    return EstimateReport(
        library=str(library), model=info.model, cpu=cpu, core=core.to_dict(), ms=total,
        instructions=sum(f.instructions for f in functions),
        fp_ops=sum(f.fp_ops for f in functions), int8_ops=sum(f.int8_ops for f in functions),
        functions=tuple(functions), combine=COMBINE, footprint_bytes=live,
        unpriced_instructions=sum(b.count * p.unpriced for b, p in zip(counts.blocks, per_block,
                                                                       strict=True)),
        emulation_s=counts.wall_s, pricing_s=pricing_s,
    )


def _core_for(library: Path, cpu: str, overrides: Mapping[str, float] | None = None
              ) -> tuple[Core, PackageInfo]:
    """The core named `cpu` and the library's metadata, checked to be of one architecture."""
    core = with_overrides(lookup(cpu), **(overrides or {}))
    info = read_info(library)
    if info.arch != core.arch:
        same = [n for n in names() if n != HOST and lookup(n).arch == info.arch]
        same += [HOST] if info.arch == "x86_64" else []
        raise ConfigError(
            f"{Path(library).name} is built for {info.arch}, but {cpu} is an {core.arch} core; "
            f"pick one of: {', '.join(same)}"
        )
    return core, info


def _per_function(library: Path, counts: counting.Counts, prices: list[costing.Price],
                  core: Core) -> list[FunctionEstimate]:
    from .symbols import SymbolMap

    symbols = SymbolMap(library, counts.base)
    acc: dict[str, list[float]] = {}  # name -> [instructions, cycles, fp_ops, int8_ops]
    for block, price in zip(counts.blocks, prices, strict=True):
        name = symbols.name(block.vaddr) or f"{RUNTIME[:-1]}: " \
            f"{counting.runtime_part(counts, block.vaddr)})"
        entry = acc.setdefault(name, [0, 0.0, 0.0, 0.0])
        entry[0] += block.count * len(block.insns)
        entry[1] += block.count * price.cycles
        entry[2] += block.count * price.fp_ops
        entry[3] += block.count * price.int8_ops
    traffics = memory.traffic(counts.calls, counts.inputs)
    live = memory.footprint(traffics)
    hz = core.clock_ghz * 1e9
    out = []
    for name, (insns, cycles, fp, i8) in acc.items():
        t = traffics.get(name, memory.Traffic(0, 0, 0, 0))
        compute_s = cycles / hz
        memory_s = memory.memory_seconds(core, t, live)
        out.append(FunctionEstimate(
            name=name, calls=t.calls, instructions=int(insns), compute_ms=1e3 * compute_s,
            memory_ms=1e3 * memory_s, ms=1e3 * memory.combine(compute_s, memory_s, COMBINE),
            fp_ops=fp, int8_ops=i8, weight_bytes=t.weight_bytes,
            activation_bytes=t.activation_bytes,
            largest_call_activations=t.largest_call_activations))
    return sorted(out, key=lambda f: -f.ms)

"""Prices executed blocks in cycles: llvm-mc turns their bytes back into assembly, llvm-mca
simulates each block as a loop body on the core's scheduling model; results are cached.

A block's price is llvm-mca's steady state, total cycles / iterations, which assumes every
load hits L1 and the block runs back to back with itself; memory.py's term covers what
that leaves out. Blocks are priced in batches, one llvm-mca run per batch with
one code region per block, so an estimate spawns a handful of processes, not thousands.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgec.errors import MissingDependencyError

from .cores import CACHE, Core

LLVM_MC, LLVM_MCA = "llvm-mc-19", "llvm-mca-19"
INSTALL = "apt-get install llvm-19"
# +lse: glibc's atomics (ldadd, cas...) on aarch64 are LSE instructions.
MATTR = "-mattr=+neon,+dotprod,+fullfp16,+lse,+rcpc"
MC_ARGS = {"aarch64": ["-triple=aarch64", MATTR], "x86_64": ["-triple=x86_64"]}
COMMENT = {"aarch64": "//", "x86_64": "#"}  # '#' starts an immediate on aarch64
BATCH = 400  # blocks per llvm-mca run: two runs go in parallel, one per core
FORMAT = 2  # bump when the price of a block changes meaning, to drop old caches
# qemu runs `rep movs/stos` one element per block execution, and llvm-mca prices the
# instruction at ~100 cycles; fast-string hardware moves ~16 bytes a cycle instead.
_REP_STRING = re.compile(r"^\s*rep\w*\s+(movs|stos)([bwlq])\b")
_REP_BYTES = {"b": 1, "w": 2, "l": 4, "q": 8}
FAST_STRING_BYTES_PER_CYCLE = 16.0
# llvm-mca gives a call 100 cycles of latency; predicted calls and returns cost a cycle or two.
_CALL = re.compile(r"^(call\w*|bl|blr)\s")
CALL_CYCLES = 2.0
# x86 cores since the Pentium M track %rsp in a stack engine, so pushes and pops do not wait
# on each other; llvm-mca chains them through %rsp (6 pops + ret: 37 cycles instead of ~4).
# Priced as the plain store and load each one is.
_PUSH = re.compile(r"^pushq\s+(%\w+)$")
_POP = re.compile(r"^popq\s+(%\w+)$")


def _unchain_stack(insn: str) -> str:
    push, pop = _PUSH.match(insn), _POP.match(insn)
    if push:
        return f"movq\t{push.group(1)}, -8(%rsp)"
    if pop:
        return f"movq\t(%rsp), {pop.group(1)}"
    return insn


# Blocks that together execute this share of the instructions are priced one by one; the
# cold tail (start-up of lazily bound symbols, Python between the markers) at 1 cycle each.
PRICED_SHARE = 0.9999


@dataclass(frozen=True)
class Price:
    """What one execution of a block costs and computes."""

    cycles: float
    fp_ops: float  # floating-point operations (an FMA counts 2)
    int8_ops: float  # 8-bit integer multiply-accumulate operations (a MAC counts 2)
    unpriced: int  # instructions llvm-mc or llvm-mca could not read (priced at 1 cycle)


def check_tools() -> None:
    """Raises MissingDependencyError when llvm-mc-19 or llvm-mca-19 is missing."""
    for tool in (LLVM_MC, LLVM_MCA):
        if shutil.which(tool) is None:
            raise MissingDependencyError(f"{tool} is missing: {INSTALL}")


def _key(insns: tuple[bytes, ...]) -> str:
    return hashlib.sha1(b"".join(len(i).to_bytes(1, "little") + i for i in insns)).hexdigest()


# Between blocks in llvm-mc's input: an instruction no compiler emits (an unallocated hint,
# a nop with a magic displacement), whose text marks where one block's output ends.
_SENTINEL = {"aarch64": (bytes.fromhex("ff2b03d5"), "hint\t#95"),
             "x86_64": (bytes.fromhex("0f1f8078563412"), "nopl\t305419896(%rax)")}


def disassemble(arch: str, blocks: list[tuple[bytes, ...]]) -> list[list[str]]:
    """Assembly text of each block; bytes llvm-mc cannot decode are left out.

    One llvm-mc call for all blocks, each block's bytes decoded as one stream: qemu 7.2
    reports wrong instruction boundaries around x86 VEX prefixes, but a block starts on an
    instruction, so decoding from its start is right.
    """
    sentinel, marker = _SENTINEL[arch]
    # qemu keeps only the first page's bytes of an x86 instruction that crosses a page; the
    # decoder then eats into what follows. After 15 one-byte nops (the longest x86
    # instruction) it is back in step, in time to see the sentinel.
    pad = b"\x90" * 15 if arch == "x86_64" else b""
    # A line per block: llvm-mc reads across line ends, but is slow on one huge line.
    stream = "\n".join(" ".join(f"0x{b:02x}" for b in b"".join(blk) + pad + sentinel)
                       for blk in blocks)
    done = subprocess.run([LLVM_MC, "--disassemble", *MC_ARGS[arch]], input=stream,
                          capture_output=True, text=True, check=False)
    out: list[list[str]] = [[]]
    for line in done.stdout.splitlines():
        text = line.split(COMMENT[arch])[0].strip()
        if text == marker:
            out.append([])
        elif text and not text.startswith("."):
            out[-1].append(text)
    if len(out) - 1 != len(blocks):  # a sentinel was swallowed after all: one by one
        return [disassemble(arch, [blk])[0] for blk in blocks] if len(blocks) > 1 else [[]]
    if pad:
        for asm in out:
            while asm and asm[-1] == "nop":
                asm.pop()
    return out[:-1]


_LANES = re.compile(r"\.(\d+)([bhsd])\b")


def _aarch64_ops(asm: str) -> tuple[float, float]:
    op, _, rest = asm.partition("\t")
    lanes = _LANES.search(rest)
    n = int(lanes.group(1)) if lanes else 1
    if op in ("fmla", "fmls", "fmadd", "fmsub", "fnmadd", "fnmsub"):
        return 2.0 * n, 0.0
    if op in ("fmul", "fadd", "fsub", "fdiv", "fmax", "fmin"):
        return float(n), 0.0
    if op in ("sdot", "udot", "usdot"):
        return 0.0, 8.0 * n  # each 32-bit lane sums four byte products
    if lanes and lanes.group(2) == "h" and op in ("smlal", "smlal2", "umlal", "umlal2",
                                                   "smull", "smull2", "umull", "umull2"):
        return 0.0, 2.0 * n  # widening byte multiplies into 16-bit lanes (vector forms only)
    return 0.0, 0.0


def _x86_ops(asm: str) -> tuple[float, float]:
    op = asm.split()[0] if asm.split() else ""
    width = 16 if "zmm" in asm else 8 if "ymm" in asm else 4
    if re.match(r"v?f(n?)m(add|sub)\w*ps$", op):
        return 2.0 * width, 0.0
    if re.match(r"v?f(n?)m(add|sub)\w*ss$", op):
        return 2.0, 0.0
    if re.match(r"v?(mul|add|sub|div|max|min)ps$", op):
        return float(width), 0.0
    if op in ("vpmaddubsw", "pmaddubsw", "vpdpbusd", "vpdpbusds"):
        return 0.0, 8.0 * width  # four byte products per 32-bit lane
    return 0.0, 0.0


def _mca_input(asm_blocks: list[list[str]]) -> tuple[str, list[float]]:
    """llvm-mca source with one region per block, and the rep-string cycles kept apart."""
    text, extra = [], []
    for i, asm in enumerate(asm_blocks):
        cycles = 0.0
        text.append(f"# LLVM-MCA-BEGIN b{i}")
        for insn in asm:
            rep = _REP_STRING.match(insn)
            if rep:
                cycles += _REP_BYTES[rep.group(2)] / FAST_STRING_BYTES_PER_CYCLE
            elif _CALL.match(insn):
                cycles += CALL_CYCLES
            else:
                text.append(_unchain_stack(insn))
        text.append(f"# LLVM-MCA-END b{i}")
        extra.append(cycles)
    return "\n".join(text) + "\n", extra


def _iterations(n_insns: int) -> int:
    """Loop iterations to simulate: the pipeline's fill and drain add about one iteration's
    latency / iterations to a price, which matters less the longer the block; long blocks
    (the interpreter's) would otherwise dominate llvm-mca's time."""
    return 100 if n_insns <= 32 else 30 if n_insns <= 128 else 10


def _run_mca(core: Core, source: str, iterations: int,
             workdir: Path) -> tuple[subprocess.Popen, Path]:
    """Start llvm-mca on `source`; its JSON goes to a file (no pipe to fill and stall on)."""
    cmd = [LLVM_MCA, f"-mcpu={core.mca_cpu}", f"-iterations={iterations}", "--json",
           "--skip-unsupported-instructions=any", "-resource-pressure=false",
           "-instruction-info=false", "-dispatch-stats=false", "-register-file-stats=false"]
    cmd += ["-mtriple=aarch64", MATTR] \
        if core.arch == "aarch64" else ["-mtriple=x86_64"]
    fd, name = tempfile.mkstemp(suffix=".s", dir=workdir)
    with os.fdopen(fd, "w") as handle:
        handle.write(source)
    out = Path(name).with_suffix(".json")
    with open(out, "w") as sink:
        proc = subprocess.Popen([*cmd, "-o", "-", name], stdout=sink,
                                stderr=subprocess.DEVNULL)
    return proc, out


def _collect(proc: subprocess.Popen, out: Path, n: int) -> list[float | None]:
    proc.wait()
    cycles: list[float | None] = [None] * n
    try:
        regions = json.loads(out.read_text())["CodeRegions"]
    except (ValueError, KeyError, OSError):
        return cycles
    for region in regions:
        name, summary = region.get("Name", ""), region.get("SummaryView", {})
        if name.startswith("b") and summary.get("Iterations"):
            cycles[int(name[1:])] = summary["TotalCycles"] / summary["Iterations"]
    return cycles


class PriceCache:
    """Block prices per (llvm-mca model, block bytes), kept in one JSON file per model."""

    def __init__(self, core: Core):
        self.core = core
        self.path = CACHE / f"prices-{FORMAT}-{core.arch}-{core.mca_cpu}.json"
        try:
            self.prices = {k: Price(*v) for k, v in json.loads(self.path.read_text()).items()}
        except (OSError, ValueError, TypeError):
            self.prices = {}
        self._dirty = False

    def price(self, blocks: list[tuple[bytes, ...]]) -> list[Price]:
        """The price of each block (instruction bytes), computing the ones not yet cached."""
        keys = [_key(b) for b in blocks]
        todo = {k: b for k, b in zip(keys, blocks, strict=True) if k not in self.prices}
        items = sorted(todo.items(), key=lambda kv: len(kv[1]))
        batches = []
        for iterations in (100, 30, 10):
            group = [kv for kv in items if _iterations(len(kv[1])) == iterations]
            batches += [(iterations, group[i:i + BATCH]) for i in range(0, len(group), BATCH)]
        with tempfile.TemporaryDirectory(prefix="edgec-mca-") as tmp:
            for pair in (batches[i:i + 2] for i in range(0, len(batches), 2)):
                runs = []
                for iterations, batch in pair:
                    asm = disassemble(self.core.arch, [b for _, b in batch])
                    source, extra = _mca_input(asm)
                    started = _run_mca(self.core, source, iterations, Path(tmp))
                    runs.append((batch, asm, extra, *started))
                for batch, asm, extra, proc, out in runs:
                    self._store(batch, asm, extra, _collect(proc, out, len(batch)))
        if todo:
            self._dirty = True
            self.save()
        return [self.prices[k] for k in keys]

    def _store(self, batch, asm, extra, cycles) -> None:
        ops = _aarch64_ops if self.core.arch == "aarch64" else _x86_ops
        for (key, insns), text, rep, cyc in zip(batch, asm, extra, cycles, strict=True):
            unpriced = max(0, len(insns) - len(text))  # x86 text has a line per lock prefix
            priced = [t for t in text if not (_REP_STRING.match(t) or _CALL.match(t))]
            if cyc is None:  # llvm-mca gave no region for it: nothing it could read
                cyc, unpriced = 0.0, unpriced + len(priced)
            fp = sum(ops(t)[0] for t in text)
            i8 = sum(ops(t)[1] for t in text)
            self.prices[key] = Price(cyc + rep + unpriced, fp, i8, unpriced)

    def save(self) -> None:
        if not self._dirty:
            return
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: list(v.__dict__.values()) for k, v in self.prices.items()}))
        os.replace(tmp, self.path)
        self._dirty = False


def price_blocks(blocks: list, core: Core) -> list[Price]:
    """A price per executed block (counting.Block): llvm-mca for the hot ones, 1 cycle per
    instruction for the cold tail."""
    order = sorted(range(len(blocks)), key=lambda i: -blocks[i].count * len(blocks[i].insns))
    total = sum(b.count * len(b.insns) for b in blocks)
    hot, running = [], 0
    for i in order:
        if running >= PRICED_SHARE * total:
            break
        hot.append(i)
        running += blocks[i].count * len(blocks[i].insns)
    cache = PriceCache(core)
    priced = dict(zip(hot, cache.price([blocks[i].insns for i in hot]), strict=True))
    return [priced.get(i) or Price(float(len(b.insns)), 0.0, 0.0, len(b.insns))
            for i, b in enumerate(blocks)]

"""The CPU table of the latency estimator: what each named core is, as data.

Each entry names the llvm-mca scheduling model that prices its instructions, the board's
clock, the bandwidth one core gets from memory and from its last private cache level, and
its peak arithmetic per cycle. Peaks are those of the same llvm-mca model (8 independent
`fmla v.4s`, `sdot v.4s` or `smlal v.8h` per iteration, measured with llvm-mca 19), so
"fraction of peak" in a report compares a kernel with what the estimator itself could
have reached on that core. Clocks and bandwidths are those of the common board for the
core (named in `board`); they are approximate public figures, not measurements, except
for the x86 host, whose clock and bandwidth are measured here on first use.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgec.cache import cache_root
from edgec.errors import ConfigError, MissingDependencyError, did_you_mean

CACHE = cache_root() / "estimate"


@dataclass(frozen=True)
class Core:
    """One CPU core the estimator can price code for."""

    name: str
    arch: str  # "aarch64" or "x86_64": the ISA of libraries it can estimate
    mca_cpu: str  # llvm-mca -mcpu
    clock_ghz: float
    dram_gbps: float  # one core streaming from DRAM (read + write bytes per second)
    # The caches beyond L1 as (bytes, GB/s one core streams from it), smallest first;
    # llvm-mca already assumes L1 hits.
    caches: tuple[tuple[int, float], ...]
    peak_fp32_per_cycle: float  # FP32 FLOPs (an FMA counts 2)
    peak_int8_per_cycle: float  # int8 multiply-add ops (a MAC counts 2)
    board: str

    def to_dict(self) -> dict:
        return asdict(self)


# The Cortex-A72 and A76 have no llvm-mca model of their own: llvm maps them to the
# Cortex-A57 model, whose 128-bit FP pipes are half as wide as the A76's. neoverse-n1 is
# the A76's server sibling (same core), so the A76 entry is priced with that model.
CORES: dict[str, Core] = {
    c.name: c
    for c in [
        Core("cortex-a53", "aarch64", "cortex-a53", 1.2, 2.0, ((512 << 10, 6.0),), 8, 16,
             "Raspberry Pi 3 Model B (BCM2837, LPDDR2; 3B+ runs at 1.4 GHz)"),
        Core("cortex-a55", "aarch64", "cortex-a55", 1.8, 4.0,
             ((256 << 10, 12.0), (512 << 10, 8.0)), 16, 32,
             "RK3566/RK3568 boards (LPDDR4; per-core L2 and a shared 512 KB L3)"),
        Core("cortex-a57", "aarch64", "cortex-a57", 1.43, 5.0, ((2 << 20, 15.0),), 8, 16,
             "Jetson Nano (LPDDR4)"),
        Core("cortex-a72", "aarch64", "cortex-a72", 1.8, 4.5, ((1 << 20, 15.0),), 8, 16,
             "Raspberry Pi 4 Model B (BCM2711, LPDDR4-3200; early boards 1.5 GHz)"),
        Core("cortex-a76", "aarch64", "neoverse-n1", 2.4, 8.0,
             ((512 << 10, 40.0), (2 << 20, 25.0)), 16, 64,
             "Raspberry Pi 5 (BCM2712, LPDDR4X-4267; 2 MB shared L3)"),
        Core("neoverse-n1", "aarch64", "neoverse-n1", 2.5, 20.0,
             ((1 << 20, 50.0), (32 << 20, 30.0)), 16, 64,
             "AWS Graviton2 (DDR4-3200, 8 channels; 32 MB system cache)"),
    ]
}
HOST = "x86-host"
# Board and target names people already use for these cores.
ALIASES = {"rpi3": "cortex-a53", "rpi4": "cortex-a72", "rpi5": "cortex-a76",
           "jetson-nano": "cortex-a57", "graviton2": "neoverse-n1", "host": HOST}


def names() -> list[str]:
    return [*CORES, HOST]


def lookup(cpu: str) -> Core:
    """The core named `cpu` (a core, a board alias, or "x86-host" for this machine).

    Raises:
        ConfigError: an unknown name, listing the accepted ones.
        MissingDependencyError: "x86-host" when gcc, needed to measure the clock, is missing.
    """
    name = ALIASES.get(cpu, cpu)
    if name in CORES:
        return CORES[name]
    if name == HOST:
        return host_core()
    accepted = [*names(), *ALIASES]
    raise ConfigError(
        f"unknown cpu {cpu!r}{did_you_mean(cpu, accepted)}; accepted: {', '.join(accepted)}"
    )


def _host_mca_cpu(flags: set[str], vendor: str) -> str:
    """The llvm-mca model of this x86 machine, from /proc/cpuinfo flags.

    Not `-mcpu=native`: a VM's CPU model number can name another generation than the real
    one (KVM here reports Rocket Lake on a Sapphire Rapids host, whose AMX it exposes).
    Nor LLVM 19's sapphirerapids/alderlake model: on a chain of 8 `vfmadd132ps mem, a, b`
    (a kernel of TVM's untuned convolutions) it says 48 cycles per iteration, the host ran
    it in 34.5, and icelake-server, skylake and znver3 say 32: the same FMA latency, 4.
    """
    if vendor == "AuthenticAMD":
        return "znver4" if "avx512f" in flags else "znver3" if "vaes" in flags else "znver2"
    if "avx512f" in flags:
        return "icelake-server" if "avx512_vbmi2" in flags else "skylake-avx512"
    return "haswell"


def _cpuinfo() -> tuple[set[str], str]:
    flags, vendor = set(), ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "vendor_id" and not vendor:
            vendor = value.strip()
    return flags, vendor


# A chain of dependent 64-bit multiplies takes 3 cycles each on every x86 core of the last
# 15 years (Intel since Nehalem, AMD since Zen), so multiplies per second times 3 is the
# clock the core really runs at (a VM's cpuinfo shows the nominal one). Not adds: Golden
# Cove's renamer folds add-immediate chains, and a chain of them ran at "6 GHz" here.
_CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    unsigned long n = 200000000UL, x = 3;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (unsigned long i = 0; i < n; i += 8)
        __asm__ volatile("imul %0,%0\n\timul %0,%0\n\timul %0,%0\n\timul %0,%0\n\t"
                         "imul %0,%0\n\timul %0,%0\n\timul %0,%0\n\timul %0,%0" : "+r"(x));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f\n", 3.0 * n / ((b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec)) / 1e9);
    return x == 0;
}
"""


def _measure_clock_ghz() -> float:
    source, binary = CACHE / "clock.c", CACHE / "clock"
    CACHE.mkdir(parents=True, exist_ok=True)
    source.write_text(_CLOCK_C)
    try:
        subprocess.run(["gcc", "-O1", "-o", str(binary), str(source)], check=True,
                       capture_output=True)
    except FileNotFoundError as err:
        raise MissingDependencyError("gcc is missing: apt-get install gcc") from err
    # The loop's own increment and branch run on other ports, in the multiplies' shadow;
    # the best of five runs keeps a moment of contention from another process out.
    runs = [float(subprocess.run([str(binary)], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(5)]
    return round(max(runs), 2)


def _measure_bandwidth_gbps(size: int) -> float:
    """One core reading and writing `size` bytes with numpy: GB/s moved (read + write)."""
    import numpy as np

    src = np.ones(size // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(max(5, (256 << 20) // size)):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return round(2 * size / best / 1e9, 1)


def host_core() -> Core:
    """This x86 machine as a Core: its clock and bandwidths measured once, then cached."""
    flags, vendor = _cpuinfo()
    cache_file = CACHE / "host.json"
    try:
        data = json.loads(cache_file.read_text())
        data["caches"] = tuple(tuple(level) for level in data["caches"])
        return Core(**data)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    # Each level measured with a copy of a quarter of its size (source and destination fit).
    caches = tuple((size, _measure_bandwidth_gbps(size // 4)) for size in _cache_sizes())
    avx512 = "avx512f" in flags
    core = Core(
        name=HOST, arch="x86_64", mca_cpu=_host_mca_cpu(flags, vendor),
        clock_ghz=_measure_clock_ghz(), dram_gbps=_measure_bandwidth_gbps(1 << 30),
        caches=caches,
        # Two FMA ports: 2 x 16 FP32 lanes x 2 with AVX-512, 2 x 8 x 2 with AVX2;
        # int8: vpdpbusd (VNNI) does 4 MACs per 32-bit lane, vpmaddubsw 2 (then adds).
        peak_fp32_per_cycle=64.0 if avx512 else 32.0,
        peak_int8_per_cycle=(256.0 if avx512 else 128.0) if "avx512_vnni" in flags else 64.0,
        board=f"this machine ({vendor}, measured)",
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(core.to_dict()))
    return core


def _cache_sizes() -> list[int]:
    """Sizes of this machine's L2 and L3 (from sysfs), smallest first."""
    sizes = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index[2-9]")):
        try:
            text = (index / "size").read_text().strip()
            sizes.append(int(text[:-1]) << (10 if text.endswith("K") else 20))
        except (OSError, ValueError):
            continue
    return sorted(sizes) or [1 << 20]


def with_overrides(core: Core, **values: float) -> Core:
    """A copy of `core` with some figures replaced (e.g. clock_ghz for an overclocked Pi)."""
    return replace(core, **values)

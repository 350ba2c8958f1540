"""What a CPU can do, in the terms codegen needs: the one place that knows instruction sets.

A target file's `[cpu]` table (or this machine's /proc/cpuinfo, for `host`) becomes a
`CpuCaps`. Codegen, layout and quantization read only this object, so a new ISA is one
edit here plus its intrinsic, not six files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Feature names as targets spell them -> as Linux's /proc/cpuinfo spells them.
# aarch64: "asimd" is NEON, "asimddp" the Armv8.2 dot product (sdot/udot), "asimdhp" (and the
# scalar "fphp") FP16 arithmetic, "i8mm" the Armv8.6 int8 matrix multiply.
CPUINFO_NAMES = {
    "aarch64": {"neon": "asimd", "dotprod": "asimddp", "fp16": "asimdhp", "i8mm": "i8mm",
                "sve": "sve"},
    "x86_64": {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512bw": "avx512bw",
               "avx512vl": "avx512vl", "avx512_vnni": "avx512_vnni", "amx_int8": "amx_int8",
               "amx_tile": "amx_tile"},
}
# "CPU part" of /proc/cpuinfo (implementer 0x41, Arm) -> LLVM's -mcpu name.
ARM_PARTS = {0xd03: "cortex-a53", 0xd04: "cortex-a35", 0xd05: "cortex-a55", 0xd07: "cortex-a57",
             0xd08: "cortex-a72", 0xd09: "cortex-a73", 0xd0a: "cortex-a75", 0xd0b: "cortex-a76",
             0xd0c: "neoverse-n1", 0xd0d: "cortex-a77", 0xd41: "cortex-a78", 0xd40: "neoverse-v1",
             0xd49: "neoverse-n2", 0xd4f: "neoverse-v2"}
# LLVM target attributes for the aarch64 features edgec uses.
ARM_MATTR = {"neon": "+neon", "dotprod": "+dotprod", "fp16": "+fullfp16", "i8mm": "+i8mm"}
# x86 features the CPU LLVM names for this machine may lack: VMs report masked CPU models
# (this Sapphire Rapids guest is "rocketlake" to LLVM, which has no AMX).
X86_MATTR = {"amx_int8": "+amx-int8", "amx_tile": "+amx-tile"}


@dataclass(frozen=True)
class CpuCaps:
    """The instruction-set facts edgec's kernels depend on.

    Attributes:
        arch: "x86_64" or "aarch64".
        vector_bits: SIMD register width (128 NEON, 256 AVX2, 512 AVX-512).
        features: the target file's feature names ("avx2", "avx512_vnni", "dotprod", ...).
        winograd: use Winograd F(4x4, 3x3) for 3x3 stride-1 convs (a target may turn it off).
    """

    arch: str
    vector_bits: int
    features: tuple[str, ...]
    winograd: bool = True

    @property
    def float_lanes(self) -> int:
        """float32 values per SIMD register."""
        return max(1, self.vector_bits // 32)

    @property
    def nchwc_block(self) -> int:
        """Channels per packed block: one float32 SIMD register (8 on AVX2, 16 on AVX-512)."""
        return max(4, self.float_lanes)

    @property
    def vector_registers(self) -> int:
        """SIMD registers the micro-kernels can keep accumulators in: 32 on AArch64 and
        AVX-512 (which also gives 32 ymm registers to 8-lane blocks), 16 on AVX2."""
        return 32 if self.arch == "aarch64" or "avx512f" in self.features else 16

    @property
    def accumulator_lanes(self) -> int:
        """Output channels the float micro-kernel accumulates per output pixel.

        Two SIMD registers with 32 of them (AVX-512, AArch64): each broadcast input value then
        feeds two FMAs. On AVX-512 that took ResNet-18's 3x3 convs from ~410 to ~500 GFLOP/s,
        and an 8-channel block (MobileNetV2's layout) from 250 to 450, as the 8 channels of
        four blocks fill two zmm registers instead of one ymm. With 16 registers (AVX2) the
        second row of accumulators spills (40% slower), so it is one register there.
        """
        lanes = self.float_lanes
        return 2 * lanes if self.vector_registers >= 32 else lanes

    @property
    def matmul_columns(self) -> int:
        """Output columns of a batch-1 matmul per task: four vector registers of them,
        independent FMA chains."""
        return self.vector_bits // 8

    @property
    def int8_dot(self) -> str | None:
        """The edgec.codegen.intrinsics kind of int8 dot product this CPU has, if any:
        "vnni" (vpdpbusd), "avx2" (vpmaddubsw + vpmaddwd) or "sdot" (Armv8.2 dotprod)."""
        if self.arch == "aarch64":
            return "sdot" if "dotprod" in self.features else None
        if self.arch != "x86_64":
            return None
        if "avx512_vnni" in self.features and "avx512vl" in self.features:
            return "vnni"
        return "avx2" if "avx2" in self.features else None

    @property
    def int8_tiles(self) -> str | None:
        """The 8-bit matrix unit edgec.codegen.amx drives, if any: "amx" (Sapphire Rapids
        and newer Xeons); convs it does not fit stay on int8_dot."""
        if self.int8_dot == "vnni" and {"amx_int8", "amx_tile"} <= set(self.features):
            return "amx"
        return None

    @property
    def int8_weight_bits(self) -> int:
        """Bits an int8 weight may use. AVX2's vpmaddubsw sums two u8 x s8 products into
        int16 and saturates past 32767, so weights keep 7 bits (|w| <= 64, ONNX Runtime's
        reduce_range); vpdpbusd and sdot are exact for all 8."""
        return 7 if self.int8_dot == "avx2" else 8

    @property
    def int8_activation_dtype(self) -> str:
        """What INT8 activations are stored as: sdot multiplies int8 x int8, the x86 dot
        products u8 x s8."""
        return "int8" if self.int8_dot == "sdot" else "uint8"

    @property
    def fp16_arithmetic(self) -> bool:
        """float16 FMAs in hardware (Armv8.2 FP16); x86 only converts."""
        return self.arch == "aarch64" and "fp16" in self.features

    def cpuinfo_flags(self) -> set[str]:
        """The /proc/cpuinfo flags a machine needs to run this CPU's code."""
        names = CPUINFO_NAMES.get(self.arch, {})
        return {names.get(f, f) for f in self.features}


@dataclass(frozen=True)
class DetectedCpu:
    """What /proc/cpuinfo says about a machine, in target-file terms."""

    arch: str
    mcpu: str | None  # None: let LLVM ask the running machine
    features: tuple[str, ...]
    vector_bits: int

    @property
    def mattr(self) -> list[str]:
        table = ARM_MATTR if self.arch == "aarch64" else X86_MATTR
        return [table[f] for f in self.features if f in table]


def parse_cpuinfo(text: str, arch: str) -> DetectedCpu:
    """Map /proc/cpuinfo text to target features (and on aarch64 the core, from "CPU part").

    On aarch64 "asimddp" is dotprod and "asimdhp" FP16 arithmetic; the kernel lists them
    only on cores that have them (Cortex-A72 shows "fp asimd evtstrm crc32 cpuid").
    """
    flags: set[str] = set()
    part = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "cpu part" and part is None:
            try:
                part = int(value.strip(), 16)
            except ValueError:
                part = None
    if arch == "aarch64":
        names = CPUINFO_NAMES["aarch64"]
        features = tuple(f for f in ("neon", "dotprod", "fp16", "i8mm") if names[f] in flags)
        return DetectedCpu(arch, ARM_PARTS.get(part) if part else None, features, 128)
    wanted = CPUINFO_NAMES["x86_64"]
    features = tuple(f for f, flag in wanted.items() if flag in flags)
    bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    return DetectedCpu(arch, None, features, bits)


def cpuinfo_flags(text: str) -> set[str]:
    """The flags (x86) or Features (aarch64) line of /proc/cpuinfo text, as a set."""
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


# AMD's x86 families and model ranges -> core generation. AMD VMs pass the family and model
# through (this workplace's EPYC guests: family 26 a Zen 5, family 25 model 17 a Zen 4), and
# the generations time the same code differently (Zen 4 runs 512-bit vectors as two 256-bit
# halves), so tuning records and layout decisions must not carry over between them. Intel
# guests report masked models (a Sapphire Rapids guest here said model 167, Rocket Lake's),
# so those keep their family and model numbers instead of a name that would be wrong.
AMD_CORES = {
    23: ((0x00, 0x2F, "Zen"), (0x30, 0xFF, "Zen 2")),
    25: ((0x00, 0x0F, "Zen 3"), (0x10, 0x1F, "Zen 4"), (0x20, 0x5F, "Zen 3"),
         (0x60, 0x7F, "Zen 4"), (0xA0, 0xAF, "Zen 4")),
    26: ((0x00, 0x4F, "Zen 5"),),
}


def x86_core(text: str) -> str | None:
    """The core a /proc/cpuinfo text's x86 CPU is: "Zen 4" for an AMD family and model this
    table knows, else "family F model M"; None without those lines (not x86)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return None
    if fields.get("vendor_id") == "AuthenticAMD":
        for low, high, name in AMD_CORES.get(family, ()):
            if low <= model <= high:
                return name
    return f"family {family} model {model}"


def cpu_label(text: str, fallback: str = "unknown CPU") -> str:
    """A CPU as tuning records and layout decisions are keyed, from its /proc/cpuinfo text:
    its model name, core and widest x86 vector class, e.g. "AMD EPYC (Zen 4, avx512-vnni)".
    VMs often show a generic model name ("AMD EPYC" on Zen 3, 4 and 5 alike)."""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith(("model name", "Model"))), fallback)
    flags = cpuinfo_flags(text)
    isa = ("avx512-vnni" if {"avx512f", "avx512_vnni"} <= flags else "avx512"
           if "avx512f" in flags else "avx2" if "avx2" in flags else "")
    details = [part for part in (x86_core(text) if isa else None, isa) if part]
    return f"{name} ({', '.join(details)})" if details else name


def host_label() -> str:
    """This machine's CPU label (cpu_label of its /proc/cpuinfo)."""
    import platform
    from pathlib import Path

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    return cpu_label(text, platform.machine())


def label_slug(label: str) -> str:
    """A folder name for a CPU label: "intel-r-xeon-r-processor-avx512-vnni"."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "unknown-cpu"

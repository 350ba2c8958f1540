"""Target descriptions: the TOML files in targets/ turned into validated Target objects."""

from __future__ import annotations

import dataclasses
import os
import platform
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec import shipped
from edgec.cpu import CpuCaps, cpuinfo_flags, parse_cpuinfo
from edgec.errors import ConfigError, did_you_mean

LAYOUTS = ("NCHW", "NHWC", "NCHWc")
ARCHES = ("x86_64", "aarch64")
# Accepted keys per table; anything else in a file is a typo we refuse to ignore.
_SCHEMA: dict[str, set[str]] = {
    "": {"description", "arch", "detect", "tvm", "int8", "cpu", "build", "layout", "rpc",
         "board", "shipped_logs"},
    "tvm": {"kind", "mtriple", "mcpu", "mattr", "num-cores"},
    "int8": {"mattr"},
    "cpu": {"vector_bits", "features", "winograd"},
    "build": {"cross_compiler", "sysroot"},
    "layout": {"default"},
    "rpc": {"key"},
    "board": {"core", "clock_ghz", "dram_gbps"},
}


@dataclass(frozen=True)
class Target:
    """One machine edgec compiles for, as read from a target file.

    Attributes:
        tvm: the [tvm] table, passed unchanged to tvm.target.Target(dict).
        cpu: what the CPU can do (edgec.cpu.CpuCaps): the only thing codegen reads.
    """

    name: str
    description: str
    arch: str
    tvm: dict[str, Any]
    cpu: CpuCaps
    default_layout: str
    rpc_key: str
    cross_compiler: str | None = None
    sysroot: str | None = None
    source: str = ""
    # [board]: the core, clock (GHz) and one core's DRAM bandwidth (GB/s) the latency
    # estimate prices code for (edgec.boards.estimate); empty when the file has none.
    board: dict[str, Any] = field(default_factory=dict)
    # Another target whose shipped tuning logs this one applies (same float kernels), or "".
    shipped_logs: str = ""
    # [int8] mattr: LLVM attributes that INT8 builds add to [tvm] mattr (see for_precision).
    int8_mattr: tuple[str, ...] = ()

    @property
    def logs_name(self) -> str:
        """The folder of edgec/shipped/tuning_logs this target's compiles apply."""
        return self.shipped_logs or self.name

    @property
    def is_native(self) -> bool:
        """True when code built for this target runs on this machine: its architecture, no
        cross compiler, and every CPU feature the code may use (AMX code on a Zen 5, or
        AVX-512 code on a Zen 3, dies of SIGILL where compile's check runs it)."""
        return (self.arch == platform.machine() and not self.cross_compiler
                and not self.features_missing_here())

    def features_missing_here(self) -> list[str]:
        """The target's CPU features (cpuinfo names) this machine lacks; none when its
        architecture differs or /proc/cpuinfo cannot be read."""
        flags = cpu_flags()
        if self.arch != platform.machine() or not flags:
            return []
        return sorted(self.cpu.cpuinfo_flags() - flags)

    def why_not_native(self) -> str:
        """What keeps this target's code off this machine, for messages: "needs amx_int8,
        amx_tile, which this CPU lacks" or "is aarch64"."""
        missing = self.features_missing_here()
        return (f"needs {', '.join(missing)}, which this CPU lacks" if missing
                else f"is {self.arch}")

    def tvm_target(self):
        """The tvm.target.Target built from the [tvm] table, unchanged."""
        import tvm

        return tvm.target.Target(dict(self.tvm))

    def for_precision(self, quantization: str | None) -> Target:
        """This target as a build of that precision ("int8", "fp16", None: float) compiles
        for: INT8 builds add the [int8] table's mattr to [tvm]'s. Name, logs and everything
        else stay the same."""
        have = list(self.tvm.get("mattr", []))
        # Idempotent: compile_to_executable asks, then lower asks again for the same build.
        extra = [a for a in self.int8_mattr if a not in have]
        if quantization != "int8" or not extra:
            return self
        mattr = [*have, *extra]
        return dataclasses.replace(self, tvm={**self.tvm, "mattr": mattr})


def check_with_llvm(target: Target) -> None:
    """Refuse an mcpu or mattr that TVM's LLVM does not know, before any compiling.

    Raises:
        ConfigError: naming the target file, the bad values and what LLVM accepts.
    """
    from edgec.tvm_compat.llvm_target import invalid_settings

    bad = invalid_settings(target.for_precision("int8").tvm)
    if bad:
        raise ConfigError(
            f"target file {target.source}: LLVM does not know {', '.join(bad)} for "
            f"{target.tvm.get('mtriple', 'this triple')}; fix the [tvm] or [int8] table (e.g. "
            "mcpu \"cortex-a72\", mattr [\"+neon\", \"+dotprod\"]); `llc -mtriple=... "
            "-mcpu=help` lists the names")


def targets_dir() -> Path:
    """The folder of shipped target files (package data, see edgec.shipped)."""
    return shipped.path("targets")


def names() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def closest_to_host() -> str:
    """The shipped target with the widest vectors and most features this machine runs
    (x86_64-avx512-vnni on Zen 4/5, x86_64 on AVX2-only parts): shipped tuning logs are per
    shipped target, not per host."""
    flags, arch = cpu_flags(), platform.machine()
    fits = []
    for name in names():
        if name == "host":
            continue
        target = load(name)
        if target.arch != arch:
            continue
        needed = target.cpu.cpuinfo_flags()
        if needed <= flags:
            fits.append((target.cpu.vector_bits, len(needed), name))
    if not fits:
        raise ConfigError(f"no shipped target runs on this {arch} machine; use --target host")
    return max(fits)[2]


def load(name_or_path: str) -> Target:
    """Load a shipped target by name, or a user's own TOML file by path.

    Raises:
        ConfigError: unknown name, unreadable file, or a bad key/value (naming file and key).
    """
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"target file {name_or_path} does not exist")
        return _parse(path, path.stem)
    shipped = targets_dir() / f"{name_or_path}.toml"
    if not shipped.is_file():
        raise ConfigError(
            f'unknown target "{name_or_path}"{did_you_mean(name_or_path, names())}; '
            f"choose one of {', '.join(names())} or pass a path to a .toml file"
        )
    return _parse(shipped, name_or_path)


def _parse(path: Path, name: str) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"target file {path}: cannot parse TOML: {err}") from err
    _check_keys(path, data)
    if data.get("detect"):
        data = _detect_host(data)

    def need(table: str, key: str, kind: type):
        value = data.get(table, {}).get(key) if table else data.get(key)
        if value is None or not isinstance(value, kind):
            where = f"{table}.{key}" if table else key
            raise ConfigError(
                f"target file {path}: field {where} is missing or not a {kind.__name__}"
            )
        return value

    arch = need("", "arch", str)
    if arch not in ARCHES:
        raise ConfigError(f"target file {path}: field arch is {arch!r}; use one of {ARCHES}")
    layout = need("layout", "default", str)
    if layout not in LAYOUTS:
        raise ConfigError(f"target file {path}: field layout.default is {layout!r}; use {LAYOUTS}")
    vector_bits = need("cpu", "vector_bits", int)
    if vector_bits not in (128, 256, 512):
        raise ConfigError(f"target file {path}: field cpu.vector_bits must be 128, 256 or 512")
    tvm_table = dict(need("", "tvm", dict))
    # MetaSchedule needs a core count; x86 files leave it to the machine that runs the code.
    tvm_table.setdefault("num-cores", os.cpu_count() or 1)
    if tvm_table.get("kind") != "llvm":
        raise ConfigError(f"target file {path}: field tvm.kind must be \"llvm\" (CPU targets only)")
    build = data.get("build", {})
    winograd = data.get("cpu", {}).get("winograd", True)
    if not isinstance(winograd, bool):
        raise ConfigError(f"target file {path}: field cpu.winograd must be true or false")
    int8_mattr = data.get("int8", {}).get("mattr", [])
    if not isinstance(int8_mattr, list) or not all(isinstance(a, str) for a in int8_mattr):
        raise ConfigError(f"target file {path}: field int8.mattr must be a list of strings")
    return Target(
        name=name,
        description=data.get("description", name),
        arch=arch,
        tvm=tvm_table,
        cpu=CpuCaps(arch, vector_bits, tuple(need("cpu", "features", list)), winograd),
        default_layout=layout,
        rpc_key=need("rpc", "key", str),
        cross_compiler=build.get("cross_compiler"),
        sysroot=build.get("sysroot"),
        source=str(path),
        board=_board(path, data.get("board", {})),
        shipped_logs=_shipped_logs(path, data.get("shipped_logs", "")),
        int8_mattr=tuple(int8_mattr),
    )


def _shipped_logs(path: Path, value: Any) -> str:
    if not isinstance(value, str) or (value and value not in names()):
        raise ConfigError(f"target file {path}: field shipped_logs must name a shipped target "
                          f"({', '.join(names())})")
    return value


def _board(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    if table and not isinstance(table.get("core"), str):
        raise ConfigError(f"target file {path}: field board.core is missing or not a str")
    for key in ("clock_ghz", "dram_gbps"):
        if key in table and (not isinstance(table[key], int | float) or table[key] <= 0):
            raise ConfigError(f"target file {path}: field board.{key} must be a positive number")
    return dict(table)


def _check_keys(path: Path, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in _SCHEMA[""]:
            hint = did_you_mean(key, _SCHEMA[""])
            raise ConfigError(f"target file {path}: unknown field {key!r}{hint}")
        if key in _SCHEMA and key != "" and isinstance(value, dict):
            for sub in value:
                if sub not in _SCHEMA[key]:
                    hint = did_you_mean(sub, _SCHEMA[key])
                    raise ConfigError(f"target file {path}: unknown field {key}.{sub}{hint}")


def _detect_host(data: dict[str, Any]) -> dict[str, Any]:
    """Fill a 'detect = true' description from this machine's CPU (/proc/cpuinfo)."""
    from tvm.target import codegen

    arch = platform.machine()
    detected = parse_cpuinfo(_read_cpuinfo(), arch)
    tvm_table = {**data["tvm"], "mtriple": f"{arch}-linux-gnu", "num-cores": os.cpu_count() or 1}
    tvm_table["mcpu"] = detected.mcpu or codegen.llvm_get_system_cpu()
    if detected.mattr:
        tvm_table["mattr"] = detected.mattr
    return {**data, "arch": arch, "tvm": tvm_table,
            "cpu": {"vector_bits": detected.vector_bits, "features": list(detected.features)}}


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """This machine's CPU flags as /proc/cpuinfo names them."""
    return cpuinfo_flags(_read_cpuinfo())

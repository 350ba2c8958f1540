"""Target descriptions: the TOML files in targets/ turned into validated Target objects."""

from __future__ import annotations

import os
import platform
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgec.errors import ConfigError, did_you_mean

LAYOUTS = ("NCHW", "NHWC", "NCHWc")
ARCHES = ("x86_64", "aarch64")
# Accepted keys per table; anything else in a file is a typo we refuse to ignore.
_SCHEMA: dict[str, set[str]] = {
    "": {"description", "arch", "detect", "tvm", "cpu", "build", "layout", "rpc"},
    "tvm": {"kind", "mtriple", "mcpu", "mattr", "num-cores"},
    "cpu": {"vector_bits", "features", "winograd"},
    "build": {"cross_compiler", "sysroot"},
    "layout": {"default"},
    "rpc": {"key"},
}


@dataclass(frozen=True)
class Target:
    """One machine edgec compiles for, as read from a targets/*.toml file."""

    name: str
    description: str
    arch: str
    tvm: dict[str, Any]
    vector_bits: int
    features: tuple[str, ...]
    default_layout: str
    rpc_key: str
    winograd: bool = True  # Winograd F(4x4, 3x3) for 3x3 convs (edgec.legalize)
    cross_compiler: str | None = None
    sysroot: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nchwc_block(self) -> int:
        """Channels per packed block: one float32 SIMD register (8 on AVX2, 16 on AVX-512)."""
        return max(4, self.vector_bits // 32)

    @property
    def vector_registers(self) -> int:
        """SIMD registers the micro-kernels can keep accumulators in: 32 on AArch64 and
        AVX-512 (which also gives 32 ymm registers to 8-lane blocks), 16 on AVX2."""
        return 32 if self.arch == "aarch64" or "avx512f" in self.features else 16

    @property
    def int8_dot(self) -> str | None:
        """The edgec.intrinsics kind of int8 dot product this target has, if any."""
        if self.arch == "aarch64":
            return "sdot" if "dotprod" in self.features else None
        if self.arch != "x86_64":
            return None
        if "avx512_vnni" in self.features and "avx512vl" in self.features:
            return "vnni"
        return "avx2" if "avx2" in self.features else None

    @property
    def is_native(self) -> bool:
        """True when code built for this target runs on this machine."""
        return self.arch == platform.machine() and not self.cross_compiler

    def tvm_target(self):
        """The tvm.target.Target built from the [tvm] table, unchanged."""
        import tvm

        return tvm.target.Target(dict(self.tvm))

    def summary(self) -> str:
        tvm_desc = ", ".join(f"{k}={v}" for k, v in self.tvm.items() if k != "kind")
        return f"{self.name}: {self.description} [{tvm_desc}]"


def targets_dir() -> Path:
    """The folder of shipped target files: targets/ in a source checkout, else the copy
    installed as edgec._targets (see pyproject.toml)."""
    checkout = Path(__file__).resolve().parent.parent / "targets"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("edgec._targets")))


def names() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


_CPUINFO_NAMES = {"neon": "asimd", "dotprod": "asimddp", "fp16": "fphp"}  # aarch64 names


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
        needed = {_CPUINFO_NAMES.get(f, f) for f in target.features}
        if needed <= flags:
            fits.append((target.vector_bits, len(needed), name))
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
    return Target(
        name=name,
        description=data.get("description", name),
        arch=arch,
        tvm=tvm_table,
        vector_bits=vector_bits,
        features=tuple(need("cpu", "features", list)),
        default_layout=layout,
        winograd=winograd,
        rpc_key=need("rpc", "key", str),
        cross_compiler=build.get("cross_compiler"),
        sysroot=build.get("sysroot"),
        source=str(path),
    )


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
    """Fill a 'detect = true' description from this machine's CPU."""
    from tvm.target import codegen

    flags = cpu_flags()
    arch = platform.machine()
    data = {**data, "arch": arch}
    tvm_table = {**data["tvm"], "mcpu": codegen.llvm_get_system_cpu()}
    tvm_table["mtriple"] = f"{arch}-linux-gnu"
    tvm_table["num-cores"] = os.cpu_count() or 1
    if arch == "aarch64":
        feats = ["neon"] + [f for f in ("dotprod", "fp16") if f in flags or f"asimd{f}" in flags]
        tvm_table["mattr"] = [f"+{f}" if f != "fp16" else "+fullfp16" for f in feats]
        vector_bits = 128
    else:
        feats = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")
                 if f in flags]
        vector_bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    data["tvm"] = tvm_table
    data["cpu"] = {"vector_bits": vector_bits, "features": feats}
    return data


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()

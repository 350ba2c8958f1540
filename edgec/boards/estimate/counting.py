"""Counts the instructions of one inference: builds the qemu plugin, runs the library under
qemu user mode with it, and reads back each executed block with its count.

Counting is bracketed by marker syscalls in guest_runner.py rather than done by difference
of two runs (with and without the inference): one emulated run instead of two, and no
noise from start-up code that differs between runs. The guest is single-threaded
(TVM_NUM_THREADS=1), which the plugin's non-atomic inline counters need.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.cache import cache_root
from edgec.errors import ArtifactError, MissingDependencyError
from edgec.package import PackageInfo

from .cores import CACHE

HERE = Path(__file__).parent
QEMU = {"aarch64": "/usr/bin/qemu-aarch64", "x86_64": "/usr/bin/qemu-x86_64"}
BOARD_ROOT = cache_root() / "board-aarch64"
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Block:
    """One executed guest block: where it starts, how often it ran, its instructions."""

    vaddr: int
    count: int
    insns: tuple[bytes, ...]


@dataclass(frozen=True)
class Counts:
    """What one counted inference executed, and the library's layout in the guest."""

    blocks: list[Block]
    base: int  # guest address the library was loaded at
    calls: list[tuple[str, list[tuple[int, int]]]]  # per call: function, [(address, bytes)]
    inputs: list[tuple[int, int]]  # the model inputs' (address, bytes)
    code: list[tuple[int, int, str]]  # the guest's file mappings: start, end, file
    wall_s: float


def plugin_library() -> Path:
    """The compiled plugin, built with gcc into the cache the first time (keyed by source).

    Raises:
        MissingDependencyError: gcc is missing.
    """
    source = (HERE / "plugin.c").read_bytes()
    built = CACHE / f"block-counter-{hashlib.sha1(source).hexdigest()[:12]}.so"
    if built.exists():
        return built
    if shutil.which("gcc") is None:
        raise MissingDependencyError("gcc is missing (it builds the qemu plugin): "
                                     "apt-get install gcc")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = built.with_suffix(f".{os.getpid()}.tmp")
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp), str(HERE / "plugin.c")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MissingDependencyError(f"building the qemu plugin failed:\n{done.stderr[-2000:]}")
    os.replace(tmp, built)
    return built


def guest(arch: str) -> tuple[list[str], str, dict[str, str]]:
    """qemu with its options, the guest's python, and the environment for `arch`."""
    qemu = QEMU[arch]
    if not os.path.exists(qemu):
        raise MissingDependencyError(
            f"{qemu} is missing (the dynamic qemu, which loads plugins): apt-get install qemu-user"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "QEMU_"))}
    env.update(TVM_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if arch == "x86_64":
        # The host's own interpreter and packages, emulated: same TVM runtime as a board has.
        return [qemu], sys.executable, env
    python = BOARD_ROOT / "root" / "usr" / "bin" / "python3.11"
    if not (BOARD_ROOT / "prepared.json").exists():
        raise MissingDependencyError(
            f"the emulated aarch64 board is not prepared in {BOARD_ROOT}: run "
            "python -c 'import edgec.emulator_root as e; e.prepare()' once (downloads ~150 MB)"
        )
    env = {k: v for k, v in env.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env.update(PYTHONPATH=str(BOARD_ROOT / "site-packages"), PYTHONNOUSERSITE="1",
               PYTHONUNBUFFERED="1", QEMU_LD_PREFIX=str(BOARD_ROOT / "root"))
    return [qemu, "-L", str(BOARD_ROOT / "root")], str(python), env


def random_inputs(info: PackageInfo) -> dict[str, np.ndarray]:
    """Inputs of the declared shapes and dtypes (values do not change a CNN's work)."""
    rng = np.random.default_rng(0)
    out = {}
    for spec in info.inputs:
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        if dtype.kind == "f":
            out[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            out[spec["name"]] = rng.integers(0, 100, shape).astype(dtype)
    return out


def count(library: Path, info: PackageInfo, inputs: Mapping[str, np.ndarray] | None = None,
          progress: Callable[[str], None] | None = None, *, warm: bool = True) -> Counts:
    """Run one inference of `library` under qemu with the block counter.

    Args:
        warm: count a second inference rather than the first (see guest_runner.py): the
            compiled code's counts are the same, the runtime's are steady-state ones
            (measured on SqueezeNet rpi4: 0.13 M runtime instructions warm, 4.1 M cold, of
            169 M), for one more emulated inference.

    Raises:
        MissingDependencyError: qemu-user, gcc or the emulated board root is missing.
        ArtifactError: the library did not run under the emulator.
    """
    import time

    say = progress or (lambda _line: None)
    plugin = plugin_library()
    prefix, python, env = guest(info.arch)
    values = dict(inputs) if inputs is not None else random_inputs(info)
    with tempfile.TemporaryDirectory(prefix="edgec-estimate-") as tmp:
        blocks_path, result_path = Path(tmp) / "blocks.txt", Path(tmp) / "result.json"
        inputs_path = Path(tmp) / "inputs.npz"
        # In the library's declared input order: the runner passes them positionally.
        np.savez(inputs_path, **{s["name"]: values[s["name"]] for s in info.inputs})
        cmd = [*prefix, "-plugin", f"{plugin},out={blocks_path}", python,
               str(HERE / "guest_runner.py"), str(Path(library).resolve()),
               str(inputs_path), str(result_path), *(["--warm"] if warm else [])]
        say(f"running one inference under {Path(prefix[0]).name} (counting blocks)")
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                              timeout=TIMEOUT_S)
        wall = time.perf_counter() - start
        if done.returncode != 0 or not result_path.exists():
            tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-12:])
            raise ArtifactError(f"{library} did not run under {prefix[0]}:\n{tail}")
        result = json.loads(result_path.read_text())
        blocks, markers = _read_blocks(blocks_path)
    if not markers or result["base"] is None:
        raise ArtifactError(f"the counted run of {library} saw no markers or no library mapping")
    calls = [(name, [(a, n) for a, n in args]) for name, args in result["calls"]]
    inputs = [(a, n) for a, n in result["inputs"]]
    code = [(a, b, name) for a, b, name in result["code"]]
    return Counts(blocks=blocks, base=result["base"], calls=calls, inputs=inputs, code=code,
                  wall_s=wall)


def runtime_part(counts: Counts, address: int) -> str:
    """Which file's code outside the library `address` is in (libtvm_runtime.so, libc...)."""
    for start, end, path in counts.code:
        if start <= address < end:
            return Path(path).name
    return "unmapped"  # the vDSO, or code unmapped since


def read_blocks(path: Path) -> list[Block]:
    """The blocks of a plugin output file (any program's run under the plugin)."""
    return _read_blocks(path)[0]


def _read_blocks(path: Path) -> tuple[list[Block], bool]:
    """Parse plugin.c's output; the same code translated twice is merged into one block."""
    merged: dict[tuple[int, tuple[bytes, ...]], int] = {}
    with open(path) as handle:
        header = handle.readline()
        for line in handle:
            vaddr, cnt, _n, hexes = line.split(" ", 3)
            insns = tuple(bytes.fromhex(h) for h in hexes.strip().split("."))
            key = (int(vaddr, 16), insns)
            merged[key] = merged.get(key, 0) + int(cnt)
    blocks = [Block(vaddr=v, count=c, insns=i) for (v, i), c in merged.items()]
    return blocks, "markers=1" in header

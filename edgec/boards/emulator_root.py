"""The emulated aarch64 board's root: Debian's arm64 libraries and Python plus the aarch64
wheels of the host's TVM, unpacked once per machine into a cache that qemu user mode runs."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec.boards import wheels
from edgec.cache import cache_root
from edgec.errors import ConfigError, MissingDependencyError, RemoteError

DEFAULT_CACHE = cache_root() / "board-aarch64"

QEMU = "qemu-aarch64-static"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
MARKER = "prepared.json"
FORMAT = 1  # bump when the cache layout changes, so that old caches are rebuilt
# What Debian 12's arm64 python3.11 needs for ctypes, ssl, hashlib, bz2, lzma and uuid, plus the
# C++ runtime libtvm.so links to. Left out on purpose because an RPC server never imports them:
# readline, curses, sqlite3, dbm and nis (libreadline8, libncursesw6, libsqlite3-0, libdb5.3...).
DEBS = """libc6 libgcc-s1 libstdc++6 libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5
    libcrypt1 libuuid1 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib""".split()
# Both ends of a TVM RPC session must run the same tvm and tvm-ffi, so those must equal the
# host's; the others follow the host when it has them, which keeps a cache reproducible.
# ml_dtypes, a declared requirement of apache-tvm for bfloat16 and float8 tensors, is left
# out: optional to tvm-ffi and TVM, unused by edgec's models, and its import took 11.4 s of
# a board's 47 s start under qemu (Zen 1).
WHEELS = "apache-tvm apache-tvm-ffi numpy psutil cloudpickle typing_extensions".split()
_MUST_MATCH_HOST = ("apache-tvm", "apache-tvm-ffi")
_OWN_NAMES = {"root", "site-packages", "downloads", "logs", MARKER, MARKER + ".tmp"}

Progress = Callable[[str], None]


def last_lines(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(cmd: list[str], what: str, **kwargs: Any) -> str:
    """Run a command; a failure becomes a RemoteError showing the command and its output."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    except FileNotFoundError as err:
        raise MissingDependencyError(f"{what}: {cmd[0]} is not installed") from err
    if done.returncode != 0:
        output = last_lines(done.stderr + done.stdout)
        raise RemoteError(f"{what} failed: {shlex.join(cmd)}\n{output}")
    return done.stdout


def _binfmt_enabled() -> bool:
    entry = BINFMT_DIR / "qemu-aarch64"
    return entry.exists() and entry.read_text().startswith("enabled")


def check_host() -> None:
    """Check that this machine can emulate aarch64, including the board's child processes.

    Raises:
        MissingDependencyError: qemu-aarch64-static is missing, or the kernel has no enabled
            qemu-aarch64 binfmt_misc entry and this process is not root to register one.
    """
    if shutil.which(QEMU) is None or not BINFMT_CONF.exists():
        raise MissingDependencyError(f"{QEMU} is missing: apt-get install qemu-user-static")
    # The RPC server re-executes its own aarch64 python for its workers; only a binfmt_misc
    # entry makes the kernel hand those exec calls to qemu.
    if not _binfmt_enabled() and os.geteuid() != 0:
        raise MissingDependencyError(
            "the kernel cannot run aarch64 programs (no enabled qemu-aarch64 binfmt_misc entry); "
            f"as root run: mount -t binfmt_misc binfmt_misc {BINFMT_DIR}; "
            f"cat {BINFMT_CONF} > {BINFMT_DIR}/register"
        )


def register_binfmt() -> None:
    """As root, mount binfmt_misc if needed and register qemu-aarch64; does nothing if done.

    Raises:
        MissingDependencyError: qemu is missing, or registration is needed and we are not root.
        RemoteError: the kernel refused the mount or the entry (e.g. an unprivileged container).
    """
    if _binfmt_enabled():
        return
    check_host()  # not enabled and it passed, so we are root
    if not (BINFMT_DIR / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mounting binfmt_misc")
    entry = BINFMT_DIR / "qemu-aarch64"
    try:
        if entry.exists():  # registered but disabled
            entry.write_text("1")
        else:
            (BINFMT_DIR / "register").write_text(BINFMT_CONF.read_text().strip())
    except OSError as err:
        raise RemoteError(f"registering qemu-aarch64 in {BINFMT_DIR} failed: {err}") from err


def _wanted_wheels() -> dict[str, str]:
    """The host's version of each wheel ('' when the host lacks an optional one)."""
    pins = {}
    for name in WHEELS:
        try:
            pins[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name in _MUST_MATCH_HOST:
                raise MissingDependencyError(f"{name} is missing: pip install {name}") from None
            pins[name] = ""
    return pins


def _ensure_arm64_apt(progress: Progress) -> None:
    """Make `apt-get download <pkg>:arm64` work: arm64 must be a dpkg architecture with lists."""
    foreign = _run(["dpkg", "--print-foreign-architectures"], "preparing needs a Debian host")
    lists = subprocess.run(["apt-cache", "show", "libc6:arm64"], capture_output=True, check=False)
    if "arm64" in foreign.split() and lists.returncode == 0:
        return
    if os.geteuid() != 0:
        raise MissingDependencyError(
            "apt cannot download arm64 packages; as root run: "
            "dpkg --add-architecture arm64 && apt-get update"
        )
    if "arm64" not in foreign.split():
        progress("adding arm64 to dpkg's architectures")
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
    progress("apt-get update (fetching arm64 package lists)")
    _run(["apt-get", "update"], "apt-get update")


def _unpack_debs(cache: Path, progress: Progress) -> list[str]:
    debs_dir = cache / "downloads" / "debs"
    debs_dir.mkdir(parents=True)
    progress(f"downloading {len(DEBS)} Debian arm64 packages")
    pkgs = [f"{name}:arm64" for name in DEBS]
    _run(["apt-get", "download", *pkgs], "apt-get download", cwd=debs_dir)
    debs = sorted(p.name for p in debs_dir.glob("*.deb"))
    progress("unpacking them into the board's root")
    for deb in debs:
        _run(["dpkg", "-x", str(debs_dir / deb), str(cache / "root")], f"unpacking {deb}")
    return debs


def _unpack_wheels(cache: Path, pins: dict[str, str], progress: Progress) -> list[str]:
    specs = [f"{name}=={pins[name]}" if pins[name] else name for name in WHEELS]
    paths = wheels.download(specs, "aarch64", "3.11", progress)
    progress("unpacking the wheels")
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            # None of these wheels has a .data folder (scripts, headers) that would need moving.
            archive.extractall(cache / "site-packages")
    return sorted(p.name for p in paths)


def board_command(cache: Path, *args: str) -> list[str]:
    return [QEMU, str(cache / "root" / "usr" / "bin" / "python3.11"), *args]


def board_env(cache: Path) -> dict[str, str]:
    """The host environment minus what would leak the host's Python or libraries in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "QEMU_"))}
    env.pop("VIRTUAL_ENV", None)
    # qemu looks up the arm64 loader, and any absolute path, under this prefix first. Children
    # inherit it, so the workers that binfmt_misc hands to qemu find the same root.
    env.update(QEMU_LD_PREFIX=str(cache / "root"), PYTHONPATH=str(cache / "site-packages"))
    env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
    # The full TVM wheel, as a board that tunes needs: MetaSchedule's runner fills its inputs
    # with tvm.contrib.random and edgec reads the board's triple from its LLVM, both in the
    # compiler library a runtime-only TVM lacks (TVM_USE_RUNTIME_LIB=1: 7 s starts, not 25).
    env.pop("TVM_USE_RUNTIME_LIB", None)
    return env


def _clear_cache(cache: Path) -> None:
    """Delete a half-finished or outdated cache, but never a folder edgec did not fill."""
    if not cache.exists():
        return
    foreign = sorted(p.name for p in cache.iterdir() if p.name not in _OWN_NAMES)
    if foreign:
        raise ConfigError(
            f"{cache} holds files edgec did not put there ({', '.join(foreign[:3])}); "
            "choose another cache folder or empty it"
        )
    shutil.rmtree(cache)


def prepare(cache: Path = DEFAULT_CACHE, progress: Progress | None = None) -> Path:
    """Fill `cache` with Debian's arm64 Python 3.11 and aarch64 wheels of the host's TVM, once.

    A marker written last records what was installed; while it matches, this returns at once.
    A cache without a matching marker (interrupted, or for other versions) is rebuilt, so do
    not prepare a cache while a board runs from it. Two processes preparing one cache take
    turns (a file lock beside it).

    Args:
        cache: the folder to fill (created; ~400 MB).
        progress: called with a short line before each slow step.

    Returns:
        The cache folder.

    Raises:
        MissingDependencyError: a host tool is missing or a root-only apt step is not done.
        RemoteError: a download or unpack failed, or the board's python cannot import numpy.
        ConfigError: `cache` holds files edgec did not create.
    """
    cache = Path(cache).expanduser()
    with wheels.exclusive(cache.parent / f".{cache.name}.lock"):
        return _prepare(cache, progress or (lambda _line: None))


def _prepare(cache: Path, say: Progress) -> Path:
    wanted = {"format": FORMAT, "debs": DEBS, "wheels": _wanted_wheels()}
    with contextlib.suppress(OSError, ValueError):
        marker = json.loads((cache / MARKER).read_text())
        if all(marker.get(key) == value for key, value in wanted.items()):
            return cache
    _clear_cache(cache)
    _ensure_arm64_apt(say)
    cache.mkdir(parents=True)
    deb_files = _unpack_debs(cache, say)
    wheel_files = _unpack_wheels(cache, wanted["wheels"], say)
    shutil.rmtree(cache / "downloads")  # the .deb files (~40 MB); wheels stay in their cache
    say("checking that the board's python imports ctypes, ssl, numpy and tvm_ffi")
    # Proves the deb list is complete before the marker says so; plain qemu, no binfmt needed.
    smoke = board_command(cache, "-c", "import ctypes, hashlib, ssl, numpy, tvm_ffi")
    _run(smoke, "the board's smoke import", env=board_env(cache))
    tmp = cache / (MARKER + ".tmp")
    tmp.write_text(json.dumps({**wanted, "deb_files": deb_files, "wheel_files": wheel_files}))
    os.replace(tmp, cache / MARKER)  # atomic: readers see no marker or a whole one
    return cache



"""Wheels for another machine's architecture (the emulated board's Python, a bundle's TVM
runtime), downloaded once with pip into a cache shared by both."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from edgec.cache import cache_root
from edgec.errors import MissingDependencyError, RemoteError

CACHE = cache_root() / "wheels"
# pip's platform tags for each architecture edgec builds for (TVM's wheels are manylinux_2_28).
PLATFORMS = {
    "aarch64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64"),
    "x86_64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64"),
}


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (created), across processes: two edgec runs,
    or two test workers, never fill one cache at the same time."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def download(specs: Sequence[str], arch: str, python_version: str = "3.11",
             progress: Callable[[str], None] | None = None) -> list[Path]:
    """The wheels of `specs` ("name==version", no dependencies) for CPython `python_version`
    on `arch`, from the cache or PyPI; one path per spec, in order.

    Raises:
        MissingDependencyError: pip is missing, or `arch` is not one edgec knows.
        RemoteError: pip could not download a wheel (offline, or no wheel for that platform).
    """
    if importlib.util.find_spec("pip") is None:
        raise MissingDependencyError(f"pip is missing: {sys.executable} -m ensurepip")
    if arch not in PLATFORMS:
        raise MissingDependencyError(f"no wheel platform known for {arch}")
    folder = CACHE / f"{arch}-cp{python_version.replace('.', '')}"
    with exclusive(folder / ".lock"):
        return _download(specs, folder, arch, python_version, progress)


def _download(specs: Sequence[str], folder: Path, arch: str, python_version: str,
              progress: Callable[[str], None] | None) -> list[Path]:
    wanted = [_normalized(spec.split("==")[0]) for spec in specs]
    missing = [spec for spec, name in zip(specs, wanted, strict=True)
               if _find(folder, name, spec) is None]
    if missing:
        if progress:
            progress(f"downloading {arch} wheels for Python {python_version}: "
                     f"{' '.join(missing)}")
        platform = [arg for tag in PLATFORMS[arch] for arg in ("--platform", tag)]
        # --no-deps: callers name every wheel they need, pinned; resolving would drift.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--disable-pip-version-check", "-d", str(folder), *platform,
               "--only-binary=:all:", "--python-version", python_version,
               "--implementation", "cp", *missing]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-5:])
            raise RemoteError(f"pip download failed: {shlex.join(cmd)}\n{tail}")
    found = [_find(folder, name, spec) for spec, name in zip(specs, wanted, strict=True)]
    lost = [spec for spec, path in zip(specs, found, strict=True) if path is None]
    if lost:
        raise RemoteError(f"pip download left no wheel for {', '.join(lost)} in {folder}")
    return [path for path in found if path is not None]


def _normalized(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _find(folder: Path, name: str, spec: str) -> Path | None:
    version = spec.split("==")[1] if "==" in spec else None
    for wheel in sorted(folder.glob("*.whl")):
        parts = wheel.name.split("-")
        if _normalized(parts[0]) == name and (version is None or parts[1] == version):
            return wheel
    return None

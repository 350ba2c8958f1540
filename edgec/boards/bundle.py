"""Deploy stage, without TVM on the board: a folder that runs a compiled library with Python 3
and numpy only (run.py), or with nothing but the C++ runtime (cpp/run_model).

    DIR/MODEL.so, MODEL.so.json   the library and its metadata, as compiled
    DIR/run.py                    python3 run.py [--input NAME=FILE.npy] [-o out.npz] [--runs N]
    DIR/lib/                      libtvm_runtime.so, libtvm_ffi.so and versions.json
    DIR/python/                   edgec's loader and the tvm_ffi package (with typing_extensions)
    DIR/cpp/run_model             (--cpp) the C++ runner, its source as an embedding example
    DIR/bundle.json               what is inside, for which architecture and Python

The runtime comes from the installed TVM when the library is for this machine, else from the
pinned aarch64 wheels (downloaded once, cached). Headers for the C++ runner come from the
installed wheels (they are the same on every architecture).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgec.boards import probe, wheels
from edgec.errors import BuildError, ConfigError, MissingDependencyError
from edgec.package import check_library, metadata_path, read_info

Progress = Callable[[str], None]
FORMAT = 1
PINNED = ("apache-tvm", "apache-tvm-ffi")
# tvm_ffi's Cython core links to both (the testing one too, by DT_NEEDED).
FFI_LIBRARIES = ("libtvm_ffi.so", "libtvm_ffi_testing.so")
RUNNER_SOURCE = Path(__file__).with_name("bundle_runner.cc")
RUN_SCRIPT = Path(__file__).with_name("bundle_run.py")
# What of the tvm_ffi package a loader imports: its Python files and the Cython core; not
# its headers, sources, CMake files or test library (~9 of its 12 MB).
_FFI_SKIP_DIRS = {"include", "3rdparty", "cython", "share", "cmake", "lib", "__pycache__"}


@dataclass(frozen=True)
class BundleReport:
    """A bundle written: where, for what, and the bytes of every file in it."""

    folder: Path
    arch: str
    python_version: str
    versions: dict[str, str]
    files: dict[str, int]  # relative path -> bytes

    def size(self, prefix: str = "") -> int:
        return sum(n for name, n in self.files.items() if name.startswith(prefix))

    def summary(self) -> str:
        mb = 1 / 1e6
        groups = [("model library + metadata", [n for n in self.files if "/" not in n
                                                and n.endswith((".so", ".so.json"))]),
                  ("TVM runtime (lib/)", ["lib/"]), ("Python loader (python/, run.py)",
                                                     ["python/", "run.py"]),
                  ("C++ runner (cpp/)", ["cpp/"])]
        lines = [f"bundle {self.folder}: {self.arch}, TVM {self.versions['apache-tvm']}, "
                 f"Python {self.python_version} for run.py"]
        for label, prefixes in groups:
            total = sum(n for name, n in self.files.items() if name.startswith(tuple(prefixes)))
            if total:
                lines.append(f"  {label:<34} {total * mb:7.2f} MB")
        lines.append(f"  {'total':<34} {self.size() * mb:7.2f} MB (numpy not included)")
        lines.append(f"  on the board: cd {self.folder.name} && python3 run.py   (needs numpy)")
        if self.size("cpp/"):
            lines.append(f"  or, with no Python: {self.folder.name}/cpp/run_model "
                         f"{self.folder.name}/{self._library()} --input NAME=FILE.npy")
        return "\n".join(lines)

    def _library(self) -> str:
        return next(n for n in self.files if "/" not in n and n.endswith(".so"))

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "arch": self.arch, "library": self._library(),
                           "python_version": self.python_version, "versions": self.versions,
                           "bytes": self.size(), "files": self.files}, indent=2)


def make_bundle(library: str | Path, folder: str | Path, *, cpp: bool = False,
                python_version: str | None = None, progress: Progress | None = None
                ) -> BundleReport:
    """Write the bundle of `library` to `folder` (a new folder; nothing is left on failure).

    Args:
        cpp: also cross-compile the C++ runner with the library's target compiler.
        python_version: the board's Python ("3.11"); default: this one for a library for
            this machine, else 3.11 (Raspberry Pi OS and Debian 12).

    Raises:
        ArtifactError: the library or its metadata is missing or damaged.
        ConfigError: `folder` exists and is not empty.
        MissingDependencyError, RemoteError: no compiler for --cpp, or the wheels could not
            be downloaded.
    """
    say = progress or (lambda _msg: None)
    library = Path(library)
    info = read_info(library)
    check_library(library, info, machine=info.arch)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"-o {folder} exists and is not empty; choose a new folder")
    here = info.arch == platform.machine()
    python_version = python_version or ("3.11" if not here else
                                        f"{sys.version_info.major}.{sys.version_info.minor}")
    versions = {name: importlib.metadata.version(name) for name in PINNED}
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".edgec-bundle-") as tmp:
        staging = Path(tmp) / "bundle"
        (staging / "lib").mkdir(parents=True)
        for path in (library, metadata_path(library)):
            shutil.copy2(path, staging / path.name)
        if here and python_version == f"{sys.version_info.major}.{sys.version_info.minor}":
            say("taking the TVM runtime from this machine's TVM install")
            _copy_installed_runtime(staging)
        else:
            _copy_runtime_from_wheels(staging, info.arch, python_version, versions, say)
        (staging / "lib" / "versions.json").write_text(json.dumps(versions, indent=2))
        _copy_loader(staging)
        shutil.copy2(RUN_SCRIPT, staging / "run.py")
        if cpp:
            _build_runner(staging, info.target, say)
        files = {str(p.relative_to(staging)): p.stat().st_size
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        report = BundleReport(folder, info.arch, python_version, versions, files)
        (staging / "bundle.json").write_text(report.to_json())
        if folder.exists():
            folder.rmdir()  # empty, checked above
        os.replace(staging, folder)
    return report


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds a package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"{name} is not installed here: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations)))


def _ffi_member(relative: str) -> bool:
    """Whether a file of the tvm_ffi package (path relative to it) goes into a bundle."""
    parts = relative.split("/")
    if set(parts[:-1]) & _FFI_SKIP_DIRS:
        return False
    name = parts[-1]
    # Not lib/: its libraries go to DIR/lib, where libtvm_runtime.so needs libtvm_ffi.so
    # (RUNPATH $ORIGIN); edgec's loader preloads them before importing tvm_ffi, whose core
    # then finds them by soname.
    return name.endswith(".py") or (name.startswith("core.") and name.endswith(".so"))


def _copy_installed_runtime(staging: Path) -> None:
    ffi_dir = _package_dir("tvm_ffi")
    shutil.copy2(_package_dir("tvm") / "lib" / "libtvm_runtime.so", staging / "lib")
    for name in FFI_LIBRARIES:
        shutil.copy2(ffi_dir / "lib" / name, staging / "lib")
    for path in sorted(ffi_dir.rglob("*")):
        relative = path.relative_to(ffi_dir).as_posix()
        if path.is_file() and _ffi_member(relative):
            target = staging / "python" / "tvm_ffi" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _copy_runtime_from_wheels(staging: Path, arch: str, python_version: str,
                              versions: dict[str, str], say: Progress) -> None:
    tvm_wheel, ffi_wheel = wheels.download(
        [f"{name}=={versions[name]}" for name in PINNED], arch, python_version, say)
    say(f"taking the {arch} TVM runtime from {tvm_wheel.name} and {ffi_wheel.name}")
    with zipfile.ZipFile(tvm_wheel) as archive:
        (staging / "lib" / "libtvm_runtime.so").write_bytes(
            archive.read("tvm/lib/libtvm_runtime.so"))
    with zipfile.ZipFile(ffi_wheel) as archive:
        for name in archive.namelist():
            if name.startswith("tvm_ffi/") and _ffi_member(name[len("tvm_ffi/"):]):
                target = staging / "python" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
        for lib in FFI_LIBRARIES:
            (staging / "lib" / lib).write_bytes(archive.read(f"tvm_ffi/lib/{lib}"))
    for lib in (staging / "lib").glob("*.so"):
        lib.chmod(0o755)


def _copy_loader(staging: Path) -> None:
    """edgec's board loader and typing_extensions (tvm_ffi imports it; pure Python)."""
    package = Path(__file__).resolve().parents[1]
    for name in probe.LOADER_FILES:
        target = staging / "python" / "edgec" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package / name, target)
    spec = importlib.util.find_spec("typing_extensions")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("typing_extensions is not installed here")
    shutil.copy2(spec.origin, staging / "python" / "typing_extensions.py")


def _build_runner(staging: Path, target: dict, say: Progress) -> None:
    """Compile cpp/run_model with the target's compiler against the wheels' headers, linked
    to the bundle's runtime (found at run time beside it: RUNPATH $ORIGIN/../lib)."""
    compiler = _compiler_for(target)
    if shutil.which(compiler) is None:
        raise MissingDependencyError(f"--cpp needs the C++ compiler {compiler}; install it "
                                     "(e.g. apt-get install g++-aarch64-linux-gnu)")
    cpp = staging / "cpp"
    cpp.mkdir()
    shutil.copy2(RUNNER_SOURCE, cpp / "run_model.cc")
    headers = [_package_dir("tvm") / "include", _package_dir("tvm_ffi") / "include"]
    cmd = [compiler, "-std=c++17", "-O2", "-o", str(cpp / "run_model"), str(cpp / "run_model.cc"),
           *[f"-I{h}" for h in headers], f"-L{staging / 'lib'}", "-ltvm_runtime", "-ltvm_ffi",
           "-Wl,-rpath,$ORIGIN/../lib"]
    say(f"compiling the C++ runner with {compiler}")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if "error" in line),
                     done.stderr.strip()[-300:])
        raise BuildError(f"compiling the C++ runner with {compiler} failed: {first}")


def _compiler_for(target: dict) -> str:
    """The C++ compiler the library was linked with: its target file's, else by arch."""
    from edgec import targets

    name, source = target.get("name", ""), target.get("source", "")
    if name in targets.names():
        found = targets.load(name)
    elif source and Path(source).is_file():
        found = targets.load(source)
    else:
        triple = str(target.get("tvm", {}).get("mtriple", ""))
        return "aarch64-linux-gnu-g++" if triple.startswith("aarch64") else "g++"
    return found.cross_compiler or "g++"

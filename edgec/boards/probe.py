"""What a board has and what runs on it over SSH: its Python, TVM and CPU, and edgec's loader.

Everything here runs board-side through `ssh.run`, as small stdlib-only Python scripts given to
the board's own interpreter, so nothing but Python (and, to run models, TVM + numpy) is needed
there.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import posixpath
import shlex
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgec.boards import ssh
from edgec.errors import ArtifactError, RemoteError

# The modules `edgec.runtime` imports: stdlib + numpy + tvm.runtime, so they run on a board.
# Paths under edgec/; tests/test_runtime.py imports them with everything else blocked.
LOADER_FILES = ("__init__.py", "errors.py", "package.py", "runtime.py", "tvm_compat/__init__.py",
                "tvm_compat/log_filters.py", "tvm_compat/vm_runtime.py")
# The TVM RPC server needs cloudpickle (its popen worker) and psutil (ending timed-out sessions).
RPC_EXTRAS = ("cloudpickle", "psutil")

_PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
found = {n: version(n) for n in ("apache-tvm", "apache-tvm-ffi", "numpy", "cloudpickle", "psutil")}
if found["apache-tvm"] is None and importlib.util.find_spec("tvm"):  # a source build
    import tvm
    found["apache-tvm"] = tvm.__version__
features = []
try:
    for line in open("/proc/cpuinfo"):
        if line.split(":")[0].strip().lower() in ("features", "flags"):
            features = line.split(":", 1)[1].split()
            break
except OSError:
    pass
print(json.dumps({"python": platform.python_version(), "cores": os.cpu_count(),
                  "features": features, "packages": found}))
"""

# Shared by the scripts below: the same seeded inputs as edgec.check.random_inputs(seed=0).
_INPUTS = r"""
import json, sys, time
import numpy as np
from edgec import runtime
from edgec.errors import EdgecError
def inputs(specs):
    rng, arrays = np.random.default_rng(0), {}
    for spec in specs:
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        value = rng.uniform(-1.0, 1.0, shape) if dtype.kind == "f" else rng.integers(0, 10, shape)
        arrays[spec["name"]] = value.astype(dtype)
    return arrays
"""

SMOKE = _INPUTS + r"""
try:
    model = runtime.load(sys.argv[1])
    start = time.perf_counter()
    outputs = model.run(inputs(model.info.inputs))
    result = {"ms": 1000 * (time.perf_counter() - start), "outputs": {
        k: {"shape": list(v.shape), "dtype": str(v.dtype), "min": float(v.min()),
            "max": float(v.max()), "mean": float(v.mean())} for k, v in outputs.items()}}
except EdgecError as err:
    result = {"error": str(err)}
print(json.dumps(result))
"""

PROFILE = _INPUTS + r"""
try:
    model = runtime.load(sys.argv[1])
    result = {"profile_ms": model.profile(inputs(model.info.inputs), runs=int(sys.argv[2]))}
except EdgecError as err:
    result = {"error": str(err)}
print(json.dumps(result))
"""


def local_versions() -> dict[str, str]:
    """This machine's apache-tvm and apache-tvm-ffi: a board must run the same for RPC."""
    return {name: importlib.metadata.version(name) for name in ("apache-tvm", "apache-tvm-ffi")}


def normalize_arch(machine: str) -> str:
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine.lower(), machine)


@dataclass(frozen=True)
class BoardInfo:
    """A board as seen over SSH. `python` is None when the interpreter asked for is missing."""

    where: str
    machine: str
    python_path: str
    python: str | None = None
    cores: int | None = None
    features: list[str] = field(default_factory=list)
    packages: dict[str, str | None] = field(default_factory=dict)

    def cpu_features(self) -> dict[str, bool]:
        """The features edgec's targets care about, from /proc/cpuinfo."""
        have = set(self.features)
        if self.machine == "aarch64":
            names = {"neon": ("asimd", "neon"), "dotprod": ("asimddp",),
                     "fp16": ("asimdhp", "fphp"), "i8mm": ("i8mm",), "sve": ("sve",)}
        else:
            names = {"avx2": ("avx2",), "fma": ("fma",), "avx512f": ("avx512f",),
                     "vnni": ("avx512_vnni", "avx_vnni")}
        return {name: any(flag in have for flag in flags) for name, flags in names.items()}

    def problems(self, want: dict[str, str], *, rpc: bool = False) -> list[str]:
        """What stops edgec's models from running there; `rpc` adds the RPC server's needs."""
        if self.python is None:
            return [f"{self.python_path} does not run on the board"]
        found = []
        for name, version in want.items():
            have = self.packages.get(name)
            if have is None:
                found.append(f"{name} is not installed")
            elif have != version:
                found.append(f"{name} is {have} on the board but {version} here "
                             "(RPC and the compiled library need the same version)")
        if self.packages.get("numpy") is None:
            found.append("numpy is not installed")
        if rpc:
            found += [f"{name} is not installed (the TVM RPC server needs it)"
                      for name in RPC_EXTRAS if self.packages.get(name) is None]
        return found

    def pip_command(self, want: dict[str, str]) -> str:
        """The pip line that installs what edgec needs on the board, pinned to `want`."""
        pins = " ".join(f"{name}=={version}" for name, version in want.items())
        python = self.python_path if self.python else "python3"
        return f"{python} -m pip install {pins} numpy {' '.join(RPC_EXTRAS)}"

    def install_advice(self, want: dict[str, str]) -> list[str]:
        """The commands that fix `problems(want, rpc=True)`, for the board's shell."""
        if not self.problems(want, rpc=True):
            return []
        advice = [self.pip_command(want)]
        if self.python is None:
            advice.insert(0, "sudo apt-get install python3 python3-venv (or pass --remote-python)")
        advice.append("where pip refuses the system Python (PEP 668): python3 -m venv ~/tvm, "
                      "install with ~/tvm/bin/pip, then pass --remote-python ~/tvm/bin/python")
        return advice

    def summary(self, want: dict[str, str]) -> str:
        features = " ".join(f"{k}{'+' if v else '-'}" for k, v in self.cpu_features().items())
        lines = [f"board {self.where}: {self.machine}, {self.cores or '?'} cores, {features}",
                 f"  python ({self.python_path}): {self.python or 'missing'}"]
        for name in (*want, "numpy", *RPC_EXTRAS):
            have = self.packages.get(name) or "missing"
            match = "" if name not in want else (" (same as here)" if have == want[name]
                                                 else f" (here: {want[name]})")
            lines.append(f"  {name}: {have}{match}")
        problems = self.problems(want, rpc=True)
        lines += [f"  problem: {p}" for p in problems] or ["  ready for edgec (run, bench --ssh)"]
        lines += [f"  to fix: {a}" for a in self.install_advice(want)]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "cpu": self.cpu_features()}, indent=2)


def probe(client: Any, python: str, where: str) -> BoardInfo:
    """Ask the board for its architecture (uname -m), Python, packages and CPU features.

    Raises:
        RemoteError: the SSH commands fail or hang.
    """
    machine = normalize_arch(ssh.check_output(client, "uname -m", timeout=20, where=where).strip())
    done = ssh.run(client, f"{ssh.quote(python)} -c {shlex.quote(_PROBE)}", timeout=90,
                   where=where)
    if done.code != 0:
        return BoardInfo(where, machine, python)
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as err:
        raise RemoteError(f"{where}: {python} printed no board description: {err}") from err
    return BoardInfo(where, machine, python, data["python"], data["cores"], data["features"],
                     data["packages"])


def inspect(options: ssh.SshOptions, python: str = "python3") -> BoardInfo:
    """Log in to a board and describe it (what `edgec board check` shows).

    Raises:
        RemoteError: SSH fails (unreachable, host key, login) or the commands hang.
    """
    client = ssh.connect(options)
    try:
        return probe(client, python, options.where)
    finally:
        client.close()


def require_ready(info: BoardInfo, want: dict[str, str], *, rpc: bool = False) -> None:
    """Raise one line naming the first problem and the install command.

    Raises:
        RemoteError: Python, TVM (at the wanted version) or numpy are missing on the board.
    """
    problems = info.problems(want, rpc=rpc)
    if problems:
        raise RemoteError(f"board {info.where}: {problems[0]}; on the board run: "
                          f"{info.pip_command(want)} (edgec board check lists everything)")


def check_arch(library: str | Path, library_arch: str, board_arch: str | None, where: str) -> None:
    """Refuse a library compiled for another CPU before anything is uploaded or run.

    Raises:
        ArtifactError: the library's ELF machine is not the board's.
    """
    if board_arch is not None and library_arch != board_arch:
        raise ArtifactError(
            f"{library} was compiled for {library_arch} but board {where} is {board_arch}: "
            f"compile it for a {board_arch} target (edgec targets lists them)"
        )


@contextlib.contextmanager
def loader_dir(client: Any, where: str) -> Iterator[str]:
    """A private temporary folder on the board holding edgec's loader; removed afterwards."""
    tmp = ssh.check_output(client, 'mktemp -d "${TMPDIR:-/tmp}/edgec-XXXXXX"', timeout=20,
                           where=where).strip()
    try:
        sftp = ssh.open_sftp(client, timeout=60, where=where)
        try:
            package = Path(__file__).resolve().parent.parent  # edgec/
            for folder in sorted({posixpath.dirname(f"edgec/{name}") for name in LOADER_FILES}):
                sftp.mkdir(posixpath.join(tmp, folder), mode=0o700)
            for name in LOADER_FILES:
                sftp.put(str(package / name), posixpath.join(tmp, "edgec", name))
        finally:
            sftp.close()
        yield tmp
    finally:
        with contextlib.suppress(RemoteError):
            ssh.run(client, f"rm -rf -- {shlex.quote(tmp)}", timeout=20, where=where)


def run_loader(client: Any, info: BoardInfo, tmp: str, script: str, *args: str,
               timeout: float = 300.0) -> dict[str, Any]:
    """Run a script that uses edgec.runtime on the board and return the JSON it prints.

    Raises:
        ArtifactError: the board's loader refused the library (hash, architecture).
        RemoteError: the script crashed or timed out.
    """
    env = ssh.environment_prefix({"PYTHONPATH": tmp, "PYTHONNOUSERSITE": "1"})
    command = (f"cd {shlex.quote(tmp)} && {env} {ssh.quote(info.python_path)} -c "
               f"{shlex.quote(script)} {' '.join(shlex.quote(a) for a in args)}")
    done = ssh.run(client, command, timeout=timeout, where=info.where)
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"board {info.where}: edgec's loader failed (exit {done.code}): "
                          f"{tail}") from None
    if "error" in result:
        raise ArtifactError(f"on board {info.where}: {result['error']}")
    return result


def profile_on_board(client: Any, info: BoardInfo, library: str | Path,
                     runs: int = 10) -> dict[str, float]:
    """Per-function milliseconds of one inference, measured by edgec's loader on the board."""
    library = Path(library)
    with loader_dir(client, info.where) as tmp:
        sftp = ssh.open_sftp(client, timeout=120, where=info.where)
        try:
            for local in (library, Path(f"{library}.json")):
                sftp.put(str(local), posixpath.join(tmp, local.name))
        finally:
            sftp.close()
        result = run_loader(client, info, tmp, PROFILE, posixpath.join(tmp, library.name),
                            str(runs))
    return result["profile_ms"]

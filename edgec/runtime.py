"""The loader that runs a compiled model: needs only numpy, the tvm_ffi package and
libtvm_runtime.so (boards too; see edgec.tvm_compat.vm_runtime). Loading never imports the
tvm package, so a board needs no TVM compiler; running a model on a board through RPC
(load_remote) does, on the workstation.

    m = edgec.runtime.load("model.so")
    outputs = m.run({"input": array})      # {"logits": ndarray, ...}
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import ArtifactError, ConfigError
from edgec.package import PackageInfo, check_library, file_sha256, read_info
from edgec.tvm_compat import vm_runtime
from edgec.tvm_compat.log_filters import quiet_scope_warnings


class CompiledModel:
    """A compiled edgec model loaded into a Relax VM on this machine (vm_runtime.LocalVM);
    RemoteModel runs one on an RPC session."""

    def __init__(self, vm: Any, device: Any, info: PackageInfo, path: Path):
        self._vm = vm
        self.device = device
        self.info = info
        self.path = path

    def _tensor(self, value: np.ndarray) -> Any:
        return vm_runtime.tensor(value)

    def _numpy(self, value: Any) -> np.ndarray:
        return vm_runtime.to_numpy(value)

    def _function(self, func: Any) -> Any:
        return vm_runtime.ffi().convert(func)

    @property
    def input_names(self) -> list[str]:
        return [spec["name"] for spec in self.info.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec["name"] for spec in self.info.outputs]

    def _device_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[Any]:
        unknown = set(inputs) - set(self.input_names)
        missing = [n for n in self.input_names if n not in inputs]
        if unknown or missing:
            raise ConfigError(
                f"{self.path.name} takes inputs {self.input_names}; "
                f"missing {missing or 'none'}, unknown {sorted(unknown) or 'none'}"
            )
        arrays = []
        for spec in self.info.inputs:
            value = np.asarray(inputs[spec["name"]])
            if tuple(value.shape) != tuple(spec["shape"]):
                raise ConfigError(
                    f"input {spec['name']}: shape {tuple(value.shape)} given, "
                    f"{tuple(spec['shape'])} expected"
                )
            if value.dtype != np.dtype(spec["dtype"]):
                # A silent cast hid real mistakes (float64 images, int8 data for a float
                # model, complex arrays); strings failed deep inside TVM.
                raise ConfigError(
                    f"input {spec['name']}: dtype {value.dtype} given, {spec['dtype']} "
                    f"expected; convert it first (e.g. array.astype(numpy.{spec['dtype']}))")
            value = np.ascontiguousarray(value)  # a local tensor shares (and holds) its memory
            arrays.append(self._tensor(value))
        return arrays

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference. Returns outputs by name, as numpy arrays.

        Raises:
            ConfigError: missing/unknown input names, wrong shapes or dtypes.
        """
        # set_input + invoke_stateful + get_outputs, not vm["main"](...): over RPC a model
        # with several outputs returns a remote tuple that cannot be unpacked here.
        self._vm.set_input("main", *self._device_inputs(inputs))
        self._vm.invoke_stateful("main")
        result = vm_runtime.get_outputs(self._vm, "main")
        values = list(result) if len(self.output_names) > 1 else [result]
        return {name: self._numpy(v) for name, v in zip(self.output_names, values, strict=True)}

    def timer(self, inputs: Mapping[str, np.ndarray]):
        """A function of `repeat` giving that many per-run latencies in seconds, measured on
        the device (no host round trips), on these inputs."""
        self._vm.set_input("main", *self._device_inputs(inputs))

        def measure(repeat: int) -> list[float]:
            timer = self._vm.time_evaluator("invoke_stateful", self.device, number=1,
                                            repeat=repeat)
            return list(timer("main").results)

        return measure

    def profile(self, inputs: Mapping[str, np.ndarray], runs: int = 10) -> dict[str, float]:
        """Mean milliseconds per run spent in each compiled function (local models only).

        The VM calls an instrument before and after every call instruction; timing happens
        on the host clock, so this is for where time goes, not for absolute latency.
        """
        import time

        arrays = self._device_inputs(inputs)
        totals: dict[str, float] = {}
        started: dict[str, float] = {}

        def instrument(func, symbol, before, ret, *args):
            if before:
                started[symbol] = time.perf_counter()
            else:
                elapsed = time.perf_counter() - started.pop(symbol, time.perf_counter())
                totals[symbol] = totals.get(symbol, 0.0) + elapsed
            return 0

        self._vm["main"](*arrays)  # warm-up outside the measurement
        self._vm.set_instrument(self._function(instrument))
        try:
            for _ in range(runs):
                self._vm["main"](*arrays)
        finally:
            self._vm.set_instrument(None)
        skip = ("vm.builtin.", "relax.vm.")
        return {name: 1000.0 * t / runs for name, t in sorted(totals.items(), key=lambda kv: -kv[1])
                if not name.startswith(skip)}


def use_all_cores() -> int:
    """Make TVM's thread pool use every core this process may run on; returns the count.

    On x86 TVM halves the core count by default, assuming SMT siblings, so a 2-vCPU VM
    without SMT runs every model on one thread at half speed. TVM_NUM_THREADS or
    OMP_NUM_THREADS set by the user win. The pool reads this once, when it starts (at the
    first parallel call), so call this before running anything.
    """
    for name in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["TVM_NUM_THREADS"] = str(cores or 1)
    return cores or 1


_LOADED: dict[str, str] = {}  # resolved path -> sha256 of the library dlopen'ed from it


def _dlopen_path(path: Path, sha: str) -> tuple[Path, bool]:
    """The path to load `path`'s library from, and whether it is a private copy.

    dlopen hands back the library already loaded from a path even when the file has been
    replaced since: a second model compiled to the same OUT.so would silently run the first
    one's code. A changed file (sha256 `sha`) is therefore loaded from a copy named by it.
    """
    if _LOADED.setdefault(str(path.resolve()), sha) == sha:
        return path, False
    fd, copy = tempfile.mkstemp(prefix=f"edgec-{sha[:16]}-", suffix=".so")
    os.close(fd)
    shutil.copyfile(path, copy)
    return Path(copy), True


def load(path: str | Path, *, check: bool = True) -> CompiledModel:
    """Load OUT.so (with its OUT.so.json) on this machine's CPU.

    Args:
        check: verify the sha256 and that the library was built for this architecture.

    Raises:
        ArtifactError: missing files, hash mismatch, or a library for another architecture.
    """
    use_all_cores()
    path = Path(path)
    info = read_info(path)
    if check:
        check_library(path, info)
        _check_tvm_version(path, info)
    # check_library has just hashed the file against the sidecar's sha256.
    source, private = _dlopen_path(path, info.sha256 if check else file_sha256(path))
    try:
        with quiet_scope_warnings():
            vm = vm_runtime.LocalVM(source.resolve())
    except ImportError as err:
        raise ArtifactError(f"{path}: {err}") from err
    except Exception as err:  # tvm raises its own error types from C++
        raise ArtifactError(f"{path}: the TVM runtime cannot load it: {err}") from err
    finally:
        if private:
            source.unlink()  # the mapping outlives the file
    return CompiledModel(vm, "cpu", info, path)


def _check_tvm_version(path: Path, info: PackageInfo) -> None:
    """A library runs only on the TVM runtime it was built with: the VM's bytecode and the
    runtime's functions change between releases."""
    have = vm_runtime.runtime_versions().get("apache-tvm", "unknown")
    if have not in ("unknown", info.tvm_version):
        raise ArtifactError(f"{path} was built with TVM {info.tvm_version}, this runtime is "
                            f"TVM {have}: rebuild it, or run it where TVM {info.tvm_version} "
                            "is installed (an edgec bundle carries its own runtime)")


class RemoteModel(CompiledModel):
    """A model loaded on an RPC session: tensors are copied to and from the board."""

    def _tensor(self, value: np.ndarray) -> Any:
        import tvm.runtime

        return tvm.runtime.tensor(value, self.device)

    def _numpy(self, value: Any) -> np.ndarray:
        return value.numpy()

    def _function(self, func: Any) -> Any:
        import tvm.runtime

        return tvm.runtime.convert(func)


def load_remote(session: Any, path: str | Path, *, check: bool = True) -> CompiledModel:
    """Upload OUT.so to an RPC session (a board's TVM RPC server) and load it there.

    Raises:
        ArtifactError: as `load`, with the board's architecture taken from the library target.
    """
    from tvm.runtime.vm import VirtualMachine

    path = Path(path)
    info = read_info(path)
    if check:
        check_library(path, info, machine=info.arch)
    remote_name = f"edgec_{info.sha256[:16]}.so"
    session.upload(str(path), remote_name)
    library = session.load_module(remote_name)
    device = session.cpu()
    return RemoteModel(VirtualMachine(library, device), device, info, path)

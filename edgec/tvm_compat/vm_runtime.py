"""The Relax VM driven through libtvm_runtime.so's own functions and the tvm_ffi package, with
no `import tvm`: a board needs libtvm_runtime.so (3 MB) and libtvm_ffi.so, not the 240 MB
libtvm_compiler.so that `import tvm` maps.

The VM executable a library exports is a module with the functions the tvm package's
VirtualMachine wraps (vm_load_executable, vm_initialization, set_input, invoke_stateful,
get_output, get_output_arity, set_instrument); the timer is the runtime's
runtime.RPCTimeEvaluator, as tvm.runtime.Module.time_evaluator calls it. Checked against TVM
0.27; this file is uploaded to boards with the loader, so it imports only the standard
library until a library is loaded.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU = 1  # DLPack's kDLCPU
POOLED_ALLOCATOR = 2  # tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR
RUNTIME_ENV = "EDGEC_TVM_RUNTIME"  # path of a libtvm_runtime.so to use instead
# A bundle (edgec bundle) keeps the runtime in DIR/lib and this file in
# DIR/python/edgec/tvm_compat/, with the versions of what it packed beside the runtime.
_BUNDLE_LIB = Path(__file__).resolve().parents[3] / "lib"
VERSIONS_FILE = "versions.json"

_loaded: dict[str, Any] = {}


def runtime_library() -> Path:
    """libtvm_runtime.so: $EDGEC_TVM_RUNTIME, a bundle's lib/, or the installed tvm package's
    (found without importing it)."""
    if os.environ.get(RUNTIME_ENV):
        return Path(os.environ[RUNTIME_ENV])
    if (_BUNDLE_LIB / "libtvm_runtime.so").is_file():
        return _BUNDLE_LIB / "libtvm_runtime.so"
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("no TVM runtime: install apache-tvm, use an edgec bundle, or set "
                          f"{RUNTIME_ENV} to a libtvm_runtime.so")
    return Path(next(iter(spec.submodule_search_locations))) / "lib" / "libtvm_runtime.so"


def runtime_versions() -> dict[str, str]:
    """Versions of apache-tvm and apache-tvm-ffi this runtime comes from."""
    recorded = runtime_library().parent / VERSIONS_FILE
    if recorded.is_file():
        return json.loads(recorded.read_text())
    versions = {}
    for name in ("apache-tvm", "apache-tvm-ffi"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def ffi() -> Any:
    """The tvm_ffi module, with libtvm_runtime.so loaded (once) so that its functions are
    registered globally."""
    if "ffi" not in _loaded:
        # A bundle keeps tvm_ffi's libraries in DIR/lib, not in the package's lib/ where its
        # core looks: loaded first, they satisfy the core's DT_NEEDED by soname.
        for name in ("libtvm_ffi.so", "libtvm_ffi_testing.so"):
            if (_BUNDLE_LIB / name).is_file():
                _loaded[name] = ctypes.CDLL(str(_BUNDLE_LIB / name), mode=ctypes.RTLD_GLOBAL)
        import tvm_ffi  # loads libtvm_ffi.so, which libtvm_runtime.so links to by soname

        library = runtime_library()
        if not library.is_file():
            raise ImportError(f"the TVM runtime {library} does not exist")
        _loaded["runtime"] = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        _loaded["ffi"] = tvm_ffi
    return _loaded["ffi"]


# TVM's compiled code assumes its buffers start on 64 bytes (its allocator's alignment) and
# uses aligned vector loads on them: a numpy array (16-byte aligned) passed as it is crashed
# the FP16 MobileNetV2's first cast with SIGSEGV.
ALIGNMENT = 64


def tensor(array: Any) -> Any:
    """A TVM tensor of a C-contiguous numpy array: its own memory when that is 64-byte
    aligned, else an aligned copy (the tensor keeps either alive)."""
    import numpy as np

    if array.ctypes.data % ALIGNMENT:
        raw = np.empty(array.nbytes + ALIGNMENT, np.uint8)
        start = -raw.ctypes.data % ALIGNMENT
        aligned = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
        aligned[...] = array
        array = aligned
    return ffi().from_dlpack(array)


def to_numpy(value: Any) -> Any:
    import numpy as np

    return np.from_dlpack(value).copy()


def get_outputs(vm: Any, func: str) -> Any:
    """What `func` returned after vm.invoke_stateful(func), tuples nested as they come, for a
    LocalVM or a tvm.runtime.vm.VirtualMachine (a board's, over RPC). Not the latter's own
    get_outputs: its recursive inner function is a reference cycle holding the VM, and over
    RPC the VM holds its session, which the stock RPC server serves alone: a board's next
    session waited until the garbage collector ran or the first one timed out (40 s of a
    40 s session_timeout, emulated board)."""
    if isinstance(vm, LocalVM):
        return vm.get_outputs(func)
    return _fetch_outputs(vm._get_output_arity, vm._get_output, func, ())


def _fetch_outputs(arity_of: Any, output_of: Any, func: str, index: tuple) -> Any:
    arity = arity_of(func, *index)
    if arity == -1:
        return output_of(func, *index)
    return tuple(_fetch_outputs(arity_of, output_of, func, (*index, i)) for i in range(arity))


class LocalVM:
    """A library's Relax VM on this machine's CPU, with the tvm VirtualMachine's method names
    that edgec.runtime.CompiledModel calls."""

    def __init__(self, path: Path):
        module = ffi().load_module(str(path))
        self._module = module  # the library must outlive its VM
        self._vm = module["vm_load_executable"]()
        self._vm["vm_initialization"](CPU, 0, POOLED_ALLOCATOR)

    def __getitem__(self, name: str) -> Any:
        return self._vm[name]

    def set_input(self, func: str, *args: Any) -> None:
        self._vm["set_input"](func, *args)

    def invoke_stateful(self, func: str) -> None:
        self._vm["invoke_stateful"](func)

    def get_outputs(self, func: str) -> Any:
        return _fetch_outputs(self._vm["get_output_arity"], self._vm["get_output"], func, ())

    def set_instrument(self, instrument: Any) -> None:
        self._vm["set_instrument"](instrument)

    def time_evaluator(self, func: str, _device: Any = None, number: int = 1,
                       repeat: int = 1) -> Any:
        """A function of the VM function's arguments returning `repeat` per-call seconds
        (BenchmarkResult-like: `.results`), as the tvm VirtualMachine's does."""
        evaluate = ffi().get_global_func("runtime.RPCTimeEvaluator")(
            self._vm, func, CPU, 0, number, repeat, 0, 100, 0, 1, 0, "")

        def timer(*args: Any) -> Timings:
            return Timings(list(struct.unpack("@" + "d" * repeat, evaluate(*args))))

        return timer


@dataclass(frozen=True)
class Timings:
    """Per-call seconds, as tvm's BenchmarkResult.results."""

    results: list[float]

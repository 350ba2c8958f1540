"""Runs one counted inference of a compiled library inside the emulator (qemu user mode).

usage: guest_runner.py LIBRARY INPUTS.npz RESULT.json [--warm]

Runs on the emulated board's Python, so it imports nothing from edgec and not even the `tvm`
package: that package pulls in the compiler's Python side and takes ~20 s to import under
qemu. It talks to the TVM runtime through tvm_ffi and libtvm_runtime.so, which is all a
Relax VM executable needs.

One inference runs between the marker syscalls the counting plugin watches, with the
Relax VM's instrument hook recording each call's tensor arguments (address, bytes); the
hook's own Python runs between PAUSE and RESUME markers, so it is not counted. With
--warm, that instrumented inference runs first, uncounted, and a second plain one is
counted: twice the emulation time for a steady-state count (allocator pools filled,
functions looked up) of the runtime's part; the compiled code's counts are the same.
"""

import ctypes
import json
import os
import sys

# ml_dtypes (optional for tvm_ffi) takes ~12 s to import under qemu and torch far longer;
# a model compiled by edgec needs neither. None in sys.modules makes their import fail.
sys.modules["ml_dtypes"] = None
sys.modules["torch"] = None

import numpy as np  # noqa: E402
import tvm_ffi  # noqa: E402

MARK_START, MARK_STOP = 0x4544474543000001, 0x4544474543000002  # as in plugin.c
MARK_PAUSE, MARK_RESUME = 0x4544474543000003, 0x4544474543000004
KDL_CPU, POOLED_ALLOCATOR = 1, 2
SKIP = ("vm.builtin.", "relax.vm.")


def mark(value):
    """lseek(-1, value, 0): fails with EBADF, but the plugin sees the magic offset."""
    try:
        os.lseek(-1, value, 0)
    except OSError:
        pass


def tensors(args):
    """[data address, bytes] of each tensor argument of one call."""
    found = []
    for arg in args:
        if hasattr(arg, "shape") and hasattr(arg, "data_ptr"):
            count = 1
            for dim in arg.shape:
                count *= int(dim)
            found.append([int(arg.data_ptr()), count * np.dtype(str(arg.dtype)).itemsize])
    return found


def main():
    library, inputs_path, result_path = sys.argv[1:4]
    warm = "--warm" in sys.argv[4:]
    runtime = os.path.join(os.path.dirname(os.path.dirname(tvm_ffi.__file__)),
                           "tvm", "lib", "libtvm_runtime.so")
    ctypes.CDLL(runtime, ctypes.RTLD_GLOBAL)  # registers the Relax VM executable loader
    vm = tvm_ffi.load_module(library)["vm_load_executable"]()
    vm["vm_initialization"](KDL_CPU, 0, POOLED_ALLOCATOR)
    with np.load(inputs_path) as data:
        arrays = [np.ascontiguousarray(data[name]) for name in data.files]
    args = [tvm_ffi.from_dlpack(array) for array in arrays]

    calls = []  # [function, [[address, bytes], ...]] per call, in order

    def instrument(func, symbol, before, ret, *fargs):
        mark(MARK_PAUSE)
        if before and not str(symbol).startswith(SKIP):
            calls.append([str(symbol), tensors(fargs)])
        mark(MARK_RESUME)
        return 0

    vm["set_instrument"](instrument)
    if not warm:
        mark(MARK_START)
    vm["main"](*args)
    vm["set_instrument"](None)
    if warm:
        mark(MARK_START)
        vm["main"](*args)
    mark(MARK_STOP)

    name = os.path.basename(os.path.realpath(library))
    with open("/proc/self/maps") as maps:
        mappings = [line.split() for line in maps]
    ours = [f for f in mappings if len(f) >= 6 and f[5].endswith(name)]
    base = min(int(f[0].split("-")[0], 16) for f in ours) if ours else None
    # Every file's mappings, to tell runtime overhead apart by library. All of them, not
    # just executable ones: qemu 7.2 shows the guest's code pages without the x flag.
    code = [[int(a, 16), int(b, 16), f[5]] for f in mappings if len(f) >= 6
            for a, b in [f[0].split("-")]]
    with open(result_path, "w") as out:
        json.dump({"base": base, "calls": calls, "inputs": tensors(args), "code": code}, out)


if __name__ == "__main__":
    main()

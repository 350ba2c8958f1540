"""Runs compiled kernels one after another inside the emulator, each counted on its own.

usage: guest_kernels.py JOBS.json RESULTS.jsonl

JOBS.json: [{"library": path, "args": [[shape, dtype], ...]}, ...], each library a
MetaSchedule candidate (one PrimFunc, exported as "main"). For each: load it, make its
arguments (random, 64-byte aligned, as TVM allocates them), call it once uncounted (lazy
symbol binding, first-touch page faults), then once between the START and STOP markers;
the counting plugin (each=1) writes that segment's counts to its own file. One line per
kernel goes to RESULTS.jsonl as soon as it is done, with the guest address ranges its
library is mapped at (to tell its blocks from the runtime's), or the error it raised; a
kernel that crashes the process ends the file there, and the host starts the rest again.

Like guest_runner.py it imports only tvm_ffi and numpy: `tvm` takes ~20 s under qemu.
"""

import ctypes
import json
import os
import sys

sys.modules["ml_dtypes"] = None  # see guest_runner.py: slow to import, unused
sys.modules["torch"] = None

import numpy as np  # noqa: E402
import tvm_ffi  # noqa: E402

MARK_START, MARK_STOP = 0x4544474543000001, 0x4544474543000002  # as in plugin.c
ALIGN = 64


def mark(value):
    try:
        os.lseek(-1, value, 0)
    except OSError:
        pass


def aligned(shape, dtype, rng):
    """A random array of `shape` whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape)) if shape else 1
    raw = np.empty(count * dtype.itemsize + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    array = raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)
    if dtype.kind == "f":
        array[...] = rng.standard_normal(shape)
    else:
        array[...] = rng.integers(0, 8, shape)
    return array


def mapped(library):
    name = os.path.basename(os.path.realpath(library))
    with open("/proc/self/maps") as maps:
        fields = [line.split() for line in maps]
    return [[int(a, 16), int(b, 16)] for f in fields if len(f) >= 6 and f[5].endswith(name)
            for a, b in [f[0].split("-")]]


def main():
    jobs_path, results_path = sys.argv[1:3]
    with open(jobs_path) as handle:
        jobs = json.load(handle)
    # The kernels call into the TVM runtime (parallel launch, workspace allocation).
    runtime = os.path.join(os.path.dirname(os.path.dirname(tvm_ffi.__file__)),
                           "tvm", "lib", "libtvm_runtime.so")
    ctypes.CDLL(runtime, ctypes.RTLD_GLOBAL)
    rng = np.random.default_rng(0)
    with open(results_path, "a") as out:
        for job in jobs:
            error = None
            try:
                func = tvm_ffi.load_module(job["library"])["main"]
                arrays = [aligned(tuple(shape), dtype, rng) for shape, dtype in job["args"]]
                args = [tvm_ffi.from_dlpack(a) for a in arrays]
                func(*args)
                mark(MARK_START)
                func(*args)
            except Exception as err:  # noqa: BLE001  (reported per kernel, not fatal)
                error = f"{type(err).__name__}: {err}"
            mark(MARK_STOP)  # one segment per job, failed or not: numbers stay in step
            line = {"library": job["library"]}
            line.update({"error": error} if error else {"ranges": mapped(job["library"])})
            out.write(json.dumps(line) + "\n")
            out.flush()


if __name__ == "__main__":
    main()

"""guarded_run.py LIBRARY INPUT.npy OUTPUTS.npy: run an edgec library twice, on an input tensor
whose memory starts, then ends, at an inaccessible page, so a kernel reading outside the tensor
segfaults instead of reading the neighbouring allocation. A separate process: a segfault
must fail the test, not take the pytest worker down with it."""

import ctypes
import mmap
import sys

import numpy as np
import tvm

from edgec import runtime


def guarded(array: np.ndarray, at_end: bool) -> tuple[np.ndarray, mmap.mmap]:
    """A copy of `array` between two PROT_NONE pages, starting right after the first (or,
    `at_end`, ending right before the second; its size must be whole 64-byte lines, as TVM
    wants tensors 64-byte aligned)."""
    page = mmap.PAGESIZE
    assert array.nbytes % 64 == 0, "the input must be whole 64-byte lines"
    pages = -(-array.nbytes // page) * page
    memory = mmap.mmap(-1, pages + 2 * page)
    offset = page + (pages - array.nbytes if at_end else 0)
    copy = np.frombuffer(memory, array.dtype, array.size, offset=offset).reshape(array.shape)
    copy[...] = array
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    for address in (start, start + page + pages):
        assert libc.mprotect(address, page, 0) == 0  # PROT_NONE
    return copy, memory


def main() -> None:
    library, source, target = sys.argv[1:4]
    module = runtime.load(library, check=False)
    outputs = []
    for at_end in (False, True):
        data, _memory = guarded(np.load(source), at_end)
        out = module._vm["main"](tvm.runtime.from_dlpack(data))
        out = out[0] if isinstance(out, (list, tuple)) or not hasattr(out, "numpy") else out
        outputs.append(out.numpy())
    np.save(target, np.stack(outputs))


if __name__ == "__main__":
    main()

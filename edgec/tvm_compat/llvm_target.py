"""Asking TVM's LLVM whether a target's mcpu and mattr mean anything.

An unknown -mcpu makes LLVM fall back to a generic CPU and an unknown +feature is ignored,
each with a warning per compiled function (90 lines for a MobileNet) and code that is
slower than asked for, with exit 0. edgec checks once, before compiling, and refuses.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any


def invalid_settings(tvm_table: dict[str, Any]) -> list[str]:
    """What LLVM does not recognise in a [tvm] table: "mcpu X" and "mattr +Y" entries."""
    import tvm
    from tvm.target import codegen

    bad = []
    with _silenced_stderr():  # LLVM prints its own warnings for each query
        target = tvm.target.Target(dict(tvm_table))
        mcpu = tvm_table.get("mcpu")
        if mcpu and mcpu not in codegen.llvm_get_cpu_archlist(target):
            bad.append(f"mcpu {mcpu}")
        features = set(codegen.llvm_get_cpu_features(target))
        for attr in tvm_table.get("mattr", []):
            if attr.startswith("+") and attr[1:] not in features:
                bad.append(f"mattr {attr}")
    return bad


class _silenced_stderr:  # noqa: N801 (a context manager used like a function)
    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._sink = tempfile.TemporaryFile()
        os.dup2(self._sink.fileno(), 2)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._sink.close()

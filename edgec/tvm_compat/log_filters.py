"""Filtering of TVM's native log noise (stdlib only, so boards can use it too).

TVM 0.27's VM executable writes "Scope Saving:/Scope Loaded:" at WARNING level for every
constant when a library is exported or loaded: hundreds of lines per model that bury real
messages. This filters exactly those lines from the C++ side's stderr and keeps the rest.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

_NOISE = re.compile(rb"^\[[\d:]+\] \S+executable\.cc:\d+: Warning: Scope (Saving|Loaded):.*$")


@contextlib.contextmanager
def filtered_stderr(keep) -> Iterator[None]:
    """Redirect fd 2 (C++ writes there too) to a file for the duration, then replay the
    lines `keep(line: bytes)` accepts."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if keep(line)]
            if kept:
                os.write(2, b"".join(kept))


def quiet_scope_warnings():
    """All of stderr but the "Scope Saving/Loaded" noise lines."""
    return filtered_stderr(lambda line: not _NOISE.match(line.rstrip(b"\n")))

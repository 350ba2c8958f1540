"""Filtering of TVM's native log noise (stdlib only, so boards can use it too).

TVM 0.27's VM executable writes "Scope Saving:/Scope Loaded:" at WARNING level for every
constant when a library is exported or loaded: hundreds of lines per model that bury real
messages. This filters exactly those lines from the C++ side's stderr and keeps the rest.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator

_NOISE = re.compile(rb"^\[[\d:]+\] \S+executable\.cc:\d+: Warning: Scope (Saving|Loaded):.*$")


@contextlib.contextmanager
def filtered_stderr(keep) -> Iterator[None]:
    """Send fd 2 (C++ writes there too) through a filter for the duration: the lines
    `keep(line: bytes)` accepts reach the real stderr, the others are dropped.

    The filter is a forked process reading a pipe, not a file replayed at the end or a
    thread: when LLVM or TVM aborts the process inside the block ("LLVM ERROR: Cannot
    select ..."), the forwarder outlives it and still prints the message, which the file
    and the thread both lost.
    """
    if not hasattr(os, "fork"):
        with _replayed_stderr(keep):
            yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the forwarder: only syscalls and bytes, then _exit
        try:
            os.close(write_end)
            os.dup2(saved, 2)
            _forward(read_end, keep)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # this process's last write end closes: the forwarder reads EOF
        os.close(saved)
        _reap(child)


def _forward(read_end: int, keep) -> None:
    pending = b""
    while chunk := os.read(read_end, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = [line + b"\n" for line in lines if keep(line + b"\n")]
        if kept:
            os.write(2, b"".join(kept))
    if pending and keep(pending):
        os.write(2, pending)


def _reap(child: int, seconds: float = 5.0) -> None:
    """Wait for the forwarder; a process started inside the block that still holds the
    pipe would keep it reading, so after `seconds` it is stopped (it forwards as it reads,
    so nothing already written is lost)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitpid(child, os.WNOHANG)[0]:
            return
        time.sleep(0.002)
    os.kill(child, signal.SIGTERM)
    os.waitpid(child, 0)


@contextlib.contextmanager
def _replayed_stderr(keep) -> Iterator[None]:
    """Without fork: fd 2 to a file for the duration, then replay the kept lines."""
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

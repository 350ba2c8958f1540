"""An emulated aarch64 board: Debian's arm64 Python with TVM wheels, serving TVM RPC under qemu.

The board's root is prepared by edgec.boards.emulator_root; this module runs and stops it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, NoReturn, Self

from edgec.boards.emulator_root import (  # noqa: F401  (check_host, prepare: part of this API)
    DEFAULT_CACHE,
    board_command,
    board_env,
    check_host,
    last_lines,
    prepare,
    register_binfmt,
)
from edgec.errors import ConfigError, RemoteError


def _live_group_members(pgid: int) -> list[int]:
    """Pids of the non-zombie processes in a process group, read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                pids.append(int(stat.parent.name))
    return pids


class EmulatedBoard:
    """The stock TVM RPC server on an emulated aarch64 Python, listening on loopback only.

    `with EmulatedBoard() as board: remote = board.connect()`. start() runs `prepare(cache)`
    first, which returns at once when the cache is ready. With `tracker=(host, port)` and
    `key`, the server registers with that TVM RPC tracker and is reached only through it.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", cache: Path = DEFAULT_CACHE,
                 tracker: tuple[str, int] | None = None, key: str = ""):
        # TVM RPC runs whatever a peer sends, unauthenticated: never offer it beyond this host.
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name: only "localhost" is known to stay on this machine
            loopback = False
        if not loopback:
            raise ConfigError(f"EmulatedBoard host {host!r} is not a loopback address")
        if tracker and not key:
            raise ConfigError("an EmulatedBoard registered with a tracker needs a key")
        self.host, self.port, self.cache = host, port, Path(cache).expanduser()
        self.tracker, self.key = tracker, key
        self.log_path = self.cache / "logs" / "rpc-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id (and process group id) of the running server, None when stopped."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 180.0) -> Self:
        """Launch the RPC server and wait until a real RPC session to it works.

        Raises:
            MissingDependencyError: the host cannot emulate aarch64 (see `check_host`).
            RemoteError: the server exited, or no session opened within `timeout` seconds.
        """
        if self._proc is not None:
            return self
        check_host()
        register_binfmt()
        prepare(self.cache)
        if not self.port:
            with socket.socket() as probe:  # a free port; the server binds it right after
                probe.bind((self.host, 0))
                self.port = probe.getsockname()[1]
        self.log_path = self.cache / "logs" / f"rpc-server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = ["--host", self.host, "--port", str(self.port), "--port-end", str(self.port + 1)]
        if self.tracker:
            args += ["--tracker", f"{self.tracker[0]}:{self.tracker[1]}", "--key", self.key]
        cmd = board_command(self.cache, "-m", "tvm.exec.rpc_server", *args)
        with open(self.log_path, "wb") as log:
            # A session of its own, so that stop() ends the server, its worker and its forks.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=board_env(self.cache),
                cwd=self.cache,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline, last_err = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                self._fail(f"the emulated board's RPC server exited with code {code}")
            try:
                if self.tracker and not self._registered():
                    raise RuntimeError(f"not yet registered at the tracker under {self.key}")
                session = self._open(60)
                # Asking the board about its CPU round-trips through the session process.
                alive = session.cpu(0).exist
                # The server serves one session at a time: close this one now. (Keeping only
                # the message of errors avoids a traceback cycle that would keep it open.)
                del session
                if alive:
                    return
            except Exception as err:  # TVM raises RuntimeError subclasses
                last_err = (str(err).strip().splitlines() or [repr(err)])[-1]
            time.sleep(1.0)
        self._fail(f"no RPC session to {self.host}:{self.port} within {timeout:g}s ({last_err})")

    def _fail(self, what: str) -> NoReturn:
        self.stop()
        try:
            tail = last_lines(self.log_path.read_text(errors="replace")) or "(empty)"
        except OSError:
            tail = "(no log)"
        raise RemoteError(f"{what}; last lines of {self.log_path}:\n{tail}")

    def _registered(self) -> bool:
        """Whether the tracker lists this server (its port) under the key: with several
        boards under one key, a session the tracker hands out may be another board's."""
        import tvm.rpc

        servers = tvm.rpc.connect_tracker(*self.tracker).summary().get("server_info", [])
        return any(info.get("key") == f"server:{self.key}"
                   and int((info.get("addr") or [0, 0])[1]) == self.port for info in servers)

    def _open(self, session_timeout: float) -> Any:
        import tvm.rpc

        if not self.tracker:
            return tvm.rpc.connect(self.host, self.port, session_timeout=session_timeout)
        tracker = tvm.rpc.connect_tracker(*self.tracker)
        # A request for a key nobody serves yet waits forever: ask only once it is registered.
        if not tracker.summary()["queue_info"].get(self.key, {}).get("free"):
            raise RuntimeError(f"key {self.key} not (yet) free at the tracker")
        return tracker.request(self.key, session_timeout=session_timeout, max_retry=1)

    def connect(self, session_timeout: float = 0) -> Any:
        """Open a `tvm.rpc.RPCSession` to the board (through the tracker if it has one); a
        session_timeout of 0 means no limit.

        Raises:
            RemoteError: the board is not running.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise RemoteError("the emulated board is not running; call start() first")
        return self._open(session_timeout)

    def stop(self) -> None:
        """End the server and every process it started (its process group); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        # The popen worker and forked sessions share the group and can outlive the leader.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10  # SIGKILL is asynchronous: wait until it took effect
        while _live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""Sessions with a board's TVM RPC server: direct (--rpc), via a tracker, or started over SSH.

    with open_board(endpoint) as board:          # open_board(None) is this machine
        model = board.load("OUT.so")             # a runtime.CompiledModel running there

Leaving the block closes the session; with --ssh it also stops the server it started on the
board and checks that nothing of it is left running. RPC failures inside the block (a server
that dies, a session that times out) become one-line RemoteErrors.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec import runtime
from edgec.boards import probe
from edgec.boards import ssh as sshmod
from edgec.boards.rpc_over_ssh import BoardServer
from edgec.errors import ArtifactError, ConfigError, EdgecError, RemoteError
from edgec.package import elf_arch, read_info

Progress = Callable[[str], None]

NO_REMOTE_PROFILE = (
    "--profile needs the model on the machine that times it: TVM 0.27 has no profiling VM, "
    "and the VM's per-call hook cannot call back across RPC; use --ssh (edgec then profiles "
    "on the board itself) or run `edgec bench OUT.so --profile` on the board"
)


def parse_endpoint(text: str, option: str) -> tuple[str, int]:
    """HOST:PORT as (host, port).

    Raises:
        ConfigError: not HOST:PORT.
    """
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'{option} "{text}" is not HOST:PORT')
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class BoardEndpoint:
    """How to reach a board's TVM RPC server: exactly one of rpc, tracker (+ key) or ssh."""

    rpc: tuple[str, int] | None = None
    tracker: tuple[str, int] | None = None
    key: str | None = None
    ssh: sshmod.SshOptions | None = None
    remote_python: str = "python3"  # the board's Python, with --ssh
    session_timeout: float = 600.0  # the server ends a session older than this (seconds)

    def __post_init__(self) -> None:
        given = [name for name in ("rpc", "tracker", "ssh") if getattr(self, name)]
        if len(given) != 1:
            raise ConfigError("give exactly one of --rpc, --tracker or --ssh "
                              f"(got {', '.join('--' + g for g in given) or 'none'})")
        if bool(self.tracker) != bool(self.key):
            raise ConfigError("--tracker and --key go together (the key names the board kind)")

    @property
    def where(self) -> str:
        if self.rpc:
            return f"rpc {self.rpc[0]}:{self.rpc[1]}"
        if self.tracker:
            return f"tracker {self.tracker[0]}:{self.tracker[1]} key {self.key}"
        return f"{self.ssh.where} (RPC over SSH)"


class LocalBoard:
    """This machine, with the same interface as a remote board."""

    where = "local"

    def load(self, library: str | Path) -> runtime.CompiledModel:
        return runtime.load(library)

    def profile(self, model: runtime.CompiledModel, inputs: Mapping[str, np.ndarray],
                runs: int = 10) -> dict[str, float]:
        return model.profile(inputs, runs=runs)


class RemoteBoard:
    """A board behind an open RPC session (and, with --ssh, an SSH connection)."""

    def __init__(self, session: Any, where: str, info: probe.BoardInfo | None = None,
                 ssh_client: Any = None):
        self.session, self.where, self.info, self._ssh = session, where, info, ssh_client

    def arch(self) -> str | None:
        """The board's CPU architecture: from uname over SSH, else from the board's LLVM."""
        if self.info is not None:
            return self.info.machine
        try:  # boards with the full TVM wheel (not a runtime-only build) register this
            triple = self.session.get_function("tvm.codegen.llvm.GetProcessTriple")()
        except (AttributeError, RuntimeError):
            return None
        return probe.normalize_arch(str(triple).split("-")[0])

    def load(self, library: str | Path) -> runtime.CompiledModel:
        """Check the library against this client and the board, upload it and load it there.

        Raises:
            ArtifactError: compiled by another TVM than this machine's, or for another CPU.
        """
        info = read_info(library)
        local = probe.local_versions()["apache-tvm"]
        if info.tvm_version != local:
            raise ArtifactError(
                f"{library} was compiled with TVM {info.tvm_version} but this machine's TVM RPC "
                f"client is {local}; both ends and the library need one version: recompile it"
            )
        probe.check_arch(library, elf_arch(library), self.arch(), self.where)
        return runtime.load_remote(self.session, library)

    def profile(self, model: runtime.CompiledModel, inputs: Mapping[str, np.ndarray],
                runs: int = 10) -> dict[str, float]:
        """Per-function times measured on the board by edgec's loader (--ssh boards only).

        The board regenerates the same seeded inputs that edgec.check.random_inputs makes.
        """
        if self._ssh is None or self.info is None:
            raise ConfigError(NO_REMOTE_PROFILE)
        return probe.profile_on_board(self._ssh, self.info, model.path, runs)


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _check_reachable(host: str, port: int, what: str, timeout: float = 5.0) -> None:
    """Fail fast, with a bounded wait, where TVM's own connect would block or retry for long."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise RemoteError(f"cannot reach the {what} at {host}:{port} ({reason}): check that it "
                          "runs and listens on that address") from err


def _rpc_session(endpoint: BoardEndpoint) -> Any:
    import tvm.rpc

    if endpoint.rpc:
        host, port = endpoint.rpc
        _check_reachable(host, port, "TVM RPC server")
        try:
            return tvm.rpc.connect(host, port, session_timeout=endpoint.session_timeout)
        except RuntimeError as err:
            raise RemoteError(f"no RPC session with {host}:{port}: {_last_line(err)}") from err
    host, port = endpoint.tracker
    _check_reachable(host, port, "TVM RPC tracker")
    try:
        tracker = tvm.rpc.connect_tracker(host, port)
        queues = tracker.summary()["queue_info"]
        if endpoint.key not in queues:
            known = ", ".join(sorted(queues)) or "none"
            raise RemoteError(f"no board with key {endpoint.key!r} at tracker {host}:{port} "
                              f"(keys there: {known}); start its rpc_server with --key")
        # A busy board is waited for, but not forever: the tracker socket gets a timeout.
        tracker._sock.settimeout(endpoint.session_timeout)  # private: TVM offers no setter
        return tracker.request(endpoint.key, session_timeout=endpoint.session_timeout,
                               max_retry=1)
    except (RuntimeError, OSError) as err:
        raise RemoteError(f"tracker {host}:{port} gave no session for key {endpoint.key}: "
                          f"{_last_line(err)}") from err


@contextlib.contextmanager
def _ssh_board(endpoint: BoardEndpoint, say: Progress) -> Iterator[RemoteBoard]:
    """Start the RPC server on the board over SSH, tunnel to it, and stop it afterwards."""
    options = endpoint.ssh
    client, secrets = sshmod.login(options)
    try:
        info = probe.probe(client, endpoint.remote_python, options.where)
        probe.require_ready(info, probe.local_versions(), rpc=True)
        server = BoardServer(client, options, secrets, endpoint.remote_python)
        try:
            say(f"starting the TVM RPC server on {options.where} ({endpoint.remote_python})")
            server.start()
            session = server.connect(endpoint.session_timeout)
            yield RemoteBoard(session, endpoint.where, info, client)
        finally:
            server.stop()
    finally:
        client.close()


@contextlib.contextmanager
def open_board(endpoint: BoardEndpoint | None, *, profile: bool = False,
               progress: Progress | None = None) -> Iterator[LocalBoard | RemoteBoard]:
    """Open this machine (endpoint None) or a board, and close it when the block ends.

    Raises:
        ConfigError: `profile` with an --rpc or --tracker board.
        RemoteError: no session, a session that broke, or server processes left on the board.
    """
    say = progress or (lambda _line: None)
    if endpoint is None:
        yield LocalBoard()
        return
    if profile and endpoint.ssh is None:
        raise ConfigError(NO_REMOTE_PROFILE)
    with contextlib.ExitStack() as stack:
        if endpoint.ssh:
            remote = stack.enter_context(_ssh_board(endpoint, say))
        else:
            say(f"connecting to {endpoint.where}")
            remote = RemoteBoard(_rpc_session(endpoint), endpoint.where)
        started = time.monotonic()
        try:
            yield remote
        except EdgecError:
            raise
        except (RuntimeError, OSError) as err:  # TVM's RPC errors are RuntimeError subclasses
            raise RemoteError(_session_failure(err, remote.where, endpoint,
                                               time.monotonic() - started)) from err
        finally:
            remote.session = None  # the last reference: closes the RPC connection


def _session_failure(err: BaseException, where: str, endpoint: BoardEndpoint,
                     seconds: float) -> str:
    import tvm.error

    if isinstance(err, tvm.error.RPCSessionTimeoutError):
        return (f"the RPC session with {where} reached its {endpoint.session_timeout:g}s limit "
                "and the board ended it: use fewer --runs")
    return (f"the RPC session with {where} broke after {seconds:.1f}s ({_last_line(err)}): "
            "the board's RPC server stopped or crashed; check it and run again")

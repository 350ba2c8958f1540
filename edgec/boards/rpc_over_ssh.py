"""The stock TVM RPC server run on a board over SSH, reached through an SSH tunnel, then stopped.

The server binds the board's loopback only: TVM RPC runs whatever a peer sends, so it is
reached solely through the SSH connection (a direct-tcpip forward). A small supervisor script
starts it in a process group of its own and waits on its stdin, the SSH channel: when edgec
closes that channel, or the connection drops because edgec died, the supervisor ends the
whole group (server, its popen worker and forked sessions) and reports what is left.
"""

from __future__ import annotations

import collections
import shlex
import threading
import time
from typing import Any

from edgec.boards import ssh
from edgec.boards.ssh_tunnel import Tunnel
from edgec.errors import RemoteError

# Lists the live members of process group `group` from /proc (stdlib, Linux boards).
_MEMBERS = r"""
import os, signal, sys, time
def members(group):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(entry))
    return found
def end_group(group, grace=5.0):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members(group):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while members(group) and time.time() < deadline:
            time.sleep(0.1)
    return len(members(group))
"""

_SUPERVISOR = _MEMBERS + r"""
import select, socket, subprocess
try:
    os.setsid()
except OSError:
    pass  # already leads a process group (sshd made it a session leader)
group = os.getpgid(0)
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
# TVM halves the core count on x86 (it assumes SMT siblings): use them all unless told.
env = dict(os.environ)
if not env.get("TVM_NUM_THREADS") and hasattr(os, "sched_getaffinity"):
    env["TVM_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                           "--port", str(port), "--port-end", str(port + 1)],
                          stdin=subprocess.DEVNULL, env=env)
print("edgec-rpc serving", group, port, flush=True)
while server.poll() is None:  # until edgec closes our stdin, the connection drops, or it dies
    if select.select([0], [], [], 0.5)[0] and not os.read(0, 4096):
        break
code = server.poll()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
left = end_group(group)
server.poll()
print("edgec-rpc stopped", "asked" if code is None else f"server-exited:{code}", "left", left,
      flush=True)
sys.exit(1 if left else 0)
"""

_CLEANUP = _MEMBERS + r"""
print(end_group(int(sys.argv[1])))
"""


class BoardServer:
    """One `python -m tvm.exec.rpc_server` on the board, for the life of one SSH connection."""

    def __init__(self, client: Any, options: ssh.SshOptions, secrets: dict[str, str],
                 python: str):
        self._client, self._options, self._secrets = client, options, secrets
        self._python, self.where = python, options.where
        self.output: collections.deque[str] = collections.deque(maxlen=40)
        self.group: int | None = None
        self.port: int | None = None
        self._started = threading.Event()
        self._stopped_line: str | None = None
        self._channel: Any = None
        self._reader: threading.Thread | None = None
        self._forward: Tunnel | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Launch the supervisor and learn the server's process group and port.

        Raises:
            RemoteError: the supervisor did not report within `timeout` seconds.
        """
        channel = self._client.get_transport().open_session(timeout=10)
        channel.set_combine_stderr(True)
        channel.exec_command(f"{ssh.quote(self._python)} -u -c {shlex.quote(_SUPERVISOR)}")
        self._channel = channel
        self._reader = threading.Thread(target=self._read, daemon=True, name="edgec-board-out")
        self._reader.start()
        if not self._started.wait(timeout):
            raise RemoteError(f"{self.where}: the RPC server did not start within {timeout:g}s: "
                              f"{self.tail()}")

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                data = self._channel.recv(1 << 14)
            except OSError:
                break
            if not data:
                break
            *lines, buffer = (buffer + data).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip()
                self.output.append(line)
                if line.startswith("edgec-rpc serving "):
                    self.group, self.port = (int(v) for v in line.split()[2:4])
                    self._started.set()
                elif line.startswith("edgec-rpc stopped "):
                    self._stopped_line = line
        self._started.set()  # unblock start() when the supervisor died before reporting

    def tail(self) -> str:
        """The last line the server or its supervisor printed."""
        lines = [line for line in self.output if line.strip()]
        return lines[-1] if lines else "no output"

    @property
    def alive(self) -> bool:
        return self._channel is not None and not self._channel.exit_status_ready()

    def connect(self, session_timeout: float, timeout: float = 120.0) -> Any:
        """Open an RPC session through a local port forwarded to the server's loopback port.

        Waits while the board imports TVM (seconds on a Pi, ~25 s emulated).

        Raises:
            RemoteError: the server exited, or gave no session within `timeout` seconds.
        """
        import tvm.rpc

        if self.port is None:
            raise RemoteError(f"{self.where}: the RPC server did not start: {self.tail()}")
        self._forward = Tunnel(self._options, self._secrets, self.port)
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            if not self.alive:
                raise RemoteError(f"the TVM RPC server on {self.where} exited: {self.tail()}")
            try:
                session = tvm.rpc.connect("127.0.0.1", self._forward.port,
                                          session_timeout=session_timeout)
            except RuntimeError as err:  # not listening yet: the tunnel is refused
                last = (str(err).strip().splitlines() or [""])[-1]
                time.sleep(0.5)
                continue
            self._forward.stop_accepting()  # one session: nobody else gets in through us
            return session
        raise RemoteError(f"the TVM RPC server on {self.where} gave no session within "
                          f"{timeout:g}s ({last}); its last output: {self.tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """Close the tunnel, make the supervisor end the server's group, and check the board.

        Raises:
            RemoteError: processes of the server are still running on the board.
        """
        if self._forward is not None:
            self._forward.close()
        if self._channel is None:
            return
        try:
            self._channel.shutdown_write()  # EOF on the supervisor's stdin: "stop"
        except (OSError, EOFError):
            pass
        deadline = time.monotonic() + timeout
        while not self._channel.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._reader is not None:
            self._reader.join(timeout=2)
        self._channel.close()
        stopped = self._stopped_line
        if stopped and stopped.endswith(" left 0"):
            return
        left = self._end_group() if self.group is not None else 0
        if left:
            raise RemoteError(f"{left} processes of the RPC server (process group {self.group}) "
                              f"still run on {self.where}: end them with kill -9 -- -{self.group}")

    def _end_group(self) -> int:
        """The supervisor did not report a clean stop: end the group from a new command."""
        command = f"{ssh.quote(self._python)} -c {shlex.quote(_CLEANUP)} {self.group}"
        output = ssh.check_output(self._client, command, timeout=30, where=self.where)
        return int(output.split()[-1])

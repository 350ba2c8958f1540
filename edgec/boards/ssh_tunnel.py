"""A port on this machine's loopback tunnelled over SSH to a port on the board's loopback.

The tunnel runs in a helper process (`python -m edgec.boards.ssh_tunnel`) with its own SSH
connection.
Why not a thread: TVM's RPC client holds the GIL while it waits for some replies (loading a
VM executable, for one), which freezes every Python thread of its process, paramiko's too, so
an in-process forwarder deadlocks the session it carries.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
from typing import Any

from edgec.boards import ssh
from edgec.errors import EdgecError, RemoteError


class Tunnel:
    """Start the helper; `port` is the local end. close() (or this process dying) ends it."""

    def __init__(self, options: ssh.SshOptions, secrets: dict[str, str], remote_port: int,
                 timeout: float = 30.0):
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "edgec.boards.ssh_tunnel"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        config = {"target": options.target, "identity": options.identity,
                  "known_hosts": options.known_hosts, "timeout": options.timeout,
                  "secrets": secrets, "remote_port": remote_port}
        self._send(json.dumps(config))
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            reply = {"error": f"the SSH tunnel helper gave no port within {timeout:g}s: "
                              f"{line.strip() or 'no output'}"}
        if "error" in reply:
            self.close()
            raise RemoteError(reply["error"])
        self.port: int = reply["port"]

    def _send(self, line: str) -> None:
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the helper is gone; close() reaps it

    def stop_accepting(self) -> None:
        """Refuse new connections; open ones go on (so no other local user gets in)."""
        self._send("close-listener")

    def close(self) -> None:
        """End the helper: EOF on its stdin, then SIGKILL if it lingers."""
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()


class PortForward:
    """Listens on 127.0.0.1:<free port>; each connection becomes a direct-tcpip channel to
    (host, port) as the board sees it, pumped by two threads (one per direction)."""

    def __init__(self, transport: Any, host: str, port: int, timeout: float = 10.0):
        self._transport, self._target, self._timeout = transport, (host, port), timeout
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port: int = self._listener.getsockname()[1]
        self._accepting = True
        self._open: list[tuple[socket.socket, Any]] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def stop_accepting(self) -> None:
        self._accepting = False

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError:  # the listener was closed
                return
            if not self._accepting:
                sock.close()
                continue
            try:
                channel = self._transport.open_channel("direct-tcpip", self._target, peer,
                                                       timeout=self._timeout)
            except Exception:  # nothing listens there yet: paramiko's ChannelException & co.
                sock.close()
                continue
            self._open.append((sock, channel))
            for source, sink in ((sock.recv, channel.sendall), (channel.recv, sock.sendall)):
                threading.Thread(target=self._pump, args=(source, sink, sock, channel),
                                 daemon=True).start()

    @staticmethod
    def _pump(source: Any, sink: Any, sock: socket.socket, channel: Any) -> None:
        try:
            while data := source(1 << 16):
                sink(data)
        except (OSError, EOFError):
            pass
        # Either end closing ends the connection: the other side then sees EOF at once.
        channel.close()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def close(self) -> None:
        self._listener.close()
        for sock, channel in self._open:
            channel.close()
            sock.close()


def _serve(config: dict[str, Any]) -> None:
    options = ssh.SshOptions(config["target"], config["identity"], config["known_hosts"],
                             timeout=config["timeout"])
    client, _ = ssh.login(options, config["secrets"])
    forward = PortForward(client.get_transport(), "127.0.0.1", config["remote_port"])
    print(json.dumps({"port": forward.port}), flush=True)
    for line in sys.stdin:  # until the parent closes our stdin, or dies
        if line.strip() == "close-listener":
            forward.stop_accepting()
    forward.close()
    client.close()


def main() -> None:
    config = json.loads(sys.stdin.readline())
    try:
        _serve(config)
    except EdgecError as err:
        print(json.dumps({"error": str(err)}), flush=True)


if __name__ == "__main__":
    main()

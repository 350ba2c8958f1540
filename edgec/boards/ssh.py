"""SSH to a board with paramiko: checked host keys, bounded commands, SFTP, a local port forward.

Every failure a user can cause (unreachable host, unknown or changed host key, refused login,
a command that hangs) becomes a one-line RemoteError naming the board and what to do.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.errors import ConfigError, RemoteError

# paramiko logs transport errors at ERROR; without a handler Python prints them on stderr,
# next to the one-line error edgec reports for the same failure.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


def parse_target(text: str) -> tuple[str, str, int]:
    """Split USER@HOST[:PORT] (the user defaults to the local one, the port to 22).

    Raises:
        ConfigError: an empty host or a port that is not a number.
    """
    user, _, rest = text.rpartition("@")
    host, port = rest, "22"
    if rest.startswith("["):  # [v6::addr]:port
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else "22"
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'--ssh "{text}" is not USER@HOST[:PORT]')
    return user or _local_user(), host, int(port)


def _local_user() -> str:
    import getpass

    return getpass.getuser()


@dataclass(frozen=True)
class SshOptions:
    """How to log in to a board: USER@HOST[:PORT], a key, and which host keys to trust."""

    target: str
    identity: str | None = None  # a private key file; else ssh-agent and ~/.ssh/id_*
    known_hosts: str | None = None  # default ~/.ssh/known_hosts (+ /etc/ssh/ssh_known_hosts)
    accept_new_host_key: bool = False  # trust a host seen for the first time, and record it
    timeout: float = 10.0  # seconds for the TCP connect, the banner and authentication
    # Asks for a password or key passphrase; None (no terminal) means never ask.
    ask_secret: Callable[[str], str] | None = None

    def __post_init__(self) -> None:
        parse_target(self.target)
        if self.identity and not Path(self.identity).expanduser().is_file():
            raise ConfigError(f"--identity {self.identity} does not exist")

    @property
    def address(self) -> tuple[str, str, int]:
        return parse_target(self.target)

    @property
    def where(self) -> str:
        user, host, port = self.address
        return f"{user}@{host}:{port}"


def terminal_prompt() -> Callable[[str], str] | None:
    """getpass when stdin is a terminal (to ask for a password or a passphrase), else None."""
    import getpass
    import sys

    return getpass.getpass if sys.stdin.isatty() else None


def fingerprint(key: Any) -> str:
    """OpenSSH's SHA256 fingerprint of a host key, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_key_policies(options: SshOptions, known_hosts: Path) -> Any:
    import paramiko

    class Reject(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            kind = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(key.get_name(), "ecdsa")
            raise RemoteError(
                f"{hostname} is not in {known_hosts} (its {key.get_name()} key is "
                f"{fingerprint(key)}): compare with `ssh-keygen -lf "
                f"/etc/ssh/ssh_host_{kind}_key.pub` on the board, then pass --accept-new-host-key"
            )

    class AppendNew(paramiko.MissingHostKeyPolicy):
        """OpenSSH's StrictHostKeyChecking=accept-new: record a new host, never a changed one."""

        def missing_host_key(self, client, hostname, key):
            known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(known_hosts, "a") as handle:
                handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)

    return AppendNew() if options.accept_new_host_key else Reject()


def connect(options: SshOptions) -> Any:
    """Open an authenticated paramiko.SSHClient to the board.

    Tries ssh-agent and the key file; asks for a key passphrase or a password only through
    `options.ask_secret` (given by the CLI when a terminal is attached).

    Raises:
        RemoteError: unreachable host, unknown or changed host key, or refused login.
    """
    return login(options)[0]


def login(options: SshOptions, secrets: dict[str, str] | None = None) -> tuple[Any, dict]:
    """`connect`, also returning the password or passphrase that worked ({} for none), so a
    second connection (the tunnel helper) can log in without asking again."""
    import paramiko

    user, host, port = options.address
    secrets = dict(secrets or {})
    while True:
        client = _client(options)
        try:
            client.connect(
                host, port, username=user, key_filename=options.identity,
                look_for_keys=options.identity is None, allow_agent=True,
                timeout=options.timeout, banner_timeout=options.timeout,
                auth_timeout=options.timeout, channel_timeout=options.timeout, **secrets,
            )
            return client, secrets
        except (paramiko.SSHException, OSError, EOFError, RemoteError) as err:
            client.close()
            ask = _secret_to_ask(err, options, secrets)
            if ask is None:
                raise _connect_error(err, options) from err
            secrets = {ask: options.ask_secret(f"{ask} for {user}@{host}: ")}


def _client(options: SshOptions) -> Any:
    """An SSHClient that trusts only known_hosts entries (or records new ones if asked to)."""
    import paramiko

    known_hosts = Path(options.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
    client = paramiko.SSHClient()
    if options.known_hosts is None and SYSTEM_KNOWN_HOSTS.is_file():
        client.load_system_host_keys(str(SYSTEM_KNOWN_HOSTS))
    if known_hosts.is_file():
        client.load_system_host_keys(str(known_hosts))  # read-only here: AppendNew appends
    elif options.known_hosts is not None and not options.accept_new_host_key:
        raise ConfigError(f"--known-hosts {known_hosts} does not exist")
    client.set_missing_host_key_policy(_host_key_policies(options, known_hosts))
    return client


def _secret_to_ask(err: Exception, options: SshOptions, asked: dict[str, str]) -> str | None:
    """'passphrase' or 'password' when asking the user could fix `err`, else None."""
    import paramiko

    if options.ask_secret is None or asked:
        return None
    if isinstance(err, paramiko.PasswordRequiredException):
        return "passphrase"
    return "password" if _is_auth_failure(err) else None


def _is_auth_failure(err: Exception) -> bool:
    import paramiko

    return isinstance(err, paramiko.AuthenticationException) or (
        "No authentication methods available" in str(err)
    )


def _connect_error(err: Exception, options: SshOptions) -> RemoteError:
    import paramiko

    user, host, port = options.address
    if isinstance(err, RemoteError):
        return err
    if isinstance(err, paramiko.BadHostKeyException):
        known = options.known_hosts or DEFAULT_KNOWN_HOSTS
        return RemoteError(
            f"the host key of {host}:{port} is {fingerprint(err.key)}, not the one in {known}: "
            "someone may be impersonating the board; if it was reinstalled, remove the old key "
            f"with ssh-keygen -R '[{host}]:{port}' -f {known}"
        )
    if isinstance(err, paramiko.PasswordRequiredException):
        return RemoteError(
            f"SSH key {options.identity or '~/.ssh/id_*'} is encrypted and there is no terminal "
            "to ask for its passphrase: add it to ssh-agent (ssh-add KEYFILE)"
        )
    if _is_auth_failure(err):
        return RemoteError(
            f"SSH login as {user} to {host}:{port} was refused ({err}): add your public key to "
            f"~/.ssh/authorized_keys on the board (ssh-copy-id -p {port} {user}@{host}), "
            "or pass --identity KEYFILE, or load the key into ssh-agent"
        )
    if isinstance(err, socket.gaierror):
        return RemoteError(f"unknown host name {host!r} in --ssh {options.target}")
    if isinstance(err, TimeoutError | socket.timeout):
        return RemoteError(
            f"{host}:{port} did not answer SSH within {options.timeout:g}s: "
            "check the address and that the board is on the network"
        )
    if isinstance(err, paramiko.ssh_exception.NoValidConnectionsError | ConnectionError):
        return RemoteError(
            f"cannot reach {host}:{port} over SSH (connection refused): check that the board "
            f"is on and that sshd listens on port {port}"
        )
    reason = str(err).strip() or type(err).__name__
    return RemoteError(f"SSH to {host}:{port} failed: {reason}")


@dataclass(frozen=True)
class Completed:
    """A finished remote command."""

    code: int
    stdout: str
    stderr: str


def run(client: Any, command: str, *, timeout: float = 60.0, where: str = "") -> Completed:
    """Run a shell command on the board, without a terminal, and wait at most `timeout`.

    Raises:
        RemoteError: the command did not finish in time or the connection broke.
    """
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    try:
        channel = client.get_transport().open_session(timeout=timeout)
        channel.exec_command(command)
        channel.shutdown_write()  # no input: commands reading stdin see EOF, not a hang
        while True:
            if channel.recv_ready():
                out += channel.recv(1 << 16)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(1 << 16)
            elif channel.exit_status_ready():
                if not (channel.recv_ready() or channel.recv_stderr_ready()):
                    break
            elif time.monotonic() > deadline:
                channel.close()
                raise RemoteError(f"{where or 'board'}: `{command[:60]}` did not finish in "
                                  f"{timeout:g}s")
            else:
                time.sleep(0.02)
        code = channel.recv_exit_status()
        channel.close()
    except (OSError, EOFError) as error:
        raise RemoteError(f"{where or 'board'}: the SSH connection broke: {error}") from error
    return Completed(code, out.decode(errors="replace"), err.decode(errors="replace"))


def check_output(client: Any, command: str, *, timeout: float = 60.0, where: str = "") -> str:
    """Run a command and return its stdout; a non-zero exit becomes a RemoteError with stderr."""
    done = run(client, command, timeout=timeout, where=where)
    if done.code != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise RemoteError(f"{where or 'board'}: `{command[:60]}` failed "
                          f"(exit {done.code}): {tail[0]}")
    return done.stdout


def quote(text: str) -> str:
    """Quote for the board's POSIX shell; a leading ~/ stays unquoted so that it expands."""
    if text.startswith("~/"):
        return "~/" + shlex.quote(text[2:])
    return shlex.quote(text)


def open_sftp(client: Any, *, timeout: float = 120.0, where: str = "") -> Any:
    """An SFTP session whose reads and writes fail after `timeout` seconds of silence.

    Raises:
        RemoteError: the SSH server offers no SFTP subsystem.
    """
    import paramiko

    try:
        sftp = client.open_sftp()
    except (paramiko.SSHException, OSError, EOFError) as err:
        raise RemoteError(
            f"{where or 'board'} offers no SFTP ({err}): enable it in the board's sshd_config "
            "(Subsystem sftp /usr/lib/openssh/sftp-server or internal-sftp)"
        ) from err
    sftp.get_channel().settimeout(timeout)
    return sftp


def environment_prefix(env: dict[str, str]) -> str:
    """`K=V ...` to put before a remote command (values quoted)."""
    return " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())

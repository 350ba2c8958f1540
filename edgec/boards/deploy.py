"""Deploy stage: copy OUT.so and OUT.so.json to a board over SSH, check them there, smoke-run.

SFTP through paramiko only (no scp/ssh programs): the copy lands under a temporary name and is
renamed, its sha256 is recomputed on the board, and `smoke` runs one inference there with
edgec's own loader, uploaded to a private temporary folder for the run.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgec.boards import probe
from edgec.boards import ssh as sshmod
from edgec.errors import RemoteError
from edgec.package import check_library, elf_arch, metadata_path, read_info

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DeployReport:
    """Where a library landed on a board, its verified hash, and the smoke run's outputs."""

    library: str
    where: str
    remote_path: str
    sha256: str
    size: int
    arch: str
    seconds: float
    smoke: dict[str, Any] | None = None

    def summary(self) -> str:
        lines = [f"deployed {Path(self.library).name} ({self.size / 1e6:.1f} MB, {self.arch}) to "
                 f"{self.where}:{self.remote_path} in {self.seconds:.1f}s",
                 f"  sha256 {self.sha256} checked on the board"]
        if self.smoke:
            lines.append(f"  smoke run on the board: first inference {self.smoke['ms']:.1f} ms")
            for name, out in self.smoke["outputs"].items():
                lines.append(f"    {name}: shape {tuple(out['shape'])} {out['dtype']}  "
                             f"min {out['min']:.4g}  max {out['max']:.4g}  mean {out['mean']:.4g}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def deploy(
    library: str | Path,
    ssh: str,
    *,
    identity: str | None = None,
    dest: str = "~/edgec",
    accept_new_host_key: bool = False,
    known_hosts: str | None = None,
    smoke: bool = False,
    remote_python: str = "python3",
    progress: Progress | None = None,
) -> DeployReport:
    """Upload `library` and its metadata to `dest` on the board and verify them there.

    Args:
        ssh: USER@HOST[:PORT].
        identity: private key file; default ssh-agent and ~/.ssh/id_*.
        dest: folder on the board ("~/" is the login's home); created if missing.
        accept_new_host_key: trust and record a host missing from known_hosts.
        known_hosts: host keys to trust; default ~/.ssh/known_hosts.
        smoke: run one inference on the board (needs TVM + numpy there).
        remote_python: the board's Python, for `smoke`.

    Raises:
        ArtifactError: the library is corrupt, or built for another CPU than the board's.
        RemoteError: SSH, the upload, the hash check or the smoke run failed.
    """
    say = progress or (lambda _line: None)
    library = Path(library)
    info = read_info(library)
    check_library(library, info, machine=info.arch)  # intact, and as its metadata says
    options = sshmod.SshOptions(ssh, identity, known_hosts, accept_new_host_key,
                                ask_secret=sshmod.terminal_prompt())
    started = time.monotonic()
    client = sshmod.connect(options)
    where = options.where
    try:
        board_arch = probe.normalize_arch(
            sshmod.check_output(client, "uname -m", timeout=20, where=where).strip())
        probe.check_arch(library, elf_arch(library), board_arch, where)
        remote_path = _upload(client, library, dest, say)
        say(f"checking sha256 of {remote_path} on the board")
        _check_remote_hash(client, remote_path, info.sha256, where)
        report = DeployReport(str(library), where, remote_path, info.sha256,
                              library.stat().st_size, board_arch, 0.0)
        if smoke:
            say(f"smoke run on the board with {remote_python}")
            report = replace(report, smoke=_smoke(client, remote_python, where, remote_path,
                                                info.tvm_version))
    finally:
        client.close()
    return replace(report, seconds=time.monotonic() - started)


def _upload(client: Any, library: Path, dest: str, say: Progress) -> str:
    """SFTP the library and its sidecar into `dest`; return the library's absolute path there."""
    sftp = sshmod.open_sftp(client, timeout=120)  # a stalled transfer fails, not hangs
    try:
        folder = _remote_home_path(sftp, dest)
        _sftp_makedirs(sftp, folder)
        for local in (library, metadata_path(library)):
            target = posixpath.join(folder, local.name)
            say(f"uploading {local.name} ({local.stat().st_size / 1e6:.1f} MB) to {target}")
            _sftp_put(sftp, local, target)
    except OSError as err:
        raise RemoteError(f"uploading {library.name} to {dest} on the board failed: {err}; "
                          "check that the folder is writable and the disk has room") from err
    finally:
        sftp.close()
    return posixpath.join(folder, library.name)


_HASH = "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())"


def _check_remote_hash(client: Any, remote_path: str, expected: str, where: str) -> None:
    quoted = shlex.quote(remote_path)
    # sha256sum is in coreutils and busybox; python3 covers boards that have neither.
    command = f"sha256sum -- {quoted} || python3 -c {shlex.quote(_HASH)} {quoted}"
    output = sshmod.check_output(client, command, timeout=120, where=where).split()
    actual = output[0] if output else ""
    if actual != expected:
        raise RemoteError(f"{remote_path} on {where} has sha256 {actual[:12]}…, not "
                          f"{expected[:12]}…: the copy is corrupt; deploy again")


def _smoke(client: Any, python: str, where: str, remote_path: str,
           artifact_tvm: str) -> dict[str, Any]:
    info = probe.probe(client, python, where)
    want = {**probe.local_versions(), "apache-tvm": artifact_tvm}
    probe.require_ready(info, want)
    with probe.loader_dir(client, where) as tmp:
        return probe.run_loader(client, info, tmp, probe.SMOKE, remote_path)


def _sftp_makedirs(sftp: Any, path: str) -> None:
    """mkdir -p over SFTP (relative paths are relative to the login's home)."""
    current = "/" if path.startswith("/") else ""
    for part in [p for p in path.split("/") if p]:
        current = posixpath.join(current, part) if current else part
        try:
            sftp.stat(current)
        except OSError:
            sftp.mkdir(current)


def _sftp_put(sftp: Any, local: str | Path, remote: str) -> None:
    """Upload to REMOTE.part, then rename: a reader never sees a half-written file."""
    partial = remote + ".part"
    sftp.put(str(local), partial)
    try:
        sftp.posix_rename(partial, remote)
    except OSError:  # servers without the posix-rename extension
        with contextlib.suppress(OSError):
            sftp.remove(remote)
        sftp.rename(partial, remote)


def _remote_home_path(sftp: Any, path: str) -> str:
    """An absolute path on the board: '~/x' and relative paths are under the login's home."""
    if path.startswith("/"):
        return posixpath.normpath(path)
    home = sftp.normalize(".")
    relative = path[2:] if path.startswith("~/") else ("" if path == "~" else path)
    return posixpath.normpath(posixpath.join(home, relative))

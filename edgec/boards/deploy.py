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
import tempfile
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
    bundle: bool = False,
    progress: Progress | None = None,
) -> DeployReport:
    """Upload `library` and its metadata to `dest` on the board and verify them there.

    Args:
        ssh: USER@HOST[:PORT].
        identity: private key file; default ssh-agent and ~/.ssh/id_*.
        dest: folder on the board ("~/" is the login's home); created if missing.
        accept_new_host_key: trust and record a host missing from known_hosts.
        known_hosts: host keys to trust; default ~/.ssh/known_hosts.
        smoke: run one inference on the board (needs TVM + numpy there; with `bundle`,
            numpy only).
        remote_python: the board's Python, for `smoke` and to pick the bundle's tvm_ffi.
        bundle: upload an edgec bundle (library, TVM runtime, loader, run.py) into
            dest/<library stem>-bundle, so the board needs no TVM install.

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
        if bundle:
            remote_path = _upload_bundle(client, library, dest, remote_python, where, say)
        else:
            remote_path = _upload(client, library, dest, say)
        say(f"checking sha256 of {remote_path} on the board")
        _check_remote_hash(client, remote_path, info.sha256, where)
        report = DeployReport(str(library), where, remote_path, info.sha256,
                              library.stat().st_size, board_arch, 0.0)
        if smoke:
            say(f"smoke run on the board with {remote_python}")
            result = (_smoke_bundle(client, remote_python, where, remote_path) if bundle
                      else _smoke(client, remote_python, where, remote_path, info.tvm_version))
            report = replace(report, smoke=result)
    finally:
        client.close()
    return replace(report, seconds=time.monotonic() - started)


def _upload(client: Any, library: Path, dest: str, say: Progress) -> str:
    """SFTP the library and its sidecar into `dest`; return the library's absolute path there."""
    files = [(path, path.name) for path in (library, metadata_path(library))]
    return posixpath.join(_upload_files(client, files, dest, library.name, say), library.name)


def _upload_bundle(client: Any, library: Path, dest: str, python: str, where: str,
                   say: Progress) -> str:
    """Build the library's bundle for the board's Python and SFTP it into dest; return the
    library's absolute path there."""
    from edgec.boards import bundle

    board = probe.probe(client, python, where)
    if board.python is None:
        raise RemoteError(f"{python} is missing on {where}: the bundle's run.py needs Python 3 "
                          "and numpy (--remote-python names another; or use bundle --cpp)")
    version = ".".join(board.python.split(".")[:2])
    with tempfile.TemporaryDirectory(prefix="edgec-bundle-") as tmp:
        local = Path(tmp) / f"{library.stem}-bundle"
        report = bundle.make_bundle(library, local, python_version=version, progress=say)
        files = [(path, f"{local.name}/{path.relative_to(local).as_posix()}")
                 for path in sorted(local.rglob("*")) if path.is_file()]
        say(f"uploading the bundle ({report.size() / 1e6:.1f} MB, {len(files)} files)")
        folder = _upload_files(client, files, dest, "the bundle", lambda _line: None)
    return posixpath.join(folder, local.name, library.name)


def _upload_files(client: Any, files: list[tuple[Path, str]], dest: str, what: str,
                  say: Progress) -> str:
    """SFTP (local file, path under dest) pairs, keeping their modes; returns dest's absolute
    path on the board."""
    sftp = sshmod.open_sftp(client, timeout=120)  # a stalled transfer fails, not hangs
    try:
        folder = _remote_home_path(sftp, dest)
        for local, relative in files:
            target = posixpath.join(folder, relative)
            _sftp_makedirs(sftp, posixpath.dirname(target))
            say(f"uploading {local.name} ({local.stat().st_size / 1e6:.1f} MB) to {target}")
            _sftp_put(sftp, local, target)
            sftp.chmod(target, local.stat().st_mode & 0o777)
    except OSError as err:
        raise RemoteError(f"uploading {what} to {dest} on the board failed: {err}; "
                          "check that the folder is writable and the disk has room") from err
    finally:
        sftp.close()
    return folder


def _smoke_bundle(client: Any, python: str, where: str, remote_path: str) -> dict[str, Any]:
    run = posixpath.join(posixpath.dirname(remote_path), "run.py")
    done = sshmod.run(client, f"{sshmod.quote(python)} {shlex.quote(run)} --json", timeout=600,
                      where=where)
    lines = done.stdout.strip().splitlines()
    if done.code != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"the bundle's smoke run on {where} failed: {reason}")
    return json.loads(lines[-1])


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

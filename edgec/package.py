"""The compiled artifact on disk: OUT.so plus its metadata sidecar OUT.so.json.

Standard library only: this module runs on boards that have nothing but the TVM runtime.
The sidecar (not an ELF section) keeps the .so byte-identical to what TVM exported, so its
sha256 can be recorded next to it and checked before loading.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgec.errors import ArtifactError

FORMAT = 1
# ELF e_machine values (System V ABI) for the architectures edgec builds for.
_ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm", 3: "x86"}


@dataclass(frozen=True)
class PackageInfo:
    """What a loader needs to know about a compiled model, stored in OUT.so.json."""

    model: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    layout: str
    target: dict[str, Any]
    arch: str
    tvm_version: str
    sha256: str
    edgec_version: str
    applied: list[str] = field(default_factory=list)
    tuning: dict[str, Any] = field(default_factory=dict)
    # What `edgec verify` allows against the source model: rtol, min_cosine and why.
    check: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def metadata_path(library: str | Path) -> Path:
    return Path(f"{library}.json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def elf_arch(path: str | Path) -> str:
    """Architecture named in an ELF header ("x86_64", "aarch64", ...).

    Raises:
        ArtifactError: not an ELF file.
    """
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ArtifactError(f"{path} is not a shared library (no ELF header)")
    byteorder = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], byteorder)
    return _ELF_MACHINES.get(machine, f"e_machine={machine}")


def read_info(library: str | Path) -> PackageInfo:
    """Read and validate the sidecar of a compiled library.

    Raises:
        ArtifactError: missing library or sidecar, or an unreadable sidecar.
    """
    library = Path(library)
    if not library.is_file():
        raise ArtifactError(f"artifact {library} does not exist")
    meta = metadata_path(library)
    if not meta.is_file():
        raise ArtifactError(
            f"{library} has no metadata file {meta.name} beside it; copy both files "
            f"(edgec deploy does), or recompile with edgec compile"
        )
    try:
        data = json.loads(meta.read_text())
        if data.get("format") != FORMAT:
            raise ArtifactError(
                f"{meta} has format {data.get('format')}; this edgec reads {FORMAT}"
            )
        return PackageInfo(**data)
    except (json.JSONDecodeError, TypeError, AttributeError) as err:
        raise ArtifactError(f"{meta} is not edgec metadata: {err}") from err


def check_library(library: str | Path, info: PackageInfo, *, machine: str | None = None) -> None:
    """Check that the library is the one the metadata describes and that it can run here.

    Args:
        machine: the architecture it must run on; defaults to this machine's.

    Raises:
        ArtifactError: hash mismatch (corrupt or mixed-up files) or wrong architecture.
    """
    actual = file_sha256(library)
    if actual != info.sha256:
        raise ArtifactError(
            f"{library} does not match its metadata "
            f"(sha256 {actual[:12]}… vs {info.sha256[:12]}…): "
            "the file is corrupt or from another build; copy it again"
        )
    machine = machine or platform.machine()
    arch = elf_arch(library)
    if arch != machine:
        raise ArtifactError(
            f"{library} was compiled for {arch} (target {info.target.get('name')}), "
            f"this machine is {machine}; compile with a {machine} target or run it on the board"
        )

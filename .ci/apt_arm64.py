#!/usr/bin/env python3
"""Make `apt-get download PKG:arm64` work on Debian and Ubuntu hosts (the emulated board
unpacks arm64 packages), without breaking `apt-get update`.

Adding the arm64 architecture makes apt ask every source for arm64 lists. Debian's archive
serves them; Ubuntu's archive.ubuntu.com and most third-party sources do not (Ubuntu keeps
arm64 on ports.ubuntu.com), so `apt-get update` fails and `set -e` stops CI. So:
  1. every source without an explicit architecture is limited to the host's, except
     Debian's own mirrors, which serve arm64 at the same address;
  2. on Ubuntu, one new file, sources.list.d/edgec-arm64.sources, lists the same suites on
     ports.ubuntu.com for arm64.
Both deb822 (*.sources) and one-line (sources.list, *.list) files are handled. Standard
library only: it runs before any venv exists. Usage: apt_arm64.py [--root DIR] [--arch ARCH]
(ROOT defaults to /; tests point it at a folder). Then: dpkg --add-architecture arm64.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

NEW_FILE = "edgec-arm64.sources"
UBUNTU_PORTS = "http://ports.ubuntu.com/ubuntu-ports"
# Hosts of the distributions' own archives; other sources (PPAs, vendors) get host-only.
DEBIAN_HOSTS = ("deb.debian.org", "security.debian.org", "ftp.debian.org", ".debian.org")
UBUNTU_HOSTS = ("archive.ubuntu.com", "security.ubuntu.com", "ports.ubuntu.com")


def os_id(root: Path) -> str:
    release = root / "etc/os-release"
    text = release.read_text() if release.is_file() else ""
    found = re.search(r"^ID=\"?([a-z]+)", text, re.M)
    return found.group(1) if found else "unknown"


def _stanzas(text: str) -> list[list[str]]:
    """deb822 paragraphs as lists of lines (comments kept in place)."""
    paragraphs, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def _field(stanza: list[str], name: str) -> str | None:
    for line in stanza:
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def _is_archive(uri: str, hosts: tuple[str, ...]) -> bool:
    return any(host in uri for host in hosts)


def serves_arm64(uris: str, distro: str) -> bool:
    """Debian's own mirrors carry every architecture at one address: leave them alone."""
    return distro == "debian" and _is_archive(uris, DEBIAN_HOSTS)


def arm64_stanza(stanza: list[str], distro: str) -> list[str] | None:
    """The arm64 twin, on ports.ubuntu.com, of an Ubuntu archive stanza; else None."""
    uris = _field(stanza, "URIs") or ""
    types = (_field(stanza, "Types") or "").split()
    if "deb" not in types or _field(stanza, "Enabled") == "no":
        return None
    if not (distro == "ubuntu" and _is_archive(uris, UBUNTU_HOSTS)):
        return None
    keep = ("Suites", "Components", "Signed-By")
    lines = ["Types: deb", f"URIs: {UBUNTU_PORTS}"]
    lines += [f"{name}: {_field(stanza, name)}" for name in keep if _field(stanza, name)]
    return [*lines, "Architectures: arm64"]


def restrict_deb822(text: str, arch: str, distro: str) -> str:
    out = []
    for stanza in _stanzas(text):
        if _field(stanza, "Architectures") is None and not serves_arm64(
                _field(stanza, "URIs") or "", distro):
            stanza = [*stanza, f"Architectures: {arch}"]
        out.append("\n".join(stanza))
    return "\n\n".join(out) + "\n"


_ONE_LINE = re.compile(r"^(\s*deb)(\s+\[([^\]]*)\])?(\s+.*)$")


def restrict_one_line(text: str, arch: str, distro: str) -> str:
    lines = []
    for line in text.splitlines():
        match = _ONE_LINE.match(line)
        if (match and "arch=" not in (match.group(3) or "")
                and not serves_arm64(match.group(4), distro)):
            options = f"{match.group(3)} arch={arch}" if match.group(3) else f"arch={arch}"
            line = f"{match.group(1)} [{options.strip()}]{match.group(4)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def one_line_as_stanzas(text: str) -> list[list[str]]:
    """`deb [opts] URI SUITE COMPONENTS...` lines as deb822 stanzas (for arm64 twins)."""
    stanzas = []
    for line in text.splitlines():
        match = _ONE_LINE.match(line)
        if not match:
            continue
        parts = match.group(4).split()
        if len(parts) < 2:
            continue
        stanza = ["Types: deb", f"URIs: {parts[0]}", f"Suites: {parts[1]}"]
        if parts[2:]:
            stanza.append(f"Components: {' '.join(parts[2:])}")
        signed = re.search(r"signed-by=(\S+)", match.group(3) or "")
        if signed:
            stanza.append(f"Signed-By: {signed.group(1)}")
        stanzas.append(stanza)
    return stanzas


def configure(root: Path, arch: str) -> Path:
    """Rewrite root's apt sources as the module docstring says; returns the new file."""
    distro = os_id(root)
    apt = root / "etc/apt"
    parts = apt / "sources.list.d"
    parts.mkdir(parents=True, exist_ok=True)
    new_file = parts / NEW_FILE
    twins: list[list[str]] = []
    files = [apt / "sources.list", *sorted(parts.glob("*.list")), *sorted(parts.glob("*.sources"))]
    for path in files:
        if not path.is_file() or path == new_file:
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            twins += [t for s in _stanzas(text) if (t := arm64_stanza(s, distro))]
            path.write_text(restrict_deb822(text, arch, distro))
        else:
            twins += [t for s in one_line_as_stanzas(text) if (t := arm64_stanza(s, distro))]
            path.write_text(restrict_one_line(text, arch, distro))
    header = f"# arm64 packages for edgec's emulated board ({distro}), by .ci/apt_arm64.py\n"
    new_file.write_text(header + "\n\n".join("\n".join(t) for t in twins) + "\n")
    return new_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--arch", default="amd64", help="the host's dpkg architecture")
    args = parser.parse_args()
    new_file = configure(args.root, args.arch)
    print(f"apt sources: host-only ({args.arch}) except {new_file} (arm64)")


if __name__ == "__main__":
    main()

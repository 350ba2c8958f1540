""".ci/apt_arm64.py on Debian and Ubuntu source files, judged by apt itself: the URIs that
`apt-get update --print-uris` would fetch for amd64 + arm64 (nothing is downloaded)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / ".ci" / "apt_arm64.py"

UBUNTU_NOBLE = """Types: deb
URIs: http://archive.ubuntu.com/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

Types: deb
URIs: http://security.ubuntu.com/ubuntu/
Suites: noble-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
"""
UBUNTU_JAMMY_LIST = """# See http://help.ubuntu.com/community/UpgradeNotes
deb http://archive.ubuntu.com/ubuntu/ jammy main restricted universe
deb http://archive.ubuntu.com/ubuntu/ jammy-updates main restricted universe
deb-src http://archive.ubuntu.com/ubuntu/ jammy main
deb [signed-by=/usr/share/keyrings/ubuntu-archive-keyring.gpg] \
http://security.ubuntu.com/ubuntu/ jammy-security main universe
"""  # the backslash joins the last line: one `deb [signed-by=...] URI SUITE ...` line
A_PPA = "deb https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu jammy main\n"
DEBIAN_BOOKWORM = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
NODESOURCE = """Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg
"""


def make_root(tmp_path: Path, distro: str, files: dict[str, str]) -> Path:
    root = tmp_path / "root"
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "etc/os-release").write_text(f'NAME="{distro}"\nID={distro}\n')
    for name, text in files.items():
        (root / "etc/apt" / name).write_text(text)
    return root


def fetched(root: Path) -> set[tuple[str, str]]:
    """(host, architecture) of every binary package list apt would fetch from root's
    sources for an amd64 host with arm64 added."""
    if shutil.which("apt-get") is None:
        pytest.fail("apt-get is needed to judge the rewritten sources (Debian or Ubuntu host)")
    state = root / "var"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["apt-get", "-o", f"Dir::Etc={root}/etc/apt", "-o", f"Dir::State={state}",
         "-o", f"Dir::Cache={state}/cache", "-o", "APT::Architecture=amd64",
         "-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64",
         "update", "--print-uris"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"'https?://([^/]+)/[^']*/binary-(amd64|arm64)/", out))


def configure(root: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), "--arch", "amd64"],
                   check=True, capture_output=True)


def test_ubuntu_deb822_sources_fetch_arm64_from_ports_only(tmp_path):
    root = make_root(tmp_path, "ubuntu", {"sources.list.d/ubuntu.sources": UBUNTU_NOBLE})
    # The failure the script exists for: the plain archive asked for arm64 lists it lacks.
    assert ("archive.ubuntu.com", "arm64") in fetched(root)
    configure(root)
    assert fetched(root) == {("archive.ubuntu.com", "amd64"), ("security.ubuntu.com", "amd64"),
                             ("ports.ubuntu.com", "arm64")}
    configure(root)  # a second run (CI re-run on the same machine) changes nothing
    assert fetched(root) == {("archive.ubuntu.com", "amd64"), ("security.ubuntu.com", "amd64"),
                             ("ports.ubuntu.com", "arm64")}


def test_ubuntu_one_line_sources_keep_a_ppa_host_only(tmp_path):
    root = make_root(tmp_path, "ubuntu", {"sources.list": UBUNTU_JAMMY_LIST,
                                          "sources.list.d/deadsnakes.list": A_PPA})
    configure(root)
    assert fetched(root) == {
        ("archive.ubuntu.com", "amd64"), ("security.ubuntu.com", "amd64"),
        ("ppa.launchpadcontent.net", "amd64"), ("ports.ubuntu.com", "arm64")}
    twin = (root / "etc/apt/sources.list.d/edgec-arm64.sources").read_text()
    assert "Suites: jammy-security" in twin and "Signed-By: /usr/share/keyrings/ubuntu" in twin
    assert "deb-src http://archive.ubuntu.com/ubuntu/ jammy main" in (
        root / "etc/apt/sources.list").read_text()


def test_debian_keeps_arm64_on_its_own_mirrors_and_third_parties_host_only(tmp_path):
    root = make_root(tmp_path, "debian", {"sources.list.d/debian.sources": DEBIAN_BOOKWORM,
                                          "sources.list.d/nodesource.sources": NODESOURCE})
    configure(root)
    assert fetched(root) == {("deb.debian.org", "amd64"), ("deb.debian.org", "arm64"),
                             ("deb.nodesource.com", "amd64")}

"""A wheel install (not `pip install -e`) works outside the checkout: its target files and
shipped tuning logs are package data, found in site-packages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_compiles_with_the_shipped_logs(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, text=True, timeout=600)
    wheel = next(wheels.glob("edgec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgec/shipped/targets/rpi4.toml" in names
    assert "edgec/shipped/tuning_logs/x86_64/database_tuning_record.json" in names
    assert "edgec/boards/estimate/plugin.c" in names  # built on first use of --estimate
    assert "edgec/boards/bundle_runner.cc" in names  # built by `edgec bundle --cpp`
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=600)
    # The venv's dependencies, this wheel's edgec first on the path, run from elsewhere.
    env = {**os.environ, "PYTHONPATH": str(site)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def edgec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgec", *args], capture_output=True,
                              text=True, env=env, cwd=elsewhere, timeout=900)

    where = subprocess.run([sys.executable, "-c", "import edgec; print(edgec.__file__)"],
                           capture_output=True, text=True, env=env, cwd=elsewhere, check=True)
    assert where.stdout.startswith(str(site)), where.stdout
    listed = edgec("targets")
    assert listed.returncode == 0 and "rpi4" in listed.stdout and "x86_64" in listed.stdout
    compiled = edgec("compile", "zoo:mobilenet_v2", "--target", "x86_64", "-o", "m.so",
                     "--no-check")
    assert compiled.returncode == 0, compiled.stderr
    # (Where the in-model check rejected records, "N on defaults because their records ran
    # slower in the model" comes before the untuned count.)
    counts = re.search(r"(\d+) functions from tuned records, (\d+) on defaults that tuning "
                       r"confirmed, (?:\d+ on defaults because [^,]*, )?(\d+) untuned",
                       compiled.stdout)
    assert counts, compiled.stdout
    tuned, confirmed, untuned = map(int, counts.groups())
    assert tuned + confirmed > 0 and untuned == 0, compiled.stdout
    assert (elsewhere / "m.so").is_file()

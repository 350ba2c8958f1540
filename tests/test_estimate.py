"""The instruction-level latency estimate (edgec bench --estimate): an instruction-count
guard on one small model's rpi4 build, so an ARM kernel regression fails CI, and the
command line around it. Its accuracy against real timings is bench/estimate_check.py's job
(timed tests do not belong in CI on VMs that drift 1.5x)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from edgec.boards import emulator_root
from edgec.boards.estimate import cores, estimate
from edgec.errors import ConfigError

# MobileNetV3-Small for rpi4 (NCHW4c, NEON), measured 2026-12-01: 28,621,091 instructions
# per steady-state inference, 28,434,801 of them in compiled code (the same on a repeat);
# the TVM runtime between them 0.19 M. A kernel that loses its register blocking or its
# vectorization adds far more than the 6% headroom.
INSTRUCTIONS = (27.0e6, 30.5e6)


def test_an_unknown_core_is_refused_with_a_close_match():
    with pytest.raises(ConfigError, match="cortex-a72"):
        cores.lookup("cortex-a27")


@pytest.mark.slow
def test_mobilenet_v3_small_for_rpi4_executes_the_instructions_it_did(tmp_path):
    emulator_root.prepare()
    library = tmp_path / "mnv3s-rpi4.so"
    built = run_cli("compile", "zoo:mobilenet_v3_small", "--target", "rpi4", "-o",
                    str(library), "--no-check")
    assert built.returncode == 0, built.stderr
    report = estimate(library, "rpi4")
    assert INSTRUCTIONS[0] < report.instructions < INSTRUCTIONS[1], report.instructions
    runtime = sum(f.instructions for f in report.functions if f.name.startswith("(runtime"))
    assert runtime < 1e6, runtime
    assert 5 < report.ms < 40, report.summary()  # 15.2 ms at the Pi 4's 1.8 GHz
    # The command line: the target file's [board] table picks the core and its clock.
    shown = run_cli("bench", str(library), "--estimate", "--json", str(tmp_path / "e.json"))
    assert shown.returncode == 0, shown.stderr
    assert "cortex-a72" in shown.stdout and "estimated" in shown.stdout
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["core"]["clock_ghz"] == 1.8 and saved["instructions"] > INSTRUCTIONS[0]

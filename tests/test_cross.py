"""Cross-compiled aarch64 artifacts: real AArch64 ELF, refused on x86, equal outputs on a board.

The board is edgec's emulated aarch64 board (Debian arm64 Python + TVM under qemu user mode)
running the stock TVM RPC server; if it cannot start, these tests fail with the reason.
"""

import gc
import struct
import threading

import numpy as np
import pytest

from conftest import assert_clean_failure, run_cli
from edgec import check, pipeline, runtime

EM_AARCH64 = 183


def elf_header(path):
    """(ELF class, e_machine) read from the file's header bytes with struct, not with edgec."""
    header = open(path, "rb").read(20)
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    order = "<" if header[5] == 1 else ">"
    return header[4], struct.unpack(order + "H", header[18:20])[0]


@pytest.fixture(scope="module")
def rpi4_and_x86(tmp_path_factory):
    """mobilenet_v2 compiled for rpi4 and for x86_64 from the same zoo model."""
    out = tmp_path_factory.mktemp("cross")
    paths = {}
    for target in ("rpi4", "x86_64"):
        paths[target] = out / f"mnv2-{target}.so"
        pipeline.compile_model(pipeline.CompileOptions(
            model="zoo:mobilenet_v2", output=paths[target], target=target))
    return paths


@pytest.mark.slow
def test_rpi4_build_is_a_64_bit_aarch64_elf(rpi4_and_x86):
    elf_class, machine = elf_header(rpi4_and_x86["rpi4"])
    assert (elf_class, machine) == (2, EM_AARCH64)
    assert elf_header(rpi4_and_x86["x86_64"])[1] == 62  # EM_X86_64


@pytest.mark.slow
def test_loader_refuses_an_aarch64_artifact_on_x86(rpi4_and_x86):
    result = run_cli("run", str(rpi4_and_x86["rpi4"]))
    assert_clean_failure(result, "aarch64", "x86_64")


@pytest.mark.slow
def test_rpi4_build_runs_on_an_emulated_board_and_equals_x86(rpi4_and_x86, emulated_board):
    x86 = runtime.load(rpi4_and_x86["x86_64"])
    inputs = check.random_inputs(x86.info.inputs, seed=21)
    expected = x86.run(inputs)
    gc.disable()  # the session must close when the model is dropped, not when gc runs
    try:
        on_board = runtime.load_remote(emulated_board.connect(session_timeout=600),
                                       rpi4_and_x86["rpi4"])
        got = on_board.run(inputs)
        del on_board
        # The stock RPC server serves one session at a time: a session the dropped model
        # still held (TVM's get_outputs made a reference cycle) kept the next one waiting
        # until its session_timeout.
        opened = []
        second = threading.Thread(target=lambda: opened.append(
            emulated_board.connect(session_timeout=60).cpu(0).exist), daemon=True)
        second.start()
        second.join(timeout=120)
    finally:
        gc.enable()
    assert opened == [True], "a second session did not open: the first one is still held"
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-4 * np.abs(want).max())

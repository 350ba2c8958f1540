"""The emulated aarch64 board runs a cross-compiled Relax module over TVM RPC, matching numpy."""

import os
import struct

import numpy as np
import psutil
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from edgec.boards import emulator
from edgec.errors import ConfigError, RemoteError

EM_AARCH64 = 183


@tvm.script.ir_module
class TinyCnn:
    @R.function
    def main(
        x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32")
    ) -> R.Tensor((1, 4, 6, 6), "float32"):
        with R.dataflow():
            y = R.nn.conv2d(x, w)
            z = R.nn.relu(R.add(y, R.const(0.25, "float32")))
            R.output(z)
        return z


def reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid 3x3 convolution + 0.25 + ReLU, written with numpy only."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))  # n c h w kh kw
    y = np.einsum("nchwij,ocij->nohw", windows, w)
    return np.maximum(y + 0.25, 0.0)


def elf_machine(path) -> int:
    """e_machine of an ELF file, read from its header bytes."""
    header = open(path, "rb").read(20)
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    order = "<" if header[5] == 1 else ">"  # EI_DATA: 1 little-endian, 2 big-endian
    return struct.unpack(order + "H", header[18:20])[0]


def cross_compile(tmp_path):
    target = tvm.target.Target(
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    )
    lib_path = tmp_path / "tiny_cnn.so"
    executable = relax.build(TinyCnn, target=target)
    executable.export_library(
        str(lib_path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++")
    )
    return lib_path


def board_processes(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes still in the board's process group."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return alive


def board_processes_named(fragment: str) -> list[psutil.Process]:
    """Live processes whose command line mentions `fragment` (e.g. its port)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if fragment in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.mark.slow
def test_cross_compiled_relax_module_runs_on_emulated_board_and_matches_numpy(tmp_path):
    lib_path = cross_compile(tmp_path)
    assert elf_machine(lib_path) == EM_AARCH64

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8), dtype="float32")
    w = rng.standard_normal((4, 3, 3, 3), dtype="float32")

    # No skip on purpose: a host that cannot emulate must fail here with the reason.
    emulator.check_host()
    emulator.prepare()
    with emulator.EmulatedBoard() as board:
        pgid = board.pid
        remote = board.connect(session_timeout=300)
        remote.upload(str(lib_path))
        rlib = remote.load_module(lib_path.name)
        dev = remote.cpu()
        vm = tvm.runtime.vm.VirtualMachine(rlib, dev)
        out = vm["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(w, dev)).numpy()
        del vm, rlib, remote
    np.testing.assert_allclose(out, reference(x, w), rtol=1e-5, atol=1e-5)
    assert board_processes(pgid) == []


@pytest.mark.slow
def test_board_that_does_not_answer_in_time_fails_with_its_log_and_leaves_nothing_running():
    emulator.prepare()
    board = emulator.EmulatedBoard()
    # Importing tvm under qemu alone takes several seconds, so one second cannot be enough.
    with pytest.raises(RemoteError, match=r"within 1s[\s\S]*last lines of"):
        board.start(timeout=1)
    assert board.pid is None
    assert board_processes_named(f"--port {board.port} --port-end") == []


def test_board_refuses_to_serve_rpc_beyond_loopback():
    with pytest.raises(ConfigError, match="not a loopback address"):
        emulator.EmulatedBoard(host="0.0.0.0")


def test_prepare_refuses_to_delete_a_folder_it_did_not_fill(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="thesis.tex"):
        emulator.prepare(tmp_path)
    assert (tmp_path / "thesis.tex").exists()

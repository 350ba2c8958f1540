"""Deploy, board check and remote bench against real peers: OpenSSH, TVM RPC, a tracker, qemu.

The SSH "board" is this x86-64 machine behind its own sshd on loopback (see conftest.SshBoard);
the aarch64 board is `edgec board emulate` (qemu user mode + the stock TVM RPC server). A peer
that cannot start fails the test with its reason; nothing here is skipped or mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import REPO, assert_clean_failure, free_port, run_cli, stock_tvm_server
from edgec import check, pipeline, runtime
from edgec.boards import emulator, probe

PYTHON = sys.executable  # the board's Python over SSH: this venv has TVM and numpy


def compile_squeezenet(directory: Path, target: str) -> Path:
    output = directory / f"squeezenet-{target}.so"
    pipeline.compile_model(pipeline.CompileOptions(
        model="zoo:squeezenet1_1", output=output, target=target, check=False))
    return output


@pytest.fixture(scope="module")
def x86_lib(tmp_path_factory) -> Path:
    return compile_squeezenet(tmp_path_factory.mktemp("x86"), "x86_64")


@pytest.fixture(scope="module")
def rpi4_lib(tmp_path_factory) -> Path:
    return compile_squeezenet(tmp_path_factory.mktemp("rpi4"), "rpi4")


@pytest.fixture(scope="module")
def old_tvm_python(tmp_path_factory) -> str:
    """A board Python whose installed apache-tvm reports 0.26.0: the venv's interpreter with a
    distribution record for apache-tvm 0.26.0 first on its path, as pip would have left it."""
    root = tmp_path_factory.mktemp("old-tvm")
    record = root / "site" / "apache_tvm-0.26.0.dist-info"
    record.mkdir(parents=True)
    (record / "METADATA").write_text("Metadata-Version: 2.1\nName: apache-tvm\nVersion: 0.26.0\n")
    wrapper = root / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={root / "site"} exec {PYTHON} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def board_temp_dirs() -> set[str]:
    """edgec's private loader folders on the SSH board (its /tmp is ours): `mktemp -d
    edgec-XXXXXX` names (boards.probe.loader_dir). Not every edgec-* folder: a test on
    another xdist worker estimating a model meanwhile had its edgec-estimate-* folder
    counted as left over by deploy."""
    return {p.name for p in Path("/tmp").glob("edgec-*")
            if re.fullmatch(r"edgec-[A-Za-z0-9]{6}", p.name)}


# --- deploy over SSH ------------------------------------------------------------------------


@pytest.mark.slow
def test_deploy_uploads_checks_the_hash_and_smoke_runs_on_the_board(ssh_board, x86_lib,
                                                                    tmp_path):
    dest, before = tmp_path / "on-board", board_temp_dirs()
    result = run_cli("deploy", str(x86_lib), *ssh_board.args(), "--dest", str(dest),
                     "--smoke", "--remote-python", PYTHON, timeout=300)
    assert result.returncode == 0, result.stderr
    copy = dest / x86_lib.name
    meta = json.loads((dest / f"{x86_lib.name}.json").read_text())
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == meta["sha256"]
    assert f"sha256 {meta['sha256']} checked on the board" in result.stdout
    # The smoke run used seeded inputs; the same library run here must print the same numbers.
    model = runtime.load(x86_lib)
    logits = model.run(check.random_inputs(model.info.inputs))["logits"]
    assert (f"logits: shape (1, 1000) float32  min {logits.min():.4g}  max {logits.max():.4g}"
            in result.stdout), result.stdout
    assert ssh_board.processes() == []
    assert board_temp_dirs() == before  # the loader's private folder was removed


def test_deploy_refuses_an_aarch64_library_for_an_x86_board_before_uploading(
        ssh_board, rpi4_lib, tmp_path):
    dest = tmp_path / "never"
    result = run_cli("deploy", str(rpi4_lib), *ssh_board.args(), "--dest", str(dest))
    assert_clean_failure(result, "aarch64", "x86_64")
    assert not dest.exists()


# --- bench over SSH: the stock RPC server started on the board, tunnelled, stopped ----------


@pytest.mark.slow
def test_bench_over_ssh_reports_stats_profile_and_plot_and_leaves_nothing_running(
        ssh_board, x86_lib, tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli("bench", str(x86_lib), *ssh_board.args(), "--remote-python", PYTHON,
                     "--runs", "5", "--warmup", "1", "--max-seconds", "600", "--profile",
                     "--json", str(out),
                     "--plot", str(png), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["where"] == f"{ssh_board.target} (RPC over SSH)"
    assert report["runs"] == 5 and len(report["latencies_ms"]) == 5
    stats = report["stats_ms"]
    assert set(stats) == {"mean", "median", "p90", "p99", "min", "max", "std",
                          "throughput_per_s"}
    assert 0 < stats["min"] <= stats["median"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    profile = report["profile_ms"]  # measured by edgec's loader on the board, over SSH
    assert any(name.startswith("fused_conv2d") for name in profile), profile
    assert list(profile.values()) == sorted(profile.values(), reverse=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ssh_board.processes() == []


def tvm_processes(ssh_board) -> list[int]:
    """The RPC server's processes on the board (not edgec's supervisor that started them)."""
    return [int(p.split(":")[0]) for p in ssh_board.processes() if "-m tvm.exec." in p]


def start_long_bench(ssh_board, library: Path) -> subprocess.Popen:
    """`edgec bench --ssh` with far more runs than the test waits for, once it is timing."""
    bench = subprocess.Popen(
        [PYTHON, "-m", "edgec", "bench", str(library), *ssh_board.args(), "--remote-python",
         PYTHON, "--runs", "100000", "--warmup", "0", "--max-seconds", "3600"], cwd=REPO,
        text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # rpc_server, its popen worker and the session it forks for our connection.
    while len(tvm_processes(ssh_board)) < 3 and time.monotonic() < deadline:
        if bench.poll() is not None:
            pytest.fail(f"bench exited early: {bench.communicate()}")
        time.sleep(0.2)
    assert len(tvm_processes(ssh_board)) >= 3, ssh_board.processes()
    time.sleep(5)  # upload and load done: the runs are being timed on the board
    return bench


def wait_until_board_is_empty(ssh_board, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while ssh_board.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    return ssh_board.processes()


@pytest.mark.slow
def test_bench_over_ssh_fails_fast_and_cleans_up_when_the_server_dies_mid_benchmark(
        ssh_board, x86_lib):
    bench = start_long_bench(ssh_board, x86_lib)
    try:
        killed_at = time.monotonic()
        for pid in tvm_processes(ssh_board):
            os.kill(pid, signal.SIGKILL)
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert time.monotonic() - killed_at < 30
    assert_clean_failure(subprocess.CompletedProcess(bench.args, bench.returncode, "", stderr),
                         "RPC session", ssh_board.target)
    assert ssh_board.processes() == []


@pytest.mark.slow
def test_edgec_killed_mid_benchmark_still_leaves_nothing_running_on_the_board(ssh_board,
                                                                            x86_lib):
    bench = start_long_bench(ssh_board, x86_lib)
    bench.kill()  # SIGKILL: no cleanup code of edgec runs; the dropped connection must do
    bench.communicate()
    assert wait_until_board_is_empty(ssh_board) == []


@pytest.mark.slow
def test_run_over_ssh_saves_the_outputs_of_one_inference(ssh_board, x86_lib, tmp_path):
    image = np.random.default_rng(3).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", image)
    result = run_cli("run", str(x86_lib), *ssh_board.args(), "--remote-python", PYTHON,
                     "--input", f"input={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz"))
    assert result.returncode == 0, result.stderr
    expected = runtime.load(x86_lib).run({"input": image})["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["logits"], expected, rtol=1e-5,
                               atol=1e-5)
    # verify runs the library on the board and ONNX Runtime here, on the same inputs.
    verify = run_cli("verify", str(x86_lib), "--reference", "zoo:squeezenet1_1",
                     *ssh_board.args(), "--remote-python", PYTHON,
                     "--input", f"input={tmp_path / 'x.npy'}")
    assert verify.returncode == 0, verify.stderr
    assert f"ran on {ssh_board.target} (RPC over SSH) (given inputs)" in verify.stdout
    other = tmp_path / "other.onnx"
    run_cli("zoo", "squeezenet1_1", "--seed", "7", "-o", str(other))
    differs = run_cli("verify", str(x86_lib), "--reference", str(other), *ssh_board.args(),
                      "--remote-python", PYTHON)
    assert differs.returncode == 1 and "MISMATCH" in differs.stdout
    assert ssh_board.processes() == []


# --- board check and TVM versions -----------------------------------------------------------


def test_board_check_shows_python_tvm_and_cpu_of_a_ready_board(ssh_board):
    result = run_cli("board", "check", *ssh_board.args(), "--remote-python", PYTHON)
    assert result.returncode == 0, result.stderr
    versions = probe.local_versions()
    assert f"apache-tvm: {versions['apache-tvm']} (same as here)" in result.stdout
    assert f"{os.cpu_count()} cores" in result.stdout
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("flags")).split()
    assert ("avx2+" if "avx2" in flags else "avx2-") in result.stdout
    assert "ready for edgec" in result.stdout


def test_board_check_reports_a_tvm_version_mismatch_and_what_to_install(ssh_board,
                                                                        old_tvm_python):
    result = run_cli("board", "check", *ssh_board.args(), "--remote-python", old_tvm_python)
    assert_clean_failure(result, "apache-tvm is 0.26.0")
    versions = probe.local_versions()
    assert f"apache-tvm: 0.26.0 (here: {versions['apache-tvm']})" in result.stdout
    assert (f"pip install apache-tvm=={versions['apache-tvm']} "
            f"apache-tvm-ffi=={versions['apache-tvm-ffi']} numpy") in result.stdout


def test_bench_over_ssh_refuses_a_board_with_another_tvm_version(ssh_board, x86_lib,
                                                                 old_tvm_python):
    result = run_cli("bench", str(x86_lib), *ssh_board.args(), "--remote-python",
                     old_tvm_python, "--runs", "1")
    assert_clean_failure(result, "0.26.0", probe.local_versions()["apache-tvm"], "pip install")
    assert ssh_board.processes() == []


# --- SSH failures: one line, quickly, naming the board and what to do ------------------------


def test_an_unreachable_board_fails_at_once(x86_lib):
    closed = free_port()
    started = time.monotonic()
    result = run_cli("deploy", str(x86_lib), "--ssh", f"root@127.0.0.1:{closed}")
    assert_clean_failure(result, "cannot reach", f"127.0.0.1:{closed}")
    result = run_cli("bench", str(x86_lib), "--rpc", f"127.0.0.1:{closed}")
    assert_clean_failure(result, "cannot reach", f"127.0.0.1:{closed}")
    assert time.monotonic() - started < 30  # two CLI starts; no connect timeout was waited out


def test_an_unknown_host_key_is_refused_until_accepted_and_then_recorded(ssh_board, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    result = run_cli("board", "check", *ssh_board.args(known_hosts=str(known)),
                     "--remote-python", PYTHON)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{ssh_board.host_key}.pub"],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert_clean_failure(result, "not in", fingerprint, "--accept-new-host-key")
    accepted = run_cli("board", "check", *ssh_board.args(known_hosts=str(known)),
                       "--remote-python", PYTHON, "--accept-new-host-key")
    assert accepted.returncode == 0, accepted.stderr
    again = run_cli("board", "check", *ssh_board.args(known_hosts=str(known)),
                    "--remote-python", PYTHON)
    assert again.returncode == 0, again.stderr
    assert known.read_text().split()[1:3] == ssh_board.host_key.with_suffix(
        ".pub").read_text().split()[:2]


def test_a_changed_host_key_is_refused_even_with_accept_new(ssh_board, tmp_path):
    other = (ssh_board.dir / "other_key.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_board.port} {' '.join(other)}\n")
    for extra in ([], ["--accept-new-host-key"]):
        result = run_cli("board", "check", *ssh_board.args(known_hosts=str(known)), *extra)
        assert_clean_failure(result, "host key", "impersonating", "ssh-keygen -R")


def test_a_login_with_an_unauthorized_key_fails_with_advice(ssh_board):
    result = run_cli("board", "check", *ssh_board.args(identity=str(ssh_board.dir / "other_key")))
    assert_clean_failure(result, "refused", f"127.0.0.1:{ssh_board.port}", "ssh-copy-id")


def test_profile_over_plain_rpc_is_refused_before_connecting(x86_lib):
    result = run_cli("bench", str(x86_lib), "--rpc", f"127.0.0.1:{free_port()}", "--profile")
    assert_clean_failure(result, "--profile", "--ssh")


# --- a direct TVM RPC server (x86) dying mid-benchmark -----------------------------------


@pytest.mark.slow
def test_bench_over_rpc_fails_fast_when_the_rpc_server_dies_mid_benchmark(x86_lib, tmp_path):
    log = tmp_path / "rpc.log"
    with stock_tvm_server("rpc_server", log) as (server, port):
        bench = subprocess.Popen([PYTHON, "-m", "edgec", "bench", str(x86_lib), "--rpc",
                                  f"127.0.0.1:{port}", "--runs", "100000",
                                  "--max-seconds", "3600"], cwd=REPO,
                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while "start serving" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # the library is uploaded and being timed
        os.killpg(server.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = bench.communicate(timeout=60)
    assert time.monotonic() - killed_at < 30
    assert_clean_failure(subprocess.CompletedProcess(bench.args, bench.returncode, "", stderr),
                         "RPC session", f"127.0.0.1:{port}")


# --- the emulated aarch64 board: `edgec board emulate`, and a tracker ------------------------


class EmulateCommand:
    """`edgec board emulate` running in the background, as a user would leave it."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([PYTHON, "-m", "edgec", "board", "emulate", "--port",
                                      str(self.port)], cwd=REPO, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = ""
        for line in self.proc.stdout:
            self.output += line
            if line.startswith("emulated aarch64 board ready"):
                return
        pytest.fail(f"edgec board emulate exited with {self.proc.wait()}:\n{self.output}")

    def stop(self) -> tuple[int, str]:
        if self.proc.stdout.closed:  # stopped already
            return self.proc.returncode, self.output
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        self.proc.wait(timeout=60)
        # read(), not communicate(): lines already buffered by the loop above are kept.
        self.output += self.proc.stdout.read()
        self.proc.stdout.close()
        return self.proc.returncode, self.output


@pytest.fixture(scope="module")
def emulated():
    command = EmulateCommand()
    yield command
    command.stop()


def server_processes(port: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline", "status"])
            if "tvm.exec.rpc_server" in " ".join(p.info["cmdline"] or [])
            and f"--port {port}" in " ".join(p.info["cmdline"] or [])
            and p.info["status"] != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_bench_over_rpc_on_the_emulated_aarch64_board(emulated, rpi4_lib, tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", str(rpi4_lib), "--rpc", f"127.0.0.1:{emulated.port}", "--runs",
                     "3", "--warmup", "1", "--max-seconds", "600", "--json", str(out),
                     timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["where"] == f"rpc 127.0.0.1:{emulated.port}" and report["runs"] == 3
    assert report["stats_ms"]["min"] > 0
    assert "its wall times mean nothing" in result.stderr  # qemu, not an ARM core's speed


@pytest.mark.slow
def test_run_over_rpc_on_the_emulated_board_equals_the_x86_reference(emulated, rpi4_lib,
                                                                     x86_lib, tmp_path):
    image = np.random.default_rng(21).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", image)
    result = run_cli("run", str(rpi4_lib), "--rpc", f"127.0.0.1:{emulated.port}", "--input",
                     f"input={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz"), timeout=300)
    assert result.returncode == 0, result.stderr
    want = runtime.load(x86_lib).run({"input": image})["logits"]
    got = np.load(tmp_path / "y.npz")["logits"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    verify = run_cli("verify", str(rpi4_lib), "--reference", "zoo:squeezenet1_1", "--rpc",
                     f"127.0.0.1:{emulated.port}", timeout=300)
    assert verify.returncode == 0, verify.stderr
    assert f"ran on rpc 127.0.0.1:{emulated.port} (seeded random inputs)" in verify.stdout


@pytest.mark.slow
def test_the_aarch64_board_refuses_an_x86_library_before_upload(emulated, x86_lib):
    result = run_cli("bench", str(x86_lib), "--rpc", f"127.0.0.1:{emulated.port}")
    assert_clean_failure(result, "x86_64", "aarch64")


@pytest.mark.slow
def test_bench_through_an_rpc_tracker_reaches_the_emulated_board(rpi4_lib, tmp_path):
    with stock_tvm_server("rpc_tracker", tmp_path / "tracker.log") as (_, port):
        key, json_out = "rpi4-emulated", tmp_path / "bench.json"
        with emulator.EmulatedBoard(tracker=("127.0.0.1", port), key=key):
            result = run_cli("bench", str(rpi4_lib), "--tracker", f"127.0.0.1:{port}",
                             "--key", key, "--runs", "2", "--warmup", "1", "--json",
                             str(json_out), timeout=300)
            unknown = run_cli("bench", str(rpi4_lib), "--tracker", f"127.0.0.1:{port}",
                              "--key", "jetson")
    assert result.returncode == 0, result.stderr
    assert json.loads(json_out.read_text())["where"] == f"tracker 127.0.0.1:{port} key {key}"
    assert_clean_failure(unknown, "jetson", key)  # the error lists the keys the tracker has


def test_board_emulate_explains_when_this_machine_cannot_emulate(tmp_path):
    result = run_cli("board", "emulate", env={"PATH": str(tmp_path)})  # no qemu on PATH
    assert_clean_failure(result, "qemu-user-static")


@pytest.mark.slow
def test_board_emulate_stops_cleanly_on_ctrl_c_and_leaves_nothing_running(emulated):
    # Last in this file: the other emulated-board tests share this module's board.
    assert server_processes(emulated.port), "the board was not serving"
    code, output = emulated.stop()
    assert code == 0, output
    assert f"edgec bench OUT.so --rpc 127.0.0.1:{emulated.port}" in output  # how to use it
    assert "emulated board stopped" in output
    assert server_processes(emulated.port) == []

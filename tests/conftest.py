"""Shared helpers: run the real `edgec` command and build small ONNX models for error cases."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent


# Under pytest-xdist two test files run at once on a 2-core machine: TVM's spinning thread
# pool, two threads per worker, then slowed inference many times over (squeezenet: 3 ms alone,
# 218 ms beside a test run). One thread each keeps both workers at full speed. Set before TVM
# starts its pool; CLI subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TVM_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def private_tuning_logs(tmp_path_factory):
    """Tests tune into, and compile from, a user tuning database of their own, never the
    one in ~/.cache/edgec (CLI subprocesses inherit the variable)."""
    os.environ["EDGEC_TUNING_LOGS"] = str(tmp_path_factory.mktemp("user-tuning-logs"))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `python -m edgec ARGS` as a user would, capturing text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgec", *args], capture_output=True, text=True,
        env=full_env, cwd=cwd or REPO, timeout=timeout,
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: exit 1, one 'error:' line on stderr naming the problem, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def assert_only_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error caught before any work: the 'error:' line is all there is, on stderr,
    and stdout stays empty (no banner, no progress, no frontend dump)."""
    line = assert_clean_failure(result, *needles)
    assert result.stderr.strip().splitlines() == [line], result.stderr
    assert result.stdout == "", result.stdout
    return line


def skip_unless_this_cpu_runs(target_name: str) -> None:
    """Skip, saying why, a test that runs `target_name`'s code in this process or a child
    of it: AVX-512 code on an AVX2-only CPU (Zen 1-3, Haswell) dies of SIGILL, which kills
    the pytest worker and with it the run."""
    from edgec import targets

    target = targets.load(target_name)
    if target.arch == "x86_64" and target.features_missing_here():
        pytest.skip(f"this CPU cannot run {target_name} code ({target.why_not_native()})")


def function_code(library: Path, objdump: str, name: str) -> str:
    """The disassembly of every symbol of the library whose name contains `name` (with the
    unnamed parallel-loop bodies that follow it)."""
    import shutil
    import subprocess

    assert shutil.which(objdump), f"{objdump} (binutils) is needed to inspect the code"
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)],
                          capture_output=True, text=True, check=True).stdout
    return "\n".join(part for part in text.split("\n\n")
                     if part.split(":", 1)[0].count(name) and not part.startswith("Disas"))


def weight_maker(rng, scale: float):
    """weight(name, shape): a float32 ONNX initializer of standard normal values x `scale`."""

    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    return weight


def save_model(nodes, inputs, outputs, inits, path: Path, opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def save_classifier(body, features: str, head: tuple[str, str], inits, size: int,
                    path: Path) -> Path:
    """A test net from a 3-channel `size` x `size` "input" through the `body` nodes to
    `features`, then global average pooling and a Gemm with the `head` (weight, bias)
    initializers into 10 "logits"."""
    nodes = [*body,
             helper.make_node("GlobalAveragePool", [features], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", *head], ["logits"], transB=1)]
    return save_model(
        nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits, path)


@pytest.fixture
def dynamic_conv_model(tmp_path: Path) -> Path:
    """A conv net with symbolic batch/height/width, as exported with dynamic axes: an image
    stem and a second conv."""
    rng = np.random.default_rng(1)
    stem = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    second = numpy_helper.from_array(
        (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), "w2")
    return save_model(
        [helper.make_node("Conv", ["image", "w"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y2"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y2"], ["out"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8, "h", "w"])],
        [stem, second], tmp_path / "dynamic.onnx",
    )


def leftovers(directory: Path) -> list[str]:
    """Files a failed command must not leave behind (artifacts and temp dirs)."""
    return sorted(p.name for p in directory.iterdir()
                  if p.suffix in (".so", ".json") or p.name.startswith(".edgec-"))


# --- A real OpenSSH server on loopback, standing in for a board reached over SSH -------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    """Wait until something accepts on 127.0.0.1:port; fail (never skip) with the log if not."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{proc.args[0]} did not listen on {port} within {timeout:g}s:\n{log.read_text()}")


@contextlib.contextmanager
def stock_tvm_server(module: str, log: Path):
    """`python -m tvm.exec.<module>` (rpc_server, rpc_tracker) on a free loopback port, in a
    process group of its own that is killed on exit; yields (process, port)."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", f"tvm.exec.{module}", "--host", "127.0.0.1", "--port", str(port),
             "--port-end", str(port + 1)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for_port(port, process, log)
        yield process, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class SshBoard:
    """Debian's sshd on 127.0.0.1 with its own host key, client key and known_hosts.

    Every process started through it carries EDGEC_TEST_BOARD=<marker> in its environment
    (sshd's SetEnv), so `processes()` finds exactly what a test left running "on the board".
    """

    def __init__(self, directory: Path):
        import getpass
        import shutil
        import uuid

        self.dir, self.port, self.marker = directory, free_port(), uuid.uuid4().hex
        self.user = getpass.getuser()
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if os.geteuid() != 0 or not Path(sshd).exists():
            pytest.fail(f"the SSH board needs root and openssh-server (sshd at {sshd})")
        for name in ("host_key", "client_key", "other_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(directory / name)], check=True)
        self.host_key, self.key = directory / "host_key", directory / "client_key"
        (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
        public = " ".join((directory / "host_key.pub").read_text().split()[:2])
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        config = directory / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}", "UsePAM no",
            "StrictModes no", f"PidFile {directory / 'sshd.pid'}", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes", "Subsystem sftp internal-sftp",
            f"SetEnv EDGEC_TEST_BOARD={self.marker}", "",
        ]))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
        self.log = directory / "sshd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, self.log)

    @property
    def target(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def args(self, **overrides: str) -> list[str]:
        """--ssh and login options for the CLI; overrides replace identity/known_hosts."""
        identity = overrides.get("identity", str(self.key))
        known = overrides.get("known_hosts", str(self.known_hosts))
        return ["--ssh", self.target, "--identity", identity, "--known-hosts", known]

    def processes(self) -> list[str]:
        """Live processes started through this sshd: pid and command line of each."""
        found = []
        needle = f"EDGEC_TEST_BOARD={self.marker}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.append(f"{entry.name}: {cmdline[:120]}")
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def ssh_board(tmp_path_factory):
    board = SshBoard(tmp_path_factory.mktemp("sshd"))
    yield board
    board.stop()


@pytest.fixture(scope="session")
def emulated_board():
    """One emulated aarch64 board per test process, started by the first test that asks.
    A start costs ~25 s under qemu (most of it TVM's import there); nine tests each started
    their own. The stock RPC server serves one session at a time, and a worker runs its
    tests one after another: each test must drop its sessions (`del`) before it ends.
    Tests that check the server's log read it from `board_log_mark` on."""
    from edgec.boards import emulator

    board = emulator.EmulatedBoard().start()
    yield board
    board.stop()


def board_log_mark(board) -> int:
    """Where the board's server log ends now: pass it to board_log_since."""
    return board.log_path.stat().st_size


def board_log_since(board, mark: int) -> str:
    """What the board's server logged after `mark` (board_log_mark)."""
    with open(board.log_path, "rb") as log:
        log.seek(mark)
        return log.read().decode(errors="replace")

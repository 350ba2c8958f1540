"""edgec run, verify, bench, deploy and board: the commands that run models, here or on a board."""

from __future__ import annotations

from pathlib import Path

import click

from edgec.cli.common import ProgressBar, parse_input_files, say
from edgec.errors import EdgecError


def _ssh_options(func=None, *, required: bool = False):
    """--ssh USER@HOST[:PORT] and how to log in there."""
    if func is None:  # used as @_ssh_options(required=True)
        return lambda f: _ssh_options(f, required=required)
    options = [
        click.option("--ssh", "ssh_target", metavar="USER@HOST[:PORT]", required=required,
                     help="A board over SSH."),
        click.option("-i", "--identity", type=click.Path(dir_okay=False),
                     help="SSH private key (default: ssh-agent, then ~/.ssh/id_*)."),
        click.option("--known-hosts", type=click.Path(dir_okay=False),
                     help="Trusted host keys (default: ~/.ssh/known_hosts)."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="Trust a board seen for the first time, and record its key."),
        click.option("--remote-python", default="python3", show_default=True,
                     help="The board's Python (with TVM and numpy)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def board_options(func):
    """Where run and bench execute: here, or a board by --rpc, --tracker + --key or --ssh."""
    func = _ssh_options(func)
    for option in reversed([
        click.option("--rpc", metavar="HOST:PORT", help="A board's TVM RPC server."),
        click.option("--tracker", metavar="HOST:PORT", help="A TVM RPC tracker (with --key)."),
        click.option("--key", help="The board's key at the tracker, e.g. rpi4."),
    ]):
        func = option(func)
    return func


def _ssh_login(ssh_target, identity, known_hosts, accept_new_host_key, **_unused):
    from edgec.boards import ssh

    if not ssh_target:
        if identity or known_hosts or accept_new_host_key:
            raise EdgecError("--identity, --known-hosts and --accept-new-host-key need --ssh")
        return None
    return ssh.SshOptions(ssh_target, identity, known_hosts, accept_new_host_key,
                          ask_secret=ssh.terminal_prompt())


def board_endpoint(rpc, tracker, key, remote_python, **login):
    """None (this machine) or the board the options name."""
    from edgec.boards import sessions

    ssh = _ssh_login(**login)
    if not (rpc or tracker or key or ssh):
        return None
    return sessions.BoardEndpoint(
        rpc=sessions.parse_endpoint(rpc, "--rpc") if rpc else None,
        tracker=sessions.parse_endpoint(tracker, "--tracker") if tracker else None,
        key=key, ssh=ssh, remote_python=remote_python)



@click.command("run", short_help="Run one inference of a library, here or on a board.")
@click.argument("library", type=click.Path())
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="Input tensor (repeatable); random inputs when omitted.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save outputs as .npz.")
@board_options
def run_cmd(library, inputs, output, **board_options) -> None:
    """Run one inference of a compiled LIBRARY here, or on a board (--rpc, --tracker, --ssh)."""
    import numpy as np

    from edgec import check
    from edgec.boards import sessions

    if output and not Path(output).resolve().parent.is_dir():  # before a slow inference
        raise EdgecError(f"-o {output}: folder {Path(output).parent} does not exist; "
                         "create it or choose another path")
    with sessions.open_board(board_endpoint(**board_options), progress=say) as board:
        model = board.load(library)
        if not inputs:
            say("no --input given: running on seeded random inputs")
        arrays = (check.load_inputs(parse_input_files(inputs)) if inputs
                  else check.random_inputs(model.info.inputs))
        outputs = model.run(arrays)
        del model  # its remote objects go before the session does
    for name, value in outputs.items():
        click.echo(f"{name}: shape {value.shape} {value.dtype}  min {value.min():.4g}  "
                   f"max {value.max():.4g}  mean {value.mean():.4g}")
    if output:
        try:
            np.savez(output, **outputs)
        except OSError as err:
            raise EdgecError(f"-o {output}: cannot write it ({err.strerror})") from err
        click.echo(f"wrote {output}")


@click.command("verify",
               short_help="Compare a library with its source model; exit 1 past tolerance.")
@click.argument("library", type=click.Path())
@click.option("--reference", required=True,
              help="The model it was compiled from: .onnx (run in ONNX Runtime), .tflite (run in "
                   "LiteRT) or zoo:NAME.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="Input tensor (repeatable); seeded random inputs when omitted.")
@click.option("--rtol", default=None, type=float,
              help="Max abs error relative to max |ref| (default: what compile used for this "
                   "build: 1e-3 for float, looser for INT8/FP16).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the comparison as JSON.")
@board_options
def verify_cmd(library, reference, inputs, rtol, json_path, **board_options) -> None:
    """Run LIBRARY (here or on a board) and the reference model on the same inputs; exit 1
    past tolerance."""
    from edgec import check, frontend
    from edgec import reference as references
    from edgec.boards import sessions
    from edgec.package import read_info

    info = read_info(library)
    default_rtol, min_cosine, why = check.verify_tolerance(info.check, info.applied)
    source = frontend.read_reference(reference)  # a bad --reference fails before the board
    with sessions.open_board(board_endpoint(**board_options), progress=say) as board:
        model = board.load(library)
        arrays = (check.load_inputs(parse_input_files(inputs)) if inputs
                  else check.random_inputs(model.info.inputs))
        outputs = model.run(arrays)
        where = board.where
        del model  # its remote objects go before the session does
    report = check.compare(outputs, references.outputs(source, arrays),
                           rtol if rtol is not None else default_rtol, min_cosine)
    click.echo(report.summary())
    click.echo(f"ran on {where} ({'given' if inputs else 'seeded random'} inputs); tolerance "
               f"rtol {rtol if rtol is not None else default_rtol:.3g}, cosine >= "
               f"{min_cosine:.4g}: " + ("--rtol" if rtol is not None else why))
    if json_path:
        Path(json_path).write_text(report.to_json())
    if not report.ok:
        raise EdgecError(f"{library} differs from {reference} beyond tolerance")


@click.command("bench",
               short_help="Measure a library's latency, or estimate it for an absent board.")
@click.argument("library", type=click.Path())
@click.option("--runs", default=100, show_default=True,
              help="Timed inferences (fewer if --max-seconds ends them first).")
@click.option("--warmup", default=10, show_default=True,
              help="Untimed inferences first (at most a fifth of --max-seconds).")
@click.option("--max-seconds", default=30.0, show_default=True,
              help="Stop after this much wall time, whichever of it and --runs comes first.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the latencies and their statistics as JSON.")
@click.option("--profile", is_flag=True, help="Add per-operator times (here, or with --ssh).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a latency histogram PNG.")
@click.option("--estimate", "estimate_cpu", is_flag=False, flag_value="", default=None,
              metavar="[CPU]",
              help="No board: estimate one single-thread inference on CPU (cortex-a53, "
                   "cortex-a55, cortex-a72, cortex-a76, neoverse-n1, x86-host; default: the "
                   "library's target's board) from instructions counted under qemu and "
                   "priced with llvm-mca.")
@board_options
def bench_cmd(library, runs, warmup, max_seconds, json_path, profile, plot, estimate_cpu,
              **board_options) -> None:
    """Measure the latency of LIBRARY here, or on a board (--rpc, --tracker or --ssh), or
    estimate it for a board that is absent (--estimate)."""
    from edgec import check, latency
    from edgec.boards import sessions

    if estimate_cpu is not None:
        _estimate(library, estimate_cpu, json_path)
        return
    endpoint = board_endpoint(**board_options)
    if _looks_emulated(library, endpoint):
        say("note: an aarch64 board on this machine's loopback without --ssh is most likely "
            "edgec's emulated board (qemu): its wall times mean nothing. For an ARM figure "
            f"use: edgec bench {library} --estimate CPU")
    say(f"bench {library}: {runs} runs after {warmup} warm-up, at most {max_seconds:g} s, "
        f"on {endpoint.where if endpoint else 'this machine'}")
    with sessions.open_board(endpoint, profile=profile, progress=say) as board:
        model = board.load(library)
        inputs = check.random_inputs(model.info.inputs)
        with ProgressBar("{task.description}", "{task.completed}/{task.total} runs") as bar:
            report = latency.benchmark(model, inputs, runs=runs, warmup=warmup,
                                       max_seconds=max_seconds, where=board.where,
                                       progress=bar.update)
        if profile:
            report = report.with_profile(board.profile(model, inputs))
        del model  # its remote objects go before the session does
    click.echo(report.summary())
    if json_path:
        Path(json_path).write_text(report.to_json())
    if plot:
        click.echo(f"wrote {latency.plot_latencies(report, plot)}")


def _looks_emulated(library: str, endpoint) -> bool:
    import platform

    from edgec.package import read_info

    if endpoint is None or endpoint.ssh:
        return False
    host = (endpoint.rpc or endpoint.tracker)[0]
    try:
        arch = read_info(library).arch
    except EdgecError:
        return False  # the session reports the broken library itself
    return host in ("127.0.0.1", "localhost", "::1") and arch != platform.machine()


def _estimate(library: str, cpu: str, json_path: str | None) -> None:
    from edgec.boards.estimate import board_defaults

    report = board_defaults.estimate_library(Path(library), cpu or None, progress=say)
    click.echo(report.summary())
    if json_path:
        Path(json_path).write_text(report.to_json())


@click.command("deploy", short_help="Copy a library to a board over SSH and check it there.")
@click.argument("library", type=click.Path())
@_ssh_options(required=True)
@click.option("--dest", default="~/edgec", show_default=True, help="Folder on the board.")
@click.option("--bundle", is_flag=True,
              help="Upload a bundle (library + TVM runtime + loader + run.py) into "
                   "DEST/<name>-bundle: the board then needs Python 3 and numpy, no TVM.")
@click.option("--smoke", is_flag=True,
              help="Then run one inference there (needs TVM there, or numpy with --bundle).")
def deploy_cmd(library, ssh_target, identity, known_hosts, accept_new_host_key, remote_python,
               dest, bundle, smoke) -> None:
    """Copy LIBRARY and its metadata to a board over SSH (SFTP) and check its sha256 there."""
    from edgec.boards import deploy

    say(f"deploy {library} to {ssh_target}:{dest}" + (", then a smoke run" if smoke else ""))
    report = deploy.deploy(library, ssh_target, identity=identity, dest=dest,
                           accept_new_host_key=accept_new_host_key, known_hosts=known_hosts,
                           smoke=smoke, remote_python=remote_python, bundle=bundle,
                           progress=say)
    click.echo(report.summary())


@click.command("bundle", short_help="Write a folder that runs a library on a board without TVM.")
@click.argument("library", type=click.Path())
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="The bundle folder to create (new or empty).")
@click.option("--cpp", is_flag=True,
              help="Also cross-compile the C++ runner (cpp/run_model): no Python needed.")
@click.option("--python", "python_version", metavar="X.Y",
              help="The board's Python, for the tvm_ffi it gets (default: this one for a "
                   "library for this machine, else 3.11).")
def bundle_cmd(library, output, cpp, python_version) -> None:
    """Write LIBRARY, the TVM runtime for its architecture (no compiler), edgec's loader and
    run.py into a folder a board runs with Python 3 and numpy only, or with --cpp, with no
    Python at all."""
    from edgec.boards import bundle

    say(f"bundle {library} into {output}" + (" with the C++ runner" if cpp else ""))
    report = bundle.make_bundle(library, output, cpp=cpp, python_version=python_version,
                                progress=say)
    click.echo(report.summary())


@click.group("board", short_help="Inspect a board over SSH, or run an emulated aarch64 board.")
def board_group() -> None:
    """Inspect a board over SSH, or run an emulated aarch64 board."""


@board_group.command("check")
@_ssh_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write what was found as JSON.")
def board_check_cmd(json_path, remote_python, **login) -> None:
    """Show a board's Python, TVM and CPU features, and what to install there; exit 1 if
    edgec cannot run models on it yet."""
    from edgec.boards import probe

    options = _ssh_login(**login)
    if options is None:
        raise EdgecError("board check needs --ssh USER@HOST[:PORT]")
    info = probe.inspect(options, remote_python)
    want = probe.local_versions()
    click.echo(info.summary(want))
    if json_path:
        Path(json_path).write_text(info.to_json())
    problems = info.problems(want, rpc=True)
    if problems:
        raise EdgecError(f"board {options.where} is not ready: {problems[0]} (fix above)")


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


@board_group.command("emulate")
@click.option("--port", default=0, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--tracker", metavar="HOST:PORT", help="Register with this TVM RPC tracker.")
@click.option("--key", default="", help="The key to register under, with --tracker.")
def board_emulate_cmd(port, tracker, key) -> None:
    """Serve TVM RPC from an emulated aarch64 board (qemu) on 127.0.0.1 until Ctrl-C."""
    import signal
    import time

    from edgec.boards import emulator, sessions

    emulator.check_host()
    tracker_address = sessions.parse_endpoint(tracker, "--tracker") if tracker else None
    board = emulator.EmulatedBoard(port=port, tracker=tracker_address, key=key)
    emulator.prepare(board.cache, progress=say)  # once per machine: ~400 MB of arm64 packages
    say("starting the board (importing TVM under qemu takes ~25 s)")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the board cleanly too
    # Started from a script in the background, a process inherits SIGINT ignored (POSIX) and
    # Ctrl-C / `kill -INT` did nothing: the tests waited 60 s and left the board running.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with board:
        use = f"--tracker {tracker} --key {key}" if tracker else f"--rpc 127.0.0.1:{board.port}"
        click.echo(f"emulated aarch64 board ready: TVM RPC on 127.0.0.1:{board.port}\n"
                   f"  edgec bench OUT.so {use}   (OUT.so built with --target rpi4 or another "
                   "aarch64 target)\n  Ctrl-C stops it")
        try:
            while board.running:
                time.sleep(0.5)
            raise EdgecError(f"the emulated board's RPC server exited; see {board.log_path}")
        except KeyboardInterrupt:
            pass
    click.echo("emulated board stopped")

"""The `edgec` command: a thin shell that parses options, calls the API and prints results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgec.errors import EdgecError

DEFAULT_MODEL = "zoo:mobilenet_v2"
DEFAULT_TARGET = "x86_64"


def _say(message: str) -> None:
    click.echo(f"[edgec] {message}", err=True)


def _input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from edgec.frontend import parse_input_shape

    return dict(parse_input_shape(v) for v in values)


def _input_files(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise EdgecError(f'--input "{value}" is not NAME=file.npy')
        pairs[name] = path
    return pairs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgec")
def cli() -> None:
    """edgec: compile CNNs (ONNX) for edge CPUs with Apache TVM, check them, run them."""


@cli.command("targets")
def targets_cmd() -> None:
    """List the shipped targets."""
    from edgec import targets

    for name in targets.names():
        target = targets.load(name)
        click.echo(
            f"{name:<15} {target.arch:<8} layout {target.default_layout:<6} {target.description}"
        )


@cli.command("zoo")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write the .onnx.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
def zoo_cmd(name: str | None, output: str | None, seed: int) -> None:
    """List the built-in models, or write model NAME as ONNX."""
    from edgec import zoo

    if name is None:
        for model_name in zoo.names():
            click.echo(f"{model_name:<20} {zoo.describe(model_name)}")
        return
    path = Path(output or f"{name}.onnx")
    zoo.save(name, path, seed=seed)
    click.echo(f"wrote {path}")


@cli.command("compile")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("-t", "--target", default=DEFAULT_TARGET, show_default=True,
              help="Target name (see `edgec targets`) or path to a target .toml.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output library (default: build/<model>-<target>.so).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,...",
              help="Fix an input's shape (repeatable).")
@click.option("--layout", default="auto", show_default=True,
              type=click.Choice(["auto", "NCHW", "NHWC", "NCHWc"]))
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare with ONNX Runtime before writing (random inputs; quantized "
                   "builds: calibration inputs).")
@click.option("--tuning-logs", type=click.Path(file_okay=False),
              help="Tuning database folder (default: tuning_logs/<target> when present).")
@click.option("--quantize", type=click.Choice(["int8", "fp16"]),
              help="INT8 (needs --calib) or FP16 weights and activations.")
@click.option("--calib", metavar="PATH|random",
              help="Calibration data: a folder of images / .npy / .npz, one such file, or "
                   "'random' (accuracy then means nothing).")
@click.option("--calib-method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "entropy", "percentile"]))
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="INT8 weight scales per output channel or per tensor.")
@click.option("--calib-mean", default="0.485,0.456,0.406", show_default=True,
              help="Per-channel mean of images scaled to [0, 1].")
@click.option("--calib-std", default="0.229,0.224,0.225", show_default=True)
@click.option("--calib-channels", default="RGB", show_default=True,
              type=click.Choice(["RGB", "BGR"]))
@click.option("--calib-layout", default="auto", show_default=True,
              type=click.Choice(["auto", "NCHW", "NHWC"]), help="How images fill the input.")
@click.option("--calib-limit", default=32, show_default=True, help="Use at most N samples.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the result (and the accuracy report) as JSON.")
def compile_cmd(model, target, output, input_shapes, layout, check, tuning_logs, quantize,
                calib, calib_method, per_channel, calib_mean, calib_std, calib_channels,
                calib_layout, calib_limit, json_path) -> None:
    """Compile MODEL (an .onnx file or zoo:NAME; default zoo:mobilenet_v2) to a .so."""
    from edgec import pipeline
    from edgec.quantize import CalibOptions, parse_floats

    stem = model.split(":", 1)[1] if model.startswith("zoo:") else Path(model).stem
    target_stem = Path(target).stem
    suffix = f"-{quantize}" if quantize else ""
    options = pipeline.CompileOptions(
        model=model,
        output=Path(output or f"build/{stem}-{target_stem}{suffix}.so"),
        target=target,
        input_shapes=_input_shapes(input_shapes),
        layout=layout,
        check=check,
        tuning_logs=Path(tuning_logs) if tuning_logs else None,
        quantize=quantize, calib=calib, calib_method=calib_method, per_channel=per_channel,
        calib_options=CalibOptions(
            mean=parse_floats(calib_mean, "--calib-mean"),
            std=parse_floats(calib_std, "--calib-std"),
            channel_order=calib_channels, layout=calib_layout, limit=calib_limit),
    )
    _say("compile with:\n" + options.display())
    if calib == "random":
        _say("WARNING: --calib random calibrates on noise: accuracy numbers mean nothing")
    result = pipeline.compile_model(options, progress=_say)
    click.echo(result.summary())
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))


@cli.command("tune")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("-t", "--target", default=DEFAULT_TARGET, show_default=True)
@click.option("--trials", "trials_per_task", default=64, show_default=True,
              help="Measured trials per task (tasks that have them are skipped).")
@click.option("--total-trials", type=int, help="Cap on trials over all tasks in this run.")
@click.option("--budget", help="Stop after this long, e.g. 20m (the batch in flight is kept).")
@click.option("--rpc", metavar="HOST:PORT", help="Measure on a board's TVM RPC server.")
@click.option("--tracker", metavar="HOST:PORT", help="Measure through a TVM RPC tracker.")
@click.option("--key", help="The board's key at the tracker.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,...")
@click.option("--layout", default="auto", show_default=True,
              type=click.Choice(["auto", "NCHW", "NHWC", "NCHWc"]))
@click.option("--tuning-logs", type=click.Path(file_okay=False),
              help="Database folder (default: tuning_logs/<target>).")
@click.option("--status", is_flag=True, help="Show what the database covers for MODEL; no tuning.")
def tune_cmd(model, target, trials_per_task, total_trials, budget, rpc, tracker, key,
             input_shapes, layout, tuning_logs, status) -> None:
    """Autotune MODEL's tasks for TARGET with MetaSchedule (XGBoost cost model)."""
    from edgec import pipeline, remote, tune

    options = tune.TuneOptions(
        trials_per_task=trials_per_task,
        total_trials=total_trials,
        budget_seconds=tune.parse_budget(budget) if budget else None,
        rpc=remote.parse_endpoint(rpc, "--rpc") if rpc else None,
        tracker=remote.parse_endpoint(tracker, "--tracker") if tracker else None,
        key=key,
        logs=Path(tuning_logs) if tuning_logs else None,
        dry_run=status,
    )
    _say(f"tune {model} for {target}: {trials_per_task} trials per task, layout {layout}")
    with _TuneBar() as bar:
        report = pipeline.tune_model(model, target, options, layout_choice=layout,
                                     input_shapes=_input_shapes(input_shapes),
                                     progress=bar.update)
    click.echo(report.summary())


class _TuneBar:
    """A live bar: trials done, elapsed, ETA and the estimated end-to-end latency."""

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("tuning"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("tune", total=None, note="")
        return self

    def update(self, report, total: int) -> None:
        est = report.estimated_ms
        note = f"est. {est:.2f} ms" if est else f"{report.trials_per_minute:.0f} trials/min"
        self._progress.update(self._task, completed=report.trials_run, total=total, note=note)

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


def _ssh_options(func):
    """--ssh USER@HOST[:PORT] and how to log in there."""
    options = [
        click.option("--ssh", "ssh_target", metavar="USER@HOST[:PORT]", help="A board over SSH."),
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


def _board_options(func):
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
    from edgec import ssh

    if not ssh_target:
        if identity or known_hosts or accept_new_host_key:
            raise EdgecError("--identity, --known-hosts and --accept-new-host-key need --ssh")
        return None
    return ssh.SshOptions(ssh_target, identity, known_hosts, accept_new_host_key,
                          ask_secret=ssh.terminal_prompt())


def _board_endpoint(rpc, tracker, key, remote_python, **login):
    """None (this machine) or the board the options name."""
    from edgec import remote

    ssh = _ssh_login(**login)
    if not (rpc or tracker or key or ssh):
        return None
    return remote.BoardEndpoint(
        rpc=remote.parse_endpoint(rpc, "--rpc") if rpc else None,
        tracker=remote.parse_endpoint(tracker, "--tracker") if tracker else None,
        key=key, ssh=ssh, remote_python=remote_python)


@cli.command("run")
@click.argument("library", type=click.Path())
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="Input tensor (repeatable); random inputs when omitted.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save outputs as .npz.")
@_board_options
def run_cmd(library, inputs, output, **board_options) -> None:
    """Run one inference of a compiled LIBRARY here, or on a board (--rpc, --tracker, --ssh)."""
    import numpy as np

    from edgec import remote, verify

    with remote.open_board(_board_endpoint(**board_options), progress=_say) as board:
        model = board.load(library)
        arrays = (verify.load_inputs(_input_files(inputs)) if inputs
                  else verify.random_inputs(model.info.inputs))
        outputs = model.run(arrays)
        del model  # its remote objects go before the session does
    for name, value in outputs.items():
        click.echo(f"{name}: shape {value.shape} {value.dtype}  min {value.min():.4g}  "
                   f"max {value.max():.4g}  mean {value.mean():.4g}")
    if output:
        np.savez(output, **outputs)
        click.echo(f"wrote {output}")


@cli.command("verify")
@click.argument("library", type=click.Path())
@click.option("--reference", required=True, help="The ONNX model (path or zoo:NAME).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy")
@click.option("--rtol", default=None, type=float, help="Max abs error relative to max |ref|.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def verify_cmd(library, reference, inputs, rtol, json_path) -> None:
    """Run LIBRARY and the ONNX reference on the same inputs; exit 1 past tolerance."""
    from edgec import frontend, runtime, verify

    model = runtime.load(library)
    arrays = (verify.load_inputs(_input_files(inputs)) if inputs
              else verify.random_inputs(model.info.inputs))
    onnx_model, _ = frontend.read_onnx(reference)
    report = verify.compare(model.run(arrays), verify.onnxruntime_outputs(onnx_model, arrays),
                            rtol if rtol is not None else verify.DEFAULT_RTOL)
    click.echo(report.summary())
    if json_path:
        Path(json_path).write_text(report.to_json())
    if not report.ok:
        raise EdgecError(f"{library} differs from {reference} beyond tolerance")


@cli.command("bench")
@click.argument("library", type=click.Path())
@click.option("--runs", default=100, show_default=True)
@click.option("--warmup", default=10, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--profile", is_flag=True, help="Add per-operator times (here, or with --ssh).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a latency histogram PNG.")
@_board_options
def bench_cmd(library, runs, warmup, json_path, profile, plot, **board_options) -> None:
    """Measure the latency of LIBRARY here, or on a board (--rpc, --tracker or --ssh)."""
    from edgec import bench, remote, verify

    endpoint = _board_endpoint(**board_options)
    _say(f"bench {library}: {runs} runs after {warmup} warm-up, "
         f"on {endpoint.where if endpoint else 'this machine'}")
    with remote.open_board(endpoint, profile=profile, progress=_say) as board:
        model = board.load(library)
        inputs = verify.random_inputs(model.info.inputs)
        report = bench.benchmark(model, inputs, runs=runs, warmup=warmup, where=board.where)
        if profile:
            report = report.with_profile(board.profile(model, inputs))
        del model  # its remote objects go before the session does
    click.echo(report.summary())
    if json_path:
        Path(json_path).write_text(report.to_json())
    if plot:
        click.echo(f"wrote {bench.plot_latencies(report, plot)}")


def main() -> None:
    """Entry point: user errors become one line and exit 1; bugs keep their traceback."""
    try:
        cli.main(standalone_mode=False)
    except EdgecError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)


@cli.command("deploy")
@click.argument("library", type=click.Path())
@_ssh_options
@click.option("--dest", default="~/edgec", show_default=True, help="Folder on the board.")
@click.option("--smoke", is_flag=True, help="Then run one inference there (needs TVM there).")
def deploy_cmd(library, ssh_target, identity, known_hosts, accept_new_host_key, remote_python,
               dest, smoke) -> None:
    """Copy LIBRARY and its metadata to a board over SSH (SFTP) and check its sha256 there."""
    from edgec import deploy

    if not ssh_target:
        raise EdgecError("deploy needs --ssh USER@HOST[:PORT]")
    _say(f"deploy {library} to {ssh_target}:{dest}" + (", then a smoke run" if smoke else ""))
    report = deploy.deploy(library, ssh_target, identity=identity, dest=dest,
                           accept_new_host_key=accept_new_host_key, known_hosts=known_hosts,
                           smoke=smoke, remote_python=remote_python, progress=_say)
    click.echo(report.summary())


@cli.group("board")
def board_group() -> None:
    """Inspect a board over SSH, or run an emulated aarch64 board."""


@board_group.command("check")
@_ssh_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def board_check_cmd(json_path, remote_python, **login) -> None:
    """Show a board's Python, TVM and CPU features, and what to install there; exit 1 if
    edgec cannot run models on it yet."""
    from edgec import board

    options = _ssh_login(**login)
    if options is None:
        raise EdgecError("board check needs --ssh USER@HOST[:PORT]")
    info = board.inspect(options, remote_python)
    want = board.local_versions()
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

    from edgec import emulator, remote

    emulator.check_host()
    tracker_address = remote.parse_endpoint(tracker, "--tracker") if tracker else None
    board = emulator.EmulatedBoard(port=port, tracker=tracker_address, key=key)
    emulator.prepare(board.cache, progress=_say)  # once per machine: ~400 MB of arm64 packages
    _say("starting the board (importing TVM under qemu takes ~25 s)")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the board cleanly too
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

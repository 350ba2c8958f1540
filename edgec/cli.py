"""The `edgec` command: a thin shell that parses options, calls the API and prints results."""

from __future__ import annotations

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
              help="Compare with ONNX Runtime on random inputs before writing.")
@click.option("--tuning-logs", type=click.Path(file_okay=False),
              help="Tuning database folder (default: tuning_logs/<target> when present).")
def compile_cmd(model, target, output, input_shapes, layout, check, tuning_logs) -> None:
    """Compile MODEL (an .onnx file or zoo:NAME; default zoo:mobilenet_v2) to a .so."""
    from edgec import pipeline

    stem = model.split(":", 1)[1] if model.startswith("zoo:") else Path(model).stem
    target_stem = Path(target).stem
    options = pipeline.CompileOptions(
        model=model,
        output=Path(output or f"build/{stem}-{target_stem}.so"),
        target=target,
        input_shapes=_input_shapes(input_shapes),
        layout=layout,
        check=check,
        tuning_logs=Path(tuning_logs) if tuning_logs else None,
    )
    _say("compile with:\n" + options.display())
    result = pipeline.compile_model(options, progress=_say)
    click.echo(result.summary())


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
    from edgec import pipeline, tune

    options = tune.TuneOptions(
        trials_per_task=trials_per_task,
        total_trials=total_trials,
        budget_seconds=tune.parse_budget(budget) if budget else None,
        rpc=tune.parse_endpoint(rpc, "--rpc") if rpc else None,
        tracker=tune.parse_endpoint(tracker, "--tracker") if tracker else None,
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


@cli.command("run")
@click.argument("library", type=click.Path())
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="Input tensor (repeatable); random inputs when omitted.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save outputs as .npz.")
def run_cmd(library, inputs, output) -> None:
    """Run one inference of a compiled LIBRARY on this machine."""
    import numpy as np

    from edgec import runtime, verify

    model = runtime.load(library)
    arrays = (verify.load_inputs(_input_files(inputs)) if inputs
              else verify.random_inputs(model.info.inputs))
    outputs = model.run(arrays)
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
def bench_cmd(library, runs, warmup, json_path) -> None:
    """Measure the latency of LIBRARY on this machine."""
    from edgec import bench, runtime, verify

    model = runtime.load(library)
    report = bench.benchmark(model, verify.random_inputs(model.info.inputs), runs=runs,
                             warmup=warmup)
    click.echo(report.summary())
    if json_path:
        Path(json_path).write_text(report.to_json())


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

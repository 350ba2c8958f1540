"""edgec targets, zoo, compile and tune: the commands that work on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.cli.common import DEFAULT_MODEL, DEFAULT_TARGET, parse_input_shapes, say


@click.command("targets")
def targets_cmd() -> None:
    """List the shipped targets."""
    from edgec import targets

    for name in targets.names():
        target = targets.load(name)
        click.echo(
            f"{name:<15} {target.arch:<8} layout {target.default_layout:<6} {target.description}"
        )


@click.command("zoo")
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


@click.command("compile")
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
        input_shapes=parse_input_shapes(input_shapes),
        layout=layout,
        check=check,
        tuning_logs=Path(tuning_logs) if tuning_logs else None,
        quantize=quantize, calib=calib, calib_method=calib_method, per_channel=per_channel,
        calib_options=CalibOptions(
            mean=parse_floats(calib_mean, "--calib-mean"),
            std=parse_floats(calib_std, "--calib-std"),
            channel_order=calib_channels, layout=calib_layout, limit=calib_limit),
    )
    say("compile with:\n" + options.display())
    if calib == "random":
        say("WARNING: --calib random calibrates on noise: accuracy numbers mean nothing")
    result = pipeline.compile_model(options, progress=say)
    click.echo(result.summary())
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))


@click.command("tune")
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
@click.option("--quantize", type=click.Choice(["int8", "fp16"]),
              help="Tune the quantized model's tasks (as compile --quantize builds them).")
@click.option("--calib", metavar="PATH|random", help="Calibration data, as for compile.")
@click.option("--calib-method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "entropy", "percentile"]))
@click.option("--per-channel/--per-tensor", default=True, show_default=True)
def tune_cmd(model, target, trials_per_task, total_trials, budget, rpc, tracker, key,
             input_shapes, layout, tuning_logs, status, quantize, calib, calib_method,
             per_channel) -> None:
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
    shapes = parse_input_shapes(input_shapes)
    quantization = pipeline.CompileOptions(
        model=model, output=Path("unused.so"), target=target, input_shapes=shapes,
        layout=layout, quantize=quantize, calib=calib, calib_method=calib_method,
        per_channel=per_channel) if quantize else None
    say(f"tune {model}{f' ({quantize})' if quantize else ''} for {target}: "
        f"{trials_per_task} trials per task, layout {layout}")
    with _TuneBar() as bar:
        report = pipeline.tune_model(model, target, options, layout_choice=layout,
                                     input_shapes=shapes, progress=bar.update,
                                     quantization=quantization)
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


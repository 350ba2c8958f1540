"""edgec targets, zoo, compile and tune: the commands that work on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_TARGET,
    parse_input_shapes,
    quantization_from,
    quantize_options,
    say,
)


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
@quantize_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the result (and the accuracy report) as JSON.")
def compile_cmd(model, target, output, input_shapes, layout, check, tuning_logs, json_path,
                **quantize_kwargs) -> None:
    """Compile MODEL (an .onnx file or zoo:NAME; default zoo:mobilenet_v2) to a .so."""
    from edgec import pipeline

    quantization = quantization_from(quantize_kwargs)
    stem = model.split(":", 1)[1] if model.startswith("zoo:") else Path(model).stem
    target_stem = Path(target).stem
    suffix = f"-{quantization.mode}" if quantization.mode else ""
    options = pipeline.CompileOptions(
        model=model,
        output=Path(output or f"build/{stem}-{target_stem}{suffix}.so"),
        target=target,
        input_shapes=parse_input_shapes(input_shapes),
        layout=layout,
        check=check,
        tuning_logs=Path(tuning_logs) if tuning_logs else None,
        quantization=quantization,
    )
    say("compile with:\n" + options.display())
    if quantization.calib == "random":
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
@quantize_options
def tune_cmd(model, target, trials_per_task, total_trials, budget, rpc, tracker, key,
             input_shapes, layout, tuning_logs, status, **quantize_kwargs) -> None:
    """Autotune MODEL's tasks for TARGET with MetaSchedule (XGBoost cost model)."""
    from edgec import pipeline, tune
    from edgec.boards import sessions

    options = tune.TuneOptions(
        trials_per_task=trials_per_task,
        total_trials=total_trials,
        budget_seconds=tune.parse_budget(budget) if budget else None,
        rpc=sessions.parse_endpoint(rpc, "--rpc") if rpc else None,
        tracker=sessions.parse_endpoint(tracker, "--tracker") if tracker else None,
        key=key,
        logs=Path(tuning_logs) if tuning_logs else None,
        dry_run=status,
    )
    shapes = parse_input_shapes(input_shapes)
    quantization = quantization_from(quantize_kwargs)
    mode = quantization.mode
    say(f"tune {model}{f' ({mode})' if mode else ''} for {target}: "
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


"""edgec targets, zoo, compile and tune: the commands that work on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgec.cli.board_commands import board_endpoint, board_options
from edgec.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_TARGET,
    INPUT_SHAPE_HELP,
    LAYOUT_HELP,
    ProgressBar,
    parse_input_shapes,
    quantization_from,
    quantize_options,
    say,
)


@click.command("targets", short_help="List the shipped targets.")
def targets_cmd() -> None:
    """List the shipped targets."""
    from edgec import targets

    rows = [("target", "arch", "layout", "description")]
    for name in targets.names():
        target = targets.load(name)
        rows.append((name, target.arch, target.default_layout, target.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[3]]))


@click.command("zoo", short_help="List the built-in models, or write one as ONNX.")
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


@click.command("compile", short_help="Compile a model (.onnx, .tflite or zoo:NAME) to a .so.")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("-t", "--target", default=DEFAULT_TARGET, show_default=True,
              help="Target name (see `edgec targets`) or path to a target .toml.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output library (default: build/<model>-<target>.so).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,...",
              help=INPUT_SHAPE_HELP)
@click.option("--layout", default="default", show_default=True,
              type=click.Choice(["default", "auto", "NCHWc", "NHWC", "NCHW"]),
              help=LAYOUT_HELP)
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare with ONNX Runtime before writing (random inputs; quantized "
                   "builds: calibration inputs).")
@click.option("--tuning-logs", type=click.Path(file_okay=False),
              help="Your tuning database (default: ~/.cache/edgec/tuning_logs/<target>), "
                   "applied before the shipped logs of the target.")
@click.option("--untuned", is_flag=True,
              help="Apply no tuning logs (neither yours nor the shipped ones): edgec's "
                   "default schedules only, e.g. to measure what tuning gains.")
@quantize_options
@click.option("--time-fp32/--no-time-fp32", default=True, show_default=True,
              help="With --quantize int8/fp16 for this machine: also build the FP32 model and "
                   "time both, warning when the quantized one is not faster (about 40% of "
                   "an INT8 compile's time).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the result (and the accuracy report) as JSON.")
@board_options
def compile_cmd(model, target, output, input_shapes, layout, check, tuning_logs, untuned,
                time_fp32, json_path, rpc, tracker, key, remote_python, ssh_target, identity,
                known_hosts, accept_new_host_key, **quantize_kwargs) -> None:
    """Compile MODEL (an .onnx or .tflite file, or zoo:NAME; default zoo:mobilenet_v2) to a
    .so plus its metadata, checked against ONNX Runtime or LiteRT.

    With --layout auto or --quantize auto, the candidates are timed here for a target this
    machine runs, on the board given by --rpc, --tracker or --ssh, or else estimated for the
    target's [board] core."""
    from edgec import pipeline

    board = board_endpoint(rpc, tracker, key, remote_python, ssh_target=ssh_target,
                           identity=identity, known_hosts=known_hosts,
                           accept_new_host_key=accept_new_host_key)
    quantization = quantization_from(quantize_kwargs)
    stem = model.split(":", 1)[1] if model.startswith("zoo:") else Path(model).stem
    target_stem = Path(target).stem
    suffix = f"-{quantization.mode}" if quantization.mode in ("int8", "fp16") else ""
    options = pipeline.CompileOptions(
        model=model,
        output=Path(output or f"build/{stem}-{target_stem}{suffix}.so"),
        target=target,
        input_shapes=parse_input_shapes(input_shapes),
        layout=layout,
        check=check,
        tuning_logs=Path(tuning_logs) if tuning_logs else None,
        use_tuning_logs=not untuned,
        quantization=quantization,
        time_fp32=time_fp32,
        board=board,
    )
    result = pipeline.compile_model(options, progress=say)
    click.echo(result.summary())
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))


@click.command("tune", short_help="Autotune a model's kernels for a target.")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("-t", "--target", default=DEFAULT_TARGET, show_default=True,
              help="Target name (see `edgec targets`) or path to a target .toml.")
@click.option("--trials", "trials_per_task", default=64, show_default=True,
              help="Measured trials per task (tasks that have them are skipped).")
@click.option("--total-trials", type=int, help="Cap on trials over all tasks in this run.")
@click.option("--budget", default="20m", show_default=True,
              help="Stop after this long, e.g. 20m, 90s, 1.5h, or none (the batch in flight "
                   "is kept; heaviest tasks are tuned first).")
@click.option("--rpc", metavar="HOST:PORT", help="Measure on a board's TVM RPC server.")
@click.option("--tracker", metavar="HOST:PORT", help="Measure through a TVM RPC tracker.")
@click.option("--key", help="The board's key at the tracker.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,...",
              help=INPUT_SHAPE_HELP)
@click.option("--layout", default="default", show_default=True,
              type=click.Choice(["default", "auto", "NCHWc", "NHWC", "NCHW"]),
              help=LAYOUT_HELP + " Tune with the layout you compile with.")
@click.option("--tuning-logs", type=click.Path(file_okay=False),
              help="Database folder to write (default: ~/.cache/edgec/tuning_logs/<target>, "
                   "layered over the shipped logs, which tuning never modifies).")
@click.option("--status", is_flag=True, help="Show what the database covers for MODEL; no tuning.")
@click.option("--no-model-check", "no_model_check", is_flag=True,
              help="Skip the in-model check after a local tune (keeping only the records "
                   "whose functions got faster in the model).")
@quantize_options
def tune_cmd(model, target, trials_per_task, total_trials, budget, rpc, tracker, key,
             input_shapes, layout, tuning_logs, status, no_model_check,
             **quantize_kwargs) -> None:
    """Autotune MODEL's tasks for TARGET with MetaSchedule (XGBoost cost model)."""
    from edgec import pipeline, tune
    from edgec.boards import sessions

    options = tune.TuneOptions(
        trials_per_task=trials_per_task,
        total_trials=total_trials,
        budget_seconds=tune.parse_budget(budget),
        rpc=sessions.parse_endpoint(rpc, "--rpc") if rpc else None,
        tracker=sessions.parse_endpoint(tracker, "--tracker") if tracker else None,
        key=key,
        logs=Path(tuning_logs) if tuning_logs else None,
        dry_run=status,
        model_check=not no_model_check,
    )
    shapes = parse_input_shapes(input_shapes)
    quantization = quantization_from(quantize_kwargs)
    mode = quantization.mode
    on_board = bool(options.rpc or options.tracker)  # decisions a compile timed on the board
    if quantization.mode == "auto":  # the precision compile measured, or one error line
        quantization = pipeline.stored_quantization(model, shapes, quantization, layout, target,
                                                    options.logs, on_board)
    if layout == "auto":  # before the banner: the layout compile measured, or one error line
        layout = pipeline.stored_layout(model, shapes, quantization, target, options.logs,
                                        on_board)
    from edgec import targets

    where = tune.measured_on(options, targets.load(target))
    say(f"tune {model}{f' ({mode})' if mode else ''} for {target}: "
        f"{trials_per_task} trials per task, layout {layout}, measured on {where}; Ctrl-C "
        "stops after the batch in flight, keeping every record")
    with ProgressBar("tuning", "{task.completed}/{task.total} trials", note=True) as bar:
        def show(report, total: int) -> None:
            est = report.estimated_ms
            note = (f"est. {est:.2f} ms" if est
                    else f"{report.trials_per_minute:.0f} trials/min")
            bar.update("tuning", report.trials_run, total, note)

        report = pipeline.tune_model(
            model, target, options, layout_choice=layout, input_shapes=shapes, progress=show,
            quantization=quantization,
            check_progress=lambda step: bar.update("in-model check", 0, None, step))
    click.echo(report.summary())
    if report.stopped_by == "interrupt":
        say(f"stopped: {report.trials_run + report.seeded} records kept in {report.logs}; "
            "run the same command to resume")
        raise SystemExit(130)


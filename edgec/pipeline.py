"""The one place that chains the stages: import → quantize → layout → build → check → export."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec import build, check, frontend, layout, quant, reference, targets, tune
from edgec import quantized as quantized_steps
from edgec.check import DEFAULT_MIN_COSINE, DEFAULT_RTOL, VerifyReport
from edgec.compile_report import CompileResult
from edgec.errors import BuildError, ConfigError
from edgec.model import Model
from edgec.quant import QuantizeOptions
from edgec.quant.accuracy import QuantReport
from edgec.targets import Target

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompileOptions:
    """Everything `edgec compile` takes; the quantization settings validate themselves."""

    model: str
    output: Path
    target: str = "x86_64"
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    layout: str = "default"  # the target's; "auto": edgec.layout.by_measurement
    check: bool = True
    tuning_logs: Path | None = None
    use_tuning_logs: bool = True  # False: edgec's default schedules only (--untuned)
    rtol: float = DEFAULT_RTOL
    min_cosine: float = DEFAULT_MIN_COSINE
    quantization: QuantizeOptions = field(default_factory=QuantizeOptions)
    # Quantized builds for this machine: also build FP32 and time both, to warn when the
    # quantized one is not faster (ResNet-18 INT8: 23 of the compile's 57 s on a Zen 1).
    time_fp32: bool = True
    # Where --layout auto and --quantize auto time their candidates: a board
    # (edgec.boards.sessions.BoardEndpoint); None: here, or the estimate for a board target.
    board: Any = None

    def display(self) -> str:
        shapes = ", ".join(f"{k}:{','.join(map(str, v))}" for k, v in self.input_shapes.items())
        rows = [
            ("model", self.model), ("target", self.target), ("layout", self.layout),
            ("input shapes", shapes or "from the model"), ("output", str(self.output)),
            ("tuning logs", "none (--untuned)" if not self.use_tuning_logs
             else str(self.tuning_logs or "yours, then the shipped ones of the target")),
            ("check vs reference", ("yes (" + ("LiteRT" if frontend.is_tflite(self.model)
                                    else "ONNX Runtime") + ")") if self.check
             else "no (--no-check)"),
            *self.quantization.display_rows(),
            *([("auto choices timed on", self.board.where)] if self.board else []),
        ]
        return "\n".join(f"  {k:<22} {v}" for k, v in rows)


def _tuning_schedule(target, options: CompileOptions, stats: dict[str, Any]):
    if not options.use_tuning_logs:
        stats["untuned"] = True
        return None
    # The CPU the code runs on, when it runs here; records from any other are noted.
    stats["cpu"] = tune.measured_on() if target.is_native else None
    return tune.database_schedule(target, options.tuning_logs, stats)


def prepare(model: str, target: Target, input_shapes: Mapping | None, layout_choice: str) -> Model:
    """Import and lay out a model for a target: the graph both tune and compile work on."""
    imported = frontend.import_model(model, input_shapes)
    return layout.apply_layout(imported, layout_choice, target)


def compile_model(options: CompileOptions, progress: Progress | None = None) -> CompileResult:
    """Compile a model to OUT.so + OUT.so.json, checked against ONNX Runtime unless told not to.

    Raises:
        EdgecError subclasses; on any error no artifact is written.
    """
    say = progress or (lambda _msg: None)
    if options.board is not None and "auto" not in (options.layout, options.quantization.mode):
        raise ConfigError("--rpc, --tracker and --ssh tell compile where --layout auto and "
                          "--quantize auto time their candidates: give one of those, or time "
                          "a compiled library on the board with `edgec bench`")
    if options.quantization.mode == "auto":
        return _quantize_by_measurement(options, say)
    target = targets.load(options.target)
    targets.check_with_llvm(target)
    layout.resolve(options.layout, target)  # reject a bad layout before the slow import
    build.check_toolchain(target)
    frontend.check_inputs(options.model, options.input_shapes)
    say("compile with:\n" + options.display())  # once the inputs are known to be sound
    qopts = options.quantization
    if qopts.calib == quant.RANDOM:
        say("WARNING: --calib random calibrates on noise: accuracy numbers mean nothing")
    elif qopts.calib == quant.SAMPLES:
        say(f"WARNING: {quant.SAMPLES_WARNING}")
    slow_layout = layout.expected_cost_warning(options.layout, qopts.mode, target)
    if slow_layout:
        say(f"WARNING: {slow_layout}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    say("importing and simplifying the model")
    quantized = None
    if qopts.mode:
        imported, quantized = quantized_steps.import_quantized(
            options.model, options.input_shapes, qopts, target, say)
    else:
        imported = frontend.import_model(options.model, options.input_shapes)
    stats: dict[str, Any] = {}
    decision = None
    if options.layout == "auto":
        seconds["import"] = time.perf_counter() - start
        start = time.perf_counter()
        model, executable, decision = _layout_by_measurement(imported, target, options, stats,
                                                             say)
    else:
        say(f"converting layout ({options.layout})")
        model = layout.apply_layout(imported, options.layout, target)
        seconds["import"] = time.perf_counter() - start
        start = time.perf_counter()
        say(f"compiling for {target.name}")
        schedule = _tuning_schedule(target, options, stats)
        executable = build.compile_to_executable(model, target, schedule, stats)
    transforms = layout.count_layout_transforms(model.ir) - layout.count_layout_transforms(
        imported.ir
    )
    seconds["compile"] = time.perf_counter() - start
    report = runnable = None
    if options.check or quantized is not None:
        runnable, note = check.host_runnable(model, target, executable)  # built once
    if options.check:
        start = time.perf_counter()
        say(f"checking against {reference.runtime_name(model.reference)}")
        report = _check(runnable, note, model, options, quantized)
        seconds["check"] = time.perf_counter() - start
        if not report.ok:
            worst = max(report.failures(), key=lambda o: o.max_abs_error)
            raise BuildError(
                f"compiled {model.name} differs from {reference.runtime_name(model.reference)} "
                f"on output {worst.name}: "
                f"max abs error {worst.max_abs_error:.3g}, cosine {worst.cosine:.6f}; "
                "no artifact written (--no-check skips this check)"
            )
    quant_report = None
    if quantized is not None:
        start = time.perf_counter()
        say(f"measuring {qopts.mode} against FP32")
        quant_report = quantized_steps.quant_report(
            model, target, executable, runnable, options, quantized,
            _tuning_schedule(target, options, {}))
        seconds["accuracy"] = time.perf_counter() - start
    say(f"writing {options.output}")
    info = build.export(executable, model, target, options.output, tuning=stats,
                        check=_verify_tolerance(options, quant_report))
    return CompileResult(Path(options.output), info, max(transforms, 0), report, seconds, stats,
                         quant_report, model, decision)


def stored_layout(model: str, input_shapes: Mapping | None,
                  quantization: QuantizeOptions | None, target: str | Target, logs,
                  on_board: bool = False) -> str:
    """The layout `compile --layout auto` stored for this model and target (ConfigError
    when none is); on_board: the one timed on the target's board."""
    from edgec.layout import by_measurement

    target = targets.load(target) if isinstance(target, str) else target
    mode = quantization.mode if quantization is not None else None
    return by_measurement.stored_layout(model, dict(input_shapes or {}), mode, target,
                                        tune.logs_dir(target, logs), on_board)


def _layout_by_measurement(imported: Model, target, options: CompileOptions,
                           stats: dict[str, Any], say: Progress):
    """--layout auto (edgec.layout.by_measurement); returns (model, executable, decision)."""
    from edgec.layout import by_measurement

    def build_one(model: Model, counts: dict[str, Any]):
        return build.compile_to_executable(model, target, _tuning_schedule(target, options,
                                                                           counts), counts)

    return by_measurement.choose(
        imported, target, build_one, stats, say, source=options.model,
        shapes=dict(options.input_shapes), mode=options.quantization.mode,
        folder=tune.logs_dir(target, options.tuning_logs), board=options.board)


def _quantize_by_measurement(options: CompileOptions, say: Progress) -> CompileResult:
    """--quantize auto (edgec.quant.by_measurement): every precision compiled and checked,
    the fastest that keeps FP32's accuracy written to options.output."""
    from edgec.quant import by_measurement

    target = targets.load(options.target)
    qopts = options.quantization

    def compile_one(mode: str | None, output: Path, progress: Progress) -> CompileResult:
        # FP16 keeps the calibration data to measure its accuracy; FP32 takes none.
        settings = {"mode": mode} if mode else {"mode": None, "calib": None}
        return compile_model(dataclasses.replace(
            options, output=output, quantization=dataclasses.replace(qopts, **settings),
            board=options.board if options.layout == "auto" else None), progress)

    where = by_measurement.where_or_error(target, options.board is not None)
    key = by_measurement.decision_key(options.model, dict(options.input_shapes), qopts,
                                      options.layout, where)
    result, decision = by_measurement.choose(
        compile_one, Path(options.output), target, qopts.calib, say,
        folder=tune.logs_dir(target, options.tuning_logs), key=key, where=where,
        board=options.board)
    return dataclasses.replace(result, quantize_decision=decision)


def stored_quantization(model: str, input_shapes: Mapping | None, quantization: QuantizeOptions,
                        layout_choice: str, target: str | Target, logs,
                        on_board: bool = False) -> QuantizeOptions:
    """The precision `compile --quantize auto` stored for this model, calibration data,
    layout and target, as QuantizeOptions (ConfigError when none is stored); on_board: the
    one timed on the target's board."""
    from edgec.quant import by_measurement

    target = targets.load(target) if isinstance(target, str) else target
    key = by_measurement.decision_key(model, dict(input_shapes or {}), quantization,
                                      layout_choice,
                                      by_measurement.where_or_error(target, on_board))
    decision = by_measurement.stored(tune.logs_dir(target, logs), key)
    if decision is None:
        raise ConfigError(f"--quantize auto: no precision was measured yet for {model} on "
                          f"{target.name}; run `edgec compile {model} --quantize auto` with the "
                          "same options first (it stores its decision), or name one")
    if decision.mode == by_measurement.FP32:
        return dataclasses.replace(quantization, mode=None, calib=None)
    return dataclasses.replace(quantization, mode=decision.mode)


def _verify_tolerance(options: CompileOptions, quant_report: QuantReport | None) -> dict:
    """The bound `edgec verify` applies to this build against the source (float) model."""
    mode = options.quantization.mode
    if mode == "int8" and quant_report is not None:
        from edgec.quant import accuracy

        return accuracy.verify_tolerance(mode, quant_report.outputs, quant_report.sample_source)
    if mode:
        rtol, min_cosine = quant.CHECK_TOLERANCE[mode]
        return {"rtol": rtol, "min_cosine": min_cosine,
                "why": f"{mode} build: compile's check tolerance against the float model"}
    return {"rtol": options.rtol, "min_cosine": options.min_cosine,
            "why": "float build: compile's check tolerance"}


def _check(runnable: Any, note: str, model: Model, options: CompileOptions,
           quantized: quantized_steps.Quantized | None) -> VerifyReport:
    """Random inputs for a float build; the calibration inputs for a quantized one (random
    inputs would leave the calibrated ranges), against the same QDQ model in ONNX Runtime."""
    rtol, min_cosine = options.rtol, options.min_cosine
    if quantized is None:
        samples = [check.random_inputs([s.to_dict() for s in model.inputs])]
    else:
        mode = options.quantization.mode
        samples = quantized.samples[:4]
        rtol, min_cosine = quant.CHECK_TOLERANCE[mode]
        what = "the same QDQ model" if quantized.qdq is not None else "the float model"
        note = (note + "; " if note else "") + (
            f"{mode} vs ONNX Runtime running {what} on {len(samples)} {quantized.source}")
    float_reference = (quantized.fp32.reference if quantized is not None
                       and quantized.qdq is not None else None)
    return check.check_against_reference(runnable, model, samples, rtol, min_cosine, note,
                                         float_reference)


def tune_model(
    model: str,
    target_name: str,
    options: tune.TuneOptions,
    *,
    input_shapes: Mapping | None = None,
    layout_choice: str = "default",
    progress: tune.Progress | None = None,
    quantization: QuantizeOptions | None = None,
    check_progress: Progress | None = None,
) -> tune.TuneReport:
    """Tune the exact tasks `compile_model` builds for this model, target and layout, then
    (a local tune that was not interrupted) check the records in the model: those whose
    function did not get faster there are left to edgec's defaults (tune.model_check).

    Args:
        quantization: tune the quantized model's tasks (the same settings as compile's),
            which land in the same database as the float ones.
        check_progress: told what the in-model check is doing.
    """
    target = targets.load(target_name)
    targets.check_with_llvm(target)
    if options.rpc or options.tracker:
        build.check_toolchain(target)
    elif tune.simulated_board.applies_to(target):  # no board: its estimate is the runner
        build.check_toolchain(target)
        if not options.dry_run:
            tune.simulated_board.check(target)
    elif not target.is_native and not options.dry_run:  # --status only reads the logs
        raise ConfigError(
            f"target {target.name} {target.why_not_native()}: its code cannot be measured "
            "here; tune on a machine that runs it, or on the board with --rpc HOST:PORT or "
            "--tracker HOST:PORT --key KEY"
        )
    if layout_choice == "auto":
        layout_choice = stored_layout(model, input_shapes, quantization, target, options.logs,
                                      bool(options.rpc or options.tracker))
    if quantization is not None and quantization.mode:
        imported, _ = quantized_steps.import_quantized(model, input_shapes, quantization, target,
                                        lambda _msg: None)
        prepared = layout.apply_layout(imported, layout_choice, target)
        name = f"{prepared.name}-{quantization.mode}"
    else:
        prepared = prepare(model, target, input_shapes, layout_choice)
        name = prepared.name
    ir = build.lower(prepared, target, default_schedules=False)
    # Measured as built: an INT8 tune times code compiled with the target's [int8] mattr.
    report = tune.tune(ir, target.for_precision(prepared.quantization), options, progress,
                       name=name)
    if options.dry_run or not options.model_check or report.stopped_by == "interrupt":
        return report
    if not target.is_native or options.rpc or options.tracker:  # the profile runs here
        report.model_check = tune.model_check.ModelCheck(
            name, skipped="not run: the records are for another CPU (a board, or its "
                          "estimate), and the per-function profile runs here")
    elif tune.model_check.due(report.logs, name):
        report.model_check = tune.model_check.check_in_model(
            prepared, target, report.logs, options.logs, name, check_progress or (lambda _m: 0))
    return report

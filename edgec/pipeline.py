"""The one place that chains the stages: import → quantize → layout → build → check → export."""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec import build, frontend, layout, quantize, targets, tune
from edgec.accuracy import QuantReport
from edgec.errors import BuildError, ConfigError
from edgec.model import Model
from edgec.package import PackageInfo
from edgec.quantize import CalibOptions
from edgec.targets import Target
from edgec.tvm_log import quiet_scope_warnings
from edgec.verify import DEFAULT_MIN_COSINE, DEFAULT_RTOL, VerifyReport

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompileOptions:
    """Everything `edgec compile` takes; validated by `resolve()`."""

    model: str
    output: Path
    target: str = "x86_64"
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    layout: str = "auto"
    check: bool = True
    tuning_logs: Path | None = None
    rtol: float = DEFAULT_RTOL
    min_cosine: float = DEFAULT_MIN_COSINE
    quantize: str | None = None  # "int8" or "fp16"
    calib: str | None = None  # folder, .npy/.npz file or "random"
    calib_method: str = "minmax"
    per_channel: bool = True
    calib_options: CalibOptions = field(default_factory=CalibOptions)

    def display(self) -> str:
        shapes = ", ".join(f"{k}:{','.join(map(str, v))}" for k, v in self.input_shapes.items())
        rows = [
            ("model", self.model), ("target", self.target), ("layout", self.layout),
            ("input shapes", shapes or "from the model"), ("output", str(self.output)),
            ("tuning logs", str(self.tuning_logs or "tuning_logs/<target> if present")),
            ("check vs ONNX Runtime", "yes" if self.check else "no (--no-check)"),
        ]
        if self.quantize:
            rows.append(("quantize", self.quantize))
        if self.quantize == "int8" or self.calib:
            granularity = "per-channel" if self.per_channel else "per-tensor"
            rows.append(("calibration", f"{self.calib}, {self.calib_method}, {granularity}, "
                         f"{self.calib_options.display()}"))
        return "\n".join(f"  {k:<22} {v}" for k, v in rows)


@dataclass(frozen=True)
class CompileResult:
    """What compile produced and how it was checked."""

    path: Path
    info: PackageInfo
    layout_transforms: int
    verify: VerifyReport | None
    seconds: dict[str, float]
    tuning: dict[str, int]
    quantization: QuantReport | None = None
    model: Model | None = None  # the compiled graph; .onnx is what the check ran in ORT

    def summary(self) -> str:
        lines = [
            f"wrote {self.path} (+ {self.path.name}.json), {self.info.arch}, "
            f"layout {self.info.layout}, {self.layout_transforms} layout transforms in the graph",
            "steps: " + ", ".join(self.info.applied),
            _tuning_line(self.tuning),
            "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
        ]
        if self.verify is not None:
            lines += ["check against ONNX Runtime:", self.verify.summary()]
        if self.quantization is not None:
            lines.append(self.quantization.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything summary() shows, as plain data (for --json)."""
        return {
            "path": str(self.path), "info": json.loads(self.info.to_json()),
            "layout_transforms": self.layout_transforms, "seconds": self.seconds,
            "tuning": self.tuning,
            "verify": json.loads(self.verify.to_json()) if self.verify else None,
            "quantization": self.quantization.to_dict() if self.quantization else None,
        }


def _tuning_line(stats: dict[str, int]) -> str:
    if not stats:
        return "schedules: no tuning logs for this target; every task uses edgec's defaults"
    tuned, functions = stats["tuned"], stats["functions"]
    return (f"schedules: {tuned} of {functions} functions from tuning logs, "
            f"{functions - tuned} on edgec's default schedules")


def prepare(model: str, target: Target, input_shapes: Mapping | None, layout_choice: str) -> Model:
    """Import and lay out a model for a target: the graph both tune and compile work on."""
    imported = frontend.import_model(model, input_shapes)
    return layout.apply_layout(imported, layout_choice, target)


@dataclass(frozen=True)
class _Quantized:
    """What the quantize stage leaves for the accuracy report."""

    fp32: Model  # the float model, imported (its .onnx is the user's original)
    graph: Any  # the simplified float ONNX graph that was quantized
    qdq: Any  # the QDQ ONNX model (INT8 only)
    samples: list[dict[str, Any]]
    source: str
    counts: dict[str, int]


def compile_model(options: CompileOptions, progress: Progress | None = None) -> CompileResult:
    """Compile a model to OUT.so + OUT.so.json, checked against ONNX Runtime unless told not to.

    Raises:
        EdgecError subclasses; on any error no artifact is written.
    """
    say = progress or (lambda _msg: None)
    target = targets.load(options.target)
    layout.resolve(options.layout, target)  # reject a bad layout before the slow import
    quantize.check_settings(options.quantize, options.calib, options.calib_method)
    build.check_toolchain(target)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    say("importing and simplifying the model")
    quant = None
    if options.quantize:
        imported, quant = _import_quantized(options, target, say)
    else:
        imported = frontend.import_model(options.model, options.input_shapes)
    say(f"converting layout ({options.layout})")
    model = layout.apply_layout(imported, options.layout, target)
    transforms = layout.count_layout_transforms(model.ir) - layout.count_layout_transforms(
        imported.ir
    )
    seconds["import"] = time.perf_counter() - start
    start = time.perf_counter()
    say(f"compiling for {target.name}")
    stats: dict[str, int] = {}
    schedule = tune.database_schedule(target, options.tuning_logs, stats)
    executable = build.compile_to_executable(model, target, schedule)
    seconds["compile"] = time.perf_counter() - start
    report = None
    if options.check:
        start = time.perf_counter()
        say("checking against ONNX Runtime")
        report = _check(model, target, executable, options, quant)
        seconds["check"] = time.perf_counter() - start
        if not report.ok:
            worst = max(report.failures(), key=lambda o: o.max_abs_error)
            raise BuildError(
                f"compiled {model.name} differs from ONNX Runtime on output {worst.name}: "
                f"max abs error {worst.max_abs_error:.3g}, cosine {worst.cosine:.6f}; "
                "no artifact written (--no-check skips this check)"
            )
    quant_report = None
    if quant is not None:
        start = time.perf_counter()
        say(f"measuring {options.quantize} against FP32")
        quant_report = _quant_report(model, target, executable, options, quant)
        seconds["accuracy"] = time.perf_counter() - start
    say(f"writing {options.output}")
    info = build.export(executable, model, target, options.output, tuning=stats)
    return CompileResult(Path(options.output), info, max(transforms, 0), report, seconds, stats,
                         quant_report, model)


def _import_quantized(options: CompileOptions, target: Target, say: Progress
                      ) -> tuple[Model, _Quantized]:
    """import → quantize: INT8 quantizes the simplified ONNX graph and lowers the QDQ graph
    to integer compute; FP16 converts the float Relax graph."""
    from edgec import calibration

    prepared = frontend.prepare_onnx(options.model, options.input_shapes)
    fp32 = frontend.convert(prepared)
    if options.calib:
        samples = quantize.load_calibration(options.calib, options.calib_options, fp32.inputs)
        source = ("random inputs" if options.calib == quantize.RANDOM
                  else f"calibration inputs from {options.calib}")
    else:  # FP16 needs no calibration; without data, compare on seeded random inputs
        samples, source = calibration.random_samples(fp32.inputs, 4), "random inputs"
    if options.quantize == "fp16":
        return quantize.to_fp16(fp32), _Quantized(fp32, prepared.graph, None, samples, source, {})
    say(f"calibrating on {len(samples)} samples ({options.calib_method}) with ONNX Runtime")
    # AVX2's int8 kernel (vpmaddubsw) is exact only with 7-bit weights; sdot multiplies
    # int8 activations, the x86 kernels uint8 ones.
    qdq = quantize.quantize_onnx(prepared.graph, samples, options.calib_method,
                                 options.per_channel, reduce_range=target.int8_dot == "avx2",
                                 activations="int8" if target.int8_dot == "sdot" else "uint8")
    model, counts = quantize.lower_int8(
        frontend.convert(dataclasses.replace(prepared, graph=qdq, reference=qdq)))
    return model, _Quantized(fp32, prepared.graph, qdq, samples, source, counts)


def _runnable(model: Model, target: Target, executable: Any) -> tuple[Any, str]:
    """The executable itself on the host, or a host build of the same graph for a cross
    target: its code cannot run here, and that build still catches import/layout errors."""
    if target.is_native:
        return executable, ""
    host = targets.load("host")
    note = f"checked via a host build of the same graph ({target.name} code runs on the board)"
    return build.compile_to_executable(model, host), note


def _run(executable: Any, model: Model, inputs: Mapping[str, Any]) -> dict[str, Any]:
    import tvm
    from tvm.runtime.vm import VirtualMachine

    with quiet_scope_warnings():
        vm = VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(inputs[s.name]) for s in model.inputs])
    values = list(result) if len(model.outputs) > 1 else [result]
    return {s.name: v.numpy() for s, v in zip(model.outputs, values, strict=True)}


def _check(model: Model, target: Target, executable: Any, options: CompileOptions,
           quant: _Quantized | None) -> VerifyReport:
    """Compare with ONNX Runtime running model.onnx: the user's model, or for INT8 the same
    QDQ model, on the calibration inputs (random inputs would leave the calibrated ranges)."""
    from edgec import verify

    executable, note = _runnable(model, target, executable)
    rtol, min_cosine = options.rtol, options.min_cosine
    if quant is None:
        samples = [verify.random_inputs([s.to_dict() for s in model.inputs])]
    else:
        samples = quant.samples[:4]
        rtol, min_cosine = quantize.CHECK_TOLERANCE[options.quantize]
        what = "the same QDQ model" if quant.qdq is not None else "the float model"
        note = (note + "; " if note else "") + (
            f"{options.quantize} vs ONNX Runtime running {what} on {len(samples)} {quant.source}")
    actual = [_run(executable, model, s) for s in samples]
    expected = [verify.onnxruntime_outputs(model.onnx, s) for s in samples]
    report = verify.compare({k: np.stack([a[k] for a in actual]) for k in actual[0]},
                            {k: np.stack([e[k] for e in expected]) for k in expected[0]},
                            rtol, min_cosine)
    return dataclasses.replace(report, note=note)


def _median_ms(executable: Any, model: Model, inputs: Mapping[str, Any], runs: int = 10) -> float:
    import tvm
    from tvm.runtime.vm import VirtualMachine

    with quiet_scope_warnings():
        vm = VirtualMachine(executable, tvm.cpu())
    vm.set_input("main", *[tvm.runtime.tensor(inputs[s.name]) for s in model.inputs])
    timer = vm.time_evaluator("invoke_stateful", tvm.cpu(), number=1, repeat=runs + 2)
    return 1000.0 * float(np.median(list(timer("main").results)[2:]))


def _quant_report(model: Model, target: Target, executable: Any, options: CompileOptions,
                  quant: _Quantized) -> QuantReport:
    """Agreement with FP32 (ORT), per-layer error, integer ops and instructions, and speed."""
    from edgec import accuracy, int8, verify

    runnable, _ = _runnable(model, target, executable)
    samples = quant.samples
    fp32_runs = [verify.onnxruntime_outputs(quant.fp32.onnx, s) for s in samples]
    outputs = accuracy.agreement(fp32_runs, [_run(runnable, model, s) for s in samples])
    warnings = [quantize.RANDOM_WARNING] if options.calib == quantize.RANDOM else []
    fp32_ms = quantized_ms = None
    if target.is_native:
        float_model = layout.apply_layout(quant.fp32, options.layout, target)
        # A schedule callback of its own: compile's counts into the quantized build's stats.
        float_schedule = tune.database_schedule(target, options.tuning_logs, {})
        fp32_exec = build.compile_to_executable(float_model, target, float_schedule)
        fp32_ms = _median_ms(fp32_exec, float_model, samples[0])
        quantized_ms = _median_ms(executable, model, samples[0])
        if quantized_ms >= fp32_ms:
            warnings.append(f"{options.quantize} is not faster than FP32 here ({quantized_ms:.2f} "
                            f"vs {fp32_ms:.2f} ms): it still saves memory; see the README")
    integer = collections.Counter(int8.integer_layers(model.ir))
    return QuantReport(
        mode=options.quantize or "", samples=len(samples), sample_source=quant.source,
        outputs=outputs,
        layers=accuracy.layer_errors(quant.graph, quant.qdq, samples[:4]) if quant.qdq else [],
        qdq_left={k.removesuffix("_left"): v for k, v in quant.counts.items()
                  if k.endswith("_left")},
        integer_layers=dict(integer),
        mac_instructions=accuracy.count_mnemonics(build.assembly(executable)),
        fp32_ms=fp32_ms, quantized_ms=quantized_ms, warnings=warnings)


def tune_model(
    model: str,
    target_name: str,
    options: tune.TuneOptions,
    *,
    input_shapes: Mapping | None = None,
    layout_choice: str = "auto",
    progress: tune.Progress | None = None,
    quantization: CompileOptions | None = None,
) -> tune.TuneReport:
    """Tune the exact tasks `compile_model` builds for this model, target and layout.

    Args:
        quantization: compile options with `quantize` (and `calib`) set: tune the quantized
            model's tasks, which land in the same database as the float ones.
    """
    target = targets.load(target_name)
    if options.rpc or options.tracker:
        build.check_toolchain(target)
    elif not target.is_native:
        raise ConfigError(
            f"target {target.name} is {target.arch}: its code cannot be measured here; "
            "tune on the board with --rpc HOST:PORT or --tracker HOST:PORT --key KEY"
        )
    if quantization is not None and quantization.quantize:
        quantize.check_settings(quantization.quantize, quantization.calib,
                                quantization.calib_method)
        imported, _ = _import_quantized(quantization, target, lambda _msg: None)
        prepared = layout.apply_layout(imported, layout_choice, target)
        name = f"{prepared.name}-{quantization.quantize}"
    else:
        prepared = prepare(model, target, input_shapes, layout_choice)
        name = prepared.name
    ir = build.lower(prepared, target, default_schedules=False)
    return tune.tune(ir, target, options, progress, name=name)

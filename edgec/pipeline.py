"""The one place that chains the stages: import → layout → build → check → export."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec import build, frontend, layout, targets, tune
from edgec.errors import BuildError, ConfigError
from edgec.model import Model
from edgec.package import PackageInfo
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

    def display(self) -> str:
        shapes = ", ".join(f"{k}:{','.join(map(str, v))}" for k, v in self.input_shapes.items())
        rows = [
            ("model", self.model), ("target", self.target), ("layout", self.layout),
            ("input shapes", shapes or "from the model"), ("output", str(self.output)),
            ("tuning logs", str(self.tuning_logs or "tuning_logs/<target> if present")),
            ("check vs ONNX Runtime", "yes" if self.check else "no (--no-check)"),
        ]
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
        return "\n".join(lines)


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


def compile_model(options: CompileOptions, progress: Progress | None = None) -> CompileResult:
    """Compile a model to OUT.so + OUT.so.json, checked against ONNX Runtime unless told not to.

    Raises:
        EdgecError subclasses; on any error no artifact is written.
    """
    say = progress or (lambda _msg: None)
    target = targets.load(options.target)
    layout.resolve(options.layout, target)  # reject a bad layout before the slow import
    build.check_toolchain(target)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    say("importing and simplifying the model")
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
        report = _check(model, target, executable, options)
        seconds["check"] = time.perf_counter() - start
        if not report.ok:
            worst = max(report.failures(), key=lambda o: o.max_abs_error)
            raise BuildError(
                f"compiled {model.name} differs from ONNX Runtime on output {worst.name}: "
                f"max abs error {worst.max_abs_error:.3g}, cosine {worst.cosine:.6f}; "
                "no artifact written (--no-check skips this check)"
            )
    say(f"writing {options.output}")
    info = build.export(executable, model, target, options.output, tuning=stats)
    return CompileResult(Path(options.output), info, max(transforms, 0), report, seconds, stats)


def _check(model: Model, target: Target, executable: Any, options: CompileOptions) -> VerifyReport:
    """Compare with ONNX Runtime. Code for another CPU cannot run here, so a cross build is
    checked through a host build of the same graph: that catches import and layout errors,
    and `edgec verify` on the board checks the target's own code."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from edgec import verify

    note = ""
    if not target.is_native:
        host = targets.load("host")
        executable = build.compile_to_executable(model, host)
        note = f"checked via a host build of the same graph ({target.name} code runs on the board)"
    inputs = verify.random_inputs([s.to_dict() for s in model.inputs])
    with quiet_scope_warnings():
        vm = VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(inputs[s.name]) for s in model.inputs])
    values = list(result) if len(model.outputs) > 1 else [result]
    actual = {s.name: v.numpy() for s, v in zip(model.outputs, values, strict=True)}
    expected = verify.onnxruntime_outputs(model.onnx, inputs)
    report = verify.compare(actual, expected, options.rtol, options.min_cosine)
    return dataclasses.replace(report, note=note)


def tune_model(
    model: str,
    target_name: str,
    options: tune.TuneOptions,
    *,
    input_shapes: Mapping | None = None,
    layout_choice: str = "auto",
    progress: tune.Progress | None = None,
) -> tune.TuneReport:
    """Tune the exact tasks `compile_model` builds for this model, target and layout."""
    target = targets.load(target_name)
    if options.rpc or options.tracker:
        build.check_toolchain(target)
    elif not target.is_native:
        raise ConfigError(
            f"target {target.name} is {target.arch}: its code cannot be measured here; "
            "tune on the board with --rpc HOST:PORT or --tracker HOST:PORT --key KEY"
        )
    prepared = prepare(model, target, input_shapes, layout_choice)
    ir = build.lower(prepared, target, default_schedules=False)
    return tune.tune(ir, target, options, progress)

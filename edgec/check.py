"""Check stage: run compiled code (the executable, or one host build of a cross-compiled
graph) and compare its outputs with a reference runtime's (edgec.reference)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from edgec import reference
from edgec.errors import ConfigError
from edgec.model import quantization_mode
from edgec.tvm_compat.log_filters import quiet_scope_warnings

# FP32 code that reorders sums (packed layouts, tiling) differs from ORT by rounding only;
# these bounds are ~100x that rounding noise on the zoo models and far below any real bug.
DEFAULT_RTOL = 1e-3
DEFAULT_MIN_COSINE = 0.9999
# `edgec verify` of an INT8 build whose metadata records no tolerance (edgec before 0.1.1)
# against the float model: MobileNetV2 INT8 calibrated on noise is at 0.17 and 0.989.
_OLD_INT8_VERIFY = (0.2, 0.98)
# A quantized build's max abs error against ONNX Runtime running the same QDQ model may also
# reach this share of the QDQ model's own max error against the float model (see
# check_against_reference): a miscompile errs by the size of the outputs, not a quarter of
# the quantization's own error, and the cosine bound still holds.
INT8_SHARE_OF_OWN_ERROR = 0.25


@dataclass(frozen=True)
class OutputCheck:
    name: str
    max_abs_error: float
    max_abs_reference: float
    cosine: float
    ok: bool


@dataclass(frozen=True)
class VerifyReport:
    """Per-output comparison of edgec's outputs with ONNX Runtime's on the same inputs."""

    outputs: list[OutputCheck]
    rtol: float
    min_cosine: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def failures(self) -> list[OutputCheck]:
        return [o for o in self.outputs if not o.ok]

    def summary(self) -> str:
        lines = [f"{'output':<20} {'max abs err':>12} {'max |ref|':>10} {'cosine':>10}  result"]
        for o in self.outputs:
            verdict = "ok" if o.ok else "MISMATCH"
            lines.append(
                f"{o.name:<20} {o.max_abs_error:>12.3e} {o.max_abs_reference:>10.3g} "
                f"{o.cosine:>10.6f}  {verdict}"
            )
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2)


def verify_tolerance(recorded: Mapping[str, Any], applied: Sequence[str]
                     ) -> tuple[float, float, str]:
    """(rtol, min_cosine, why) that `edgec verify` applies to a build against the model it
    came from: what compile recorded in the metadata (PackageInfo.check), or for metadata
    without it, a bound by the build's mode."""
    if recorded:
        return recorded["rtol"], recorded["min_cosine"], recorded["why"]
    from edgec.quant.options import CHECK_TOLERANCE

    mode = quantization_mode(applied)
    if mode == "int8":
        return (*_OLD_INT8_VERIFY, "int8 build (its metadata records no tolerance: edgec's "
                                   "fixed bound for INT8 against the float model)")
    if mode in CHECK_TOLERANCE:
        return (*CHECK_TOLERANCE[mode], f"{mode} build: compile's check tolerance")
    return DEFAULT_RTOL, DEFAULT_MIN_COSINE, "float build: compile's check tolerance"


def random_inputs(specs: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs in the range image models see after normalization."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        if dtype.kind == "f":
            arrays[spec["name"]] = rng.uniform(-1.0, 1.0, shape).astype(dtype)
        else:
            arrays[spec["name"]] = rng.integers(0, 10, shape).astype(dtype)
    return arrays


def load_inputs(paths: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Read NAME=file.npy assignments.

    Raises:
        ConfigError: unreadable file.
    """
    arrays = {}
    for name, path in paths.items():
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConfigError(f"input {name}: cannot read {path} as .npy: {err}") from err
    return arrays


def compare(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    rtol: float = DEFAULT_RTOL,
    min_cosine: float = DEFAULT_MIN_COSINE,
    allowance: Mapping[str, float] | None = None,
) -> VerifyReport:
    """Compare outputs by name: |a - e| <= rtol * max(1, max|e|) (or, where `allowance`
    names the output, <= that absolute error if larger) and cosine >= min_cosine."""
    checks = []
    for name, want in expected.items():
        got = np.asarray(actual[name], dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            checks.append(OutputCheck(name, float("inf"), 0.0, 0.0, False))
            continue
        error = float(np.max(np.abs(got - want))) if want.size else 0.0
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        norm = float(np.linalg.norm(got) * np.linalg.norm(want))
        cosine = float(np.dot(got.ravel(), want.ravel()) / norm) if norm else float(error == 0)
        bound = max(rtol * max(1.0, scale), (allowance or {}).get(name, 0.0))
        ok = error <= bound and cosine >= min_cosine
        checks.append(OutputCheck(name, error, scale, cosine, ok))
    return VerifyReport(checks, rtol, min_cosine)


def host_runnable(model: Any, target: Any, executable: Any) -> tuple[Any, str]:
    """The executable itself when the target is this machine, else one host build of the same
    graph: cross-compiled code cannot run here, and that build still catches import, layout
    and legalization errors. Build it once and reuse it for every check of a compile."""
    if target.is_native:
        return executable, ""
    from edgec import build, targets

    host = targets.load("host")
    why = ("runs on the board" if not target.features_missing_here()
           else target.why_not_native())
    note = f"checked via a host build of the same graph ({target.name} code {why})"
    return build.compile_to_executable(model, host), note


def run(executable: Any, model: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One inference of an in-memory executable on this machine's CPU, outputs by name."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    with quiet_scope_warnings():
        vm = VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(inputs[s.name]) for s in model.inputs])
    values = list(result) if len(model.outputs) > 1 else [result]
    return {s.name: v.numpy() for s, v in zip(model.outputs, values, strict=True)}


def check_against_reference(runnable: Any, model: Any, samples: Sequence[Mapping[str, Any]],
                            rtol: float, min_cosine: float, note: str = "",
                            float_reference: Any = None) -> VerifyReport:
    """Compare the runnable's outputs with the reference runtime running model.onnx (the
    user's model, or for INT8 the same QDQ model) on every sample.

    float_reference: for a quantized build, the float model it was quantized from. The
    reference runtime runs it too, and an output may then also differ from the quantized
    reference by up to INT8_SHARE_OF_OWN_ERROR of the quantized model's own max error
    against it: edgec and ONNX Runtime round requantizations independently, and in deep
    models the one-step differences add up (SSD-Lite's boxes: 0.47 apart, where the QDQ
    model is 3.7 from FP32; cosine 0.9997).

    Raises:
        ModelImportError: the reference runtime cannot run the model.
    """
    def stacked(runs: list[dict]) -> dict[str, np.ndarray]:
        return {k: np.stack([r[k] for r in runs]) for k in runs[0]}

    actual = stacked([run(runnable, model, s) for s in samples])
    expected = stacked(reference.outputs_each(model.reference, samples))
    allowance = None
    if float_reference is not None:
        floats = stacked(reference.outputs_each(float_reference, samples))
        allowance = {k: INT8_SHARE_OF_OWN_ERROR * float(np.max(np.abs(
            expected[k].astype(np.float64) - floats[k]))) for k in expected if k in floats}
    report = compare(actual, expected, rtol, min_cosine, allowance)
    if allowance:
        note = (note + "; " if note else "") + (
            f"max abs err allowed up to {INT8_SHARE_OF_OWN_ERROR:g} of the quantized model's "
            "own error against the float model: " + ", ".join(
                f"{k} {v:.3g}" for k, v in allowance.items()))
    return replace(report, note=note)


def median_ms(executable: Any, model: Any, inputs: Mapping[str, Any], runs: int = 10) -> float:
    """Median latency of single inferences on this machine (two warm-up runs dropped)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    with quiet_scope_warnings():
        vm = VirtualMachine(executable, tvm.cpu())
    vm.set_input("main", *[tvm.runtime.tensor(inputs[s.name]) for s in model.inputs])
    timer = vm.time_evaluator("invoke_stateful", tvm.cpu(), number=1, repeat=runs + 2)
    return 1000.0 * float(np.median(list(timer("main").results)[2:]))

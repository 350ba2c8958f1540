"""Checking compiled outputs against ONNX Runtime: inputs, reference runs and the comparison."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import ConfigError, ModelImportError

# FP32 code that reorders sums (packed layouts, tiling) differs from ORT by rounding only;
# these bounds are ~100x that rounding noise on the zoo models and far below any real bug.
DEFAULT_RTOL = 1e-3
DEFAULT_MIN_COSINE = 0.9999


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
    extra: dict[str, Any] = field(default_factory=dict)

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


def onnxruntime_outputs(model: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX model (ModelProto or path) in ONNX Runtime's CPU provider.

    Raises:
        ModelImportError: ONNX Runtime refuses the model.
    """
    import onnxruntime as ort

    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    try:
        session = ort.InferenceSession(str(data) if isinstance(data, Path) else data,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, dict(inputs))
    except Exception as err:  # onnxruntime raises its own exception classes
        raise ModelImportError(f"ONNX Runtime cannot run the reference model: {err}") from err
    return dict(zip(names, values, strict=True))


def compare(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    rtol: float = DEFAULT_RTOL,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> VerifyReport:
    """Compare outputs by name: |a - e| <= rtol * max(1, max|e|) and cosine >= min_cosine."""
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
        ok = error <= rtol * max(1.0, scale) and cosine >= min_cosine
        checks.append(OutputCheck(name, error, scale, cosine, ok))
    return VerifyReport(checks, rtol, min_cosine)

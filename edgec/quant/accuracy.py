"""Accuracy of a quantized model against FP32: output agreement, per-layer error, the report.

The FP32 side is always ONNX Runtime running the float model; the per-layer errors come
from ONNX Runtime running the float and the QDQ model with every intermediate tensor
exposed, so they point at the layer that loses accuracy independently of edgec's code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from edgec.quant.options import CHECK_TOLERANCE

# Integer multiply-accumulates (x86 AMX/AVX2/VNNI, aarch64 NEON/dotprod), then the float FMAs.
MAC_MNEMONICS = ("tdpbusd", "vpmaddubsw", "vpmaddwd", "vpdpbusd", "vpdpwssd", "sdot", "udot",
                 "smull", "smull2", "umull", "umull2", "sadalp", "uadalp", "smlal", "smlal2",
                 "umlal", "umlal2", "mla", "vfmadd231ps", "fmla")


@dataclass(frozen=True)
class OutputAgreement:
    """One output of the quantized model against FP32 over all evaluation samples."""

    name: str
    max_abs_error: float
    max_abs_fp32: float
    cosine: float  # mean over samples of each sample's cosine
    min_cosine: float
    top1_agreement: float | None  # classifiers only: share of samples with the same argmax


@dataclass(frozen=True)
class LayerError:
    """Relative L2 error of one intermediate tensor (QDQ vs FP32, both in ONNX Runtime) and
    how much of it the layer itself added over its worst input."""

    tensor: str
    op: str
    relative_error: float
    added: float


@dataclass(frozen=True)
class QuantReport:
    """What quantization cost and bought; printed by `edgec compile` and kept in --json."""

    mode: str
    samples: int
    sample_source: str
    outputs: list[OutputAgreement]
    layers: list[LayerError] = field(default_factory=list)
    qdq_left: dict[str, int] = field(default_factory=dict)
    integer_layers: dict[str, int] = field(default_factory=dict)
    mac_instructions: dict[str, int] = field(default_factory=dict)
    fp32_ms: float | None = None
    quantized_ms: float | None = None
    untimed_because: str = ""  # why fp32_ms and quantized_ms are None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.mode} vs FP32 (ONNX Runtime) on {self.samples} {self.sample_source}:",
                 f"  {'output':<20} {'max abs err':>12} {'max |fp32|':>10} {'cosine':>10} "
                 f"{'min cosine':>10} {'top-1 agree':>12}"]
        for o in self.outputs:
            top1 = "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.1f}%"
            lines.append(f"  {o.name:<20} {o.max_abs_error:>12.3e} {o.max_abs_fp32:>10.3g} "
                         f"{o.cosine:>10.6f} {o.min_cosine:>10.6f} {top1:>12}")
        if self.layers:
            lines.append("  layers adding the most error (relative L2 vs FP32, ONNX Runtime):")
            lines += [f"    {e.tensor} ({e.op}): {e.relative_error:.4f} (+{e.added:.4f})"
                      for e in self.layers]
        if self.integer_layers:
            lines.append("  integer layers: " + ", ".join(
                f"{n} x {k}" for k, n in self.integer_layers.items()))
        if self.qdq_left:
            lines.append("  float quantize/dequantize left after integer lowering: "
                         + ", ".join(f"{n} {k}" for k, n in self.qdq_left.items()))
        if self.mac_instructions:
            lines.append("  multiply-accumulate instructions in the compiled code: " + ", ".join(
                f"{k} {n}" for k, n in self.mac_instructions.items()))
        if self.fp32_ms is not None and self.quantized_ms is not None:
            lines.append(f"  latency here: FP32 {self.fp32_ms:.2f} ms, {self.mode} "
                         f"{self.quantized_ms:.2f} ms (median, untuned unless logs given)")
        elif self.untimed_because:
            lines.append(f"  latency against FP32: not timed: {self.untimed_because}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def verify_tolerance(mode: str, outputs: Sequence[OutputAgreement], source: str) -> dict:
    """What `edgec verify` allows a quantized build against the *float* model (compile checked
    INT8 against the QDQ model, which verify does not have): twice the worst disagreement
    with FP32 that compile measured, never tighter than compile's own check."""
    rtol, min_cosine = CHECK_TOLERANCE[mode]
    relative = max(o.max_abs_error / max(1.0, o.max_abs_fp32) for o in outputs)
    worst_cosine = min(o.min_cosine for o in outputs)
    return {"rtol": max(rtol, 2 * relative),
            "min_cosine": min(min_cosine, 1 - 2 * (1 - worst_cosine)),
            "why": f"{mode} build vs the float model: twice the disagreement compile measured on "
                   f"{source} (max error {relative:.3g} of max |fp32|, cosine {worst_cosine:.4f})"}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / norm) if norm else float(np.array_equal(a, b))


def agreement(fp32: Sequence[Mapping[str, np.ndarray]],
              quantized: Sequence[Mapping[str, np.ndarray]]) -> list[OutputAgreement]:
    """Compare per-sample outputs by name; top-1 for (1, classes) outputs."""
    results = []
    for name in fp32[0]:
        want = np.stack([np.asarray(run[name], np.float64) for run in fp32])
        got = np.stack([np.asarray(run[name], np.float64) for run in quantized])
        top1 = None
        if want.ndim == 3 and want.shape[1] == 1 and want.shape[2] > 1:
            top1 = float(np.mean(want.argmax(-1) == got.argmax(-1)))
        cosines = [_cosine(g, w) for g, w in zip(got, want, strict=True)]
        results.append(OutputAgreement(
            name, float(np.abs(got - want).max()), float(np.abs(want).max()),
            float(np.mean(cosines)), float(np.min(cosines)), top1))
    return results


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT,
                                                                   None)
                                for n in names if n not in present)
    return exposed.SerializeToString()


def _run_all(model_bytes: bytes, names: Sequence[str],
             samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for sample in samples:
        for name, value in zip(names, session.run(list(names), dict(sample)), strict=True):
            values[name].append(value)
    return values


def layer_errors(fp32: onnx.ModelProto, qdq: onnx.ModelProto,
                 samples: Sequence[Mapping[str, np.ndarray]], top: int = 5) -> list[LayerError]:
    """The `top` float tensors whose error vs FP32 grows the most at their own layer.

    Args:
        fp32: the float model the QDQ model was made from (same tensor names).
        qdq: the quantized model; its float tensors (conv outputs before their
            QuantizeLinear, adds, pools) keep the float model's names.
    """
    # The tensor the next layer reads is the DequantizeLinear output when T was quantized
    # (ORT names it T_DequantizeLinear_Output); T itself may then be a pre-activation value
    # (ORT drops Relu/Clip that the quantized range already clamps).
    produced = {out for node in qdq.graph.node for out in node.output}
    seen = {}
    for node in fp32.graph.node:
        for name in node.output[:1]:
            dequantized = f"{name}_DequantizeLinear_Output"
            if dequantized in produced or name in produced:
                seen[name] = dequantized if dequantized in produced else name
    names = list(seen)
    if not names:
        return []
    want = _run_all(_with_outputs(fp32, names), names, samples)
    got = _run_all(_with_outputs(qdq, [seen[n] for n in names]), [seen[n] for n in names],
                   samples)
    got = {name: got[seen[name]] for name in names}
    error: dict[str, float] = {}
    for name in names:
        reference = np.concatenate([v.ravel() for v in want[name]]).astype(np.float64)
        actual = np.concatenate([v.ravel() for v in got[name]]).astype(np.float64)
        scale = float(np.linalg.norm(reference)) or 1.0
        error[name] = float(np.linalg.norm(actual - reference)) / scale
    # A layer's own share: its error minus the worst error it reads, following unmeasured
    # tensors (e.g. a conv output ORT fused away) back to the nearest measured one.
    reaching: dict[str, float] = {}
    results = []
    for node in fp32.graph.node:
        inherited = max((reaching.get(i, 0.0) for i in node.input), default=0.0)
        for out in node.output:
            reaching[out] = error.get(out, inherited)
        if node.output and node.output[0] in error:
            own = error[node.output[0]]
            results.append(LayerError(node.output[0], node.op_type, own,
                                      max(own - inherited, 0.0)))
    return sorted(results, key=lambda e: e.added, reverse=True)[:top]


def count_mnemonics(assembly: str, mnemonics: Sequence[str] = MAC_MNEMONICS) -> dict[str, int]:
    """How often each instruction appears in an assembly listing (only those found)."""
    found = {}
    for mnemonic in mnemonics:
        count = len(re.findall(rf"^\s+{mnemonic}\s", assembly, re.MULTILINE))
        if count:
            found[mnemonic] = count
    return found

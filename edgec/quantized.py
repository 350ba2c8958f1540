"""The quantization steps of compile: import -> quantize (INT8 with calibration data, FP16),
and the accuracy and speed report against the float model."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgec import build, check, frontend, layout, quant, reference
from edgec.model import Model
from edgec.quant import QuantizeOptions
from edgec.quant.accuracy import QuantReport
from edgec.targets import Target


@dataclass(frozen=True)
class Quantized:
    """What the quantize stage leaves for the check and the accuracy report."""

    fp32: Model  # the float model, imported (its .reference is the user's original)
    graph: Any  # the simplified float ONNX graph that was quantized
    qdq: Any  # the QDQ ONNX model (INT8 only)
    samples: list[dict[str, Any]]
    source: str
    counts: dict[str, int]


def import_quantized(source: str, input_shapes: Mapping | None, qopts: QuantizeOptions,
                     target: Target, say: Callable[[str], None]) -> tuple[Model, Quantized]:
    """import → quantize: INT8 quantizes the simplified ONNX graph and lowers the QDQ graph
    to integer compute; FP16 converts the float Relax graph."""
    from edgec.errors import QuantizeError
    from edgec.quant import calibration

    if frontend.is_tflite(source):
        raise QuantizeError(f"--quantize {qopts.mode} quantizes ONNX models; {source} is TFLite "
                            "(an int8 .tflite compiles as it is, without --quantize)")
    prepared = frontend.prepare_onnx(source, input_shapes)
    fp32 = frontend.convert(prepared)
    if qopts.calib:
        samples = quant.load_calibration(qopts.calib, qopts.calib_options, fp32.inputs)
        origin = ("random inputs" if qopts.calib == quant.RANDOM
                  else "scikit-image's stock photos" if qopts.calib == quant.SAMPLES
                  else f"calibration inputs from {qopts.calib}")
    else:  # FP16 needs no calibration; without data, compare on seeded random inputs
        samples, origin = calibration.random_samples(fp32.inputs, 4), "random inputs"
    if qopts.mode == "fp16":
        return quant.to_fp16(fp32), Quantized(fp32, prepared.graph, None, samples, origin, {})
    say(f"calibrating on {len(samples)} samples ({qopts.method}) with ONNX Runtime")
    cpu = target.cpu
    qdq = quant.quantize_onnx(prepared.graph, samples, qopts.method, qopts.per_channel,
                              reduce_range=cpu.int8_weight_bits < 8,
                              activations=cpu.int8_activation_dtype)
    model, counts = quant.lower_int8(
        frontend.convert(dataclasses.replace(prepared, graph=qdq, reference=qdq)))
    return model, Quantized(fp32, prepared.graph, qdq, samples, origin, counts)


def quant_report(model: Model, target: Target, executable: Any, runnable: Any,
                 options: Any, quantized: Quantized, float_schedule: Any) -> QuantReport:
    """Agreement with FP32 (ORT), per-layer error, integer ops and instructions, and speed
    (on a target this machine runs, unless options.time_fp32 is off).
    `options` is compile's CompileOptions; `float_schedule` the tuning schedule for the
    float build it is timed against (a callback of its own, so compile's counts stay the
    quantized build's)."""
    from edgec.quant import accuracy, integer

    mode = options.quantization.mode or ""
    samples = quantized.samples
    fp32_runs = reference.outputs_each(quantized.fp32.reference, samples)
    outputs = accuracy.agreement(fp32_runs, [check.run(runnable, model, s) for s in samples])
    calib = options.quantization.calib
    warnings = ([quant.RANDOM_WARNING] if calib == quant.RANDOM
                else [quant.SAMPLES_WARNING] if calib == quant.SAMPLES else [])
    fp32_ms = quantized_ms = None
    untimed_because = (f"{target.name} code does not run here" if not target.is_native
                       else "" if options.time_fp32 else "--no-time-fp32")
    if not untimed_because:
        float_model = layout.apply_layout(quantized.fp32, model.layout, target)
        fp32_exec = build.compile_to_executable(float_model, target, float_schedule)
        fp32_ms = check.median_ms(fp32_exec, float_model, samples[0])
        quantized_ms = check.median_ms(executable, model, samples[0])
        if quantized_ms >= fp32_ms:
            warnings.append(f"{mode} is not faster than FP32 here ({quantized_ms:.2f} "
                            f"vs {fp32_ms:.2f} ms): it still saves memory; see the README")
    return QuantReport(
        mode=mode, samples=len(samples), sample_source=quantized.source,
        outputs=outputs,
        layers=(accuracy.layer_errors(quantized.graph, quantized.qdq, samples[:4])
                if quantized.qdq else []),
        qdq_left={k.removesuffix("_left"): v for k, v in quantized.counts.items()
                  if k.endswith("_left")},
        integer_layers=dict(collections.Counter(integer.integer_layers(model.ir))),
        mac_instructions=accuracy.count_mnemonics(build.assembly(executable)),
        fp32_ms=fp32_ms, quantized_ms=quantized_ms, warnings=warnings,
        untimed_because=untimed_because)

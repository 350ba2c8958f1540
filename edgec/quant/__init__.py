"""Quantize stage: settings (options), calibration data (calibration), the QDQ model from
ONNX Runtime's quantizer and FP16 (qdq), the rewrite of the QDQ graph to integer compute in
Relax (integer, integer_patterns) and the accuracy report against FP32 (accuracy)."""

from edgec.quant.options import (
    CHECK_TOLERANCE,
    METHODS,
    MODES,
    RANDOM,
    RANDOM_WARNING,
    SAMPLES,
    SAMPLES_WARNING,
    CalibOptions,
    QuantizeOptions,
    check_settings,
    parse_floats,
)
from edgec.quant.qdq import load_calibration, lower_int8, quantize_onnx, to_fp16

__all__ = ["CHECK_TOLERANCE", "METHODS", "MODES", "RANDOM", "RANDOM_WARNING", "SAMPLES",
           "SAMPLES_WARNING", "CalibOptions",
           "QuantizeOptions", "check_settings", "load_calibration", "lower_int8",
           "parse_floats", "quantize_onnx", "to_fp16"]

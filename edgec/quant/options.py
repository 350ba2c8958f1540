"""Quantization settings that validate themselves: the mode, the calibration data and how
images become inputs. `compile` and `tune` share them, so both quantize alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgec.errors import QuantizeError, did_you_mean

MODES = ("int8", "fp16")
AUTO = "auto"  # --quantize auto: edgec.quant.by_measurement picks one of FP32 and MODES
METHODS = ("minmax", "entropy", "percentile")
RANDOM = "random"
SAMPLES = "samples"  # --calib samples: stock photos bundled with scikit-image
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Tolerances of the compile check against ONNX Runtime running the same (QDQ or float)
# model. INT8: edgec and ORT round the requantization of ties and near-ties independently,
# and one step of difference propagates, so outputs differ by a few quantization steps.
CHECK_TOLERANCE = {"int8": (0.05, 0.995), "fp16": (0.02, 0.999)}
SAMPLES_WARNING = ("calibrating on 12 stock photos (--calib samples): good enough to try INT8, "
                   "but calibrate a model you deploy on a few hundred inputs from its real use")
RANDOM_WARNING = ("calibrating on random data (--calib random): the INT8 ranges fit noise, "
                  "so accuracy numbers mean nothing; use real inputs for a deployable model")


def choose(kind: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise QuantizeError(f'unknown {kind} "{value}"{did_you_mean(value, choices)}; '
                            f"use one of {', '.join(choices)}")


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """Parse "0.485,0.456,0.406" for a --calib-mean/--calib-std style option.

    Raises:
        QuantizeError: not a comma-separated list of numbers.
    """
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise QuantizeError(f'{option} "{text}" is not a comma-separated list of numbers'
                            ) from None


def check_settings(mode: str | None, calib: str | None, method: str) -> None:
    """Reject unusable --quantize/--calib/--calib-method combinations before any work.

    Raises:
        QuantizeError: unknown mode or method, INT8 without calibration data, or
            calibration data without a mode.
    """
    if mode is None:
        if calib:
            raise QuantizeError("--calib is only used with --quantize int8 (or fp16, to "
                                "measure accuracy); add --quantize int8")
        return
    choose("--quantize mode", mode, (*MODES, AUTO))
    choose("calibration method", method, METHODS)
    if mode == "int8" and not calib:
        raise QuantizeError("--quantize int8 needs calibration data: --calib FOLDER|FILE "
                            "(images or .npy/.npz), --calib samples (stock photos, to try "
                            "it) or --calib random (a smoke test)")


@dataclass(frozen=True)
class CalibOptions:
    """How calibration images become model inputs; validates itself.

    Images are resized to the model input's H x W, scaled to [0, 1], normalized per channel
    with mean/std, put in RGB or BGR order and laid out as NCHW or NHWC ("auto": from where
    the input shape has its 1 or 3 channels). .npy/.npz tensors are used as they are.
    At most `limit` samples are read: calibration time grows with them.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "RGB"
    layout: str = "auto"
    limit: int = 32

    def __post_init__(self) -> None:
        choose("channel order", self.channel_order, ("RGB", "BGR"))
        choose("calibration layout", self.layout, ("auto", "NCHW", "NHWC"))
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise QuantizeError(f"--calib-mean and --calib-std need 1 or 3 values each, got "
                                f"{len(self.mean)} and {len(self.std)}")
        if min(abs(s) for s in self.std) == 0.0:
            raise QuantizeError("--calib-std values must be non-zero")
        if self.limit < 1:
            raise QuantizeError(f"--calib-limit must be at least 1, got {self.limit}")

    def display(self) -> str:
        return (f"mean {list(self.mean)}, std {list(self.std)}, {self.channel_order}, "
                f"{self.layout}, <= {self.limit} samples")


@dataclass(frozen=True)
class QuantizeOptions:
    """--quantize and its calibration options (validated on creation).

    Attributes:
        mode: None (float), "int8", "fp16" or "auto" (the fastest that keeps accuracy).
        calib: a folder, a .npy/.npz file or "random"; INT8 needs it, FP16 uses it only to
            measure accuracy.
        method: ONNX Runtime's calibration method ("minmax", "entropy", "percentile").
        per_channel: INT8 weight scales per output channel (else per tensor).
        calib_options: how images become inputs.
    """

    mode: str | None = None
    calib: str | None = None
    method: str = "minmax"
    per_channel: bool = True
    calib_options: CalibOptions = field(default_factory=CalibOptions)

    def __post_init__(self) -> None:
        check_settings(self.mode, self.calib, self.method)

    def display_rows(self) -> list[tuple[str, str]]:
        """(setting, value) rows for a settings banner."""
        rows = [("quantize", self.mode)] if self.mode else []
        if self.mode == "int8" or self.calib:
            granularity = "per-channel" if self.per_channel else "per-tensor"
            rows.append(("calibration", f"{self.calib}, {self.method}, {granularity}, "
                         f"{self.calib_options.display()}"))
        return rows


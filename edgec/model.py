"""The artifact that flows between pipeline stages: a Relax module plus what is known about it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def __str__(self) -> str:
        return f"{self.name}:{'x'.join(map(str, self.shape))}:{self.dtype}"


@dataclass(frozen=True)
class Model:
    """A model on its way through edgec.

    Attributes:
        name: short name used for files and reports.
        reference: the model as read, before any fix-up: the independent reference that
            compiled code is checked against (an ONNX ModelProto, run by ONNX Runtime, or a
            .tflite path, run by LiteRT; see edgec.reference).
        ir: the tvm.IRModule (Relax) with weights bound as constants.
        inputs / outputs: names, static shapes and dtypes, in call order.
        layout: data layout of the conv layers ("NCHW", "NHWC", "NCHW8c", ...).
        layout_why: why the layout stage chose it when asked for the default ("" when the
            layout was named).
        applied: the steps applied so far, in order ("simplified", "layout:NCHW8c", ...).
    """

    name: str
    reference: Any
    ir: Any
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    layout: str = "NCHW"
    applied: tuple[str, ...] = ()
    layout_why: str = ""

    def evolve(self, step: str, **changes: Any) -> Model:
        """A copy with `changes` applied and `step` recorded in `applied`."""
        return dataclasses.replace(self, applied=(*self.applied, step), **changes)

    @property
    def quantization(self) -> str | None:
        """The quantization mode applied ("int8", "fp16"), None for a float model."""
        return quantization_mode(self.applied)


def quantization_mode(applied: tuple[str, ...] | list[str]) -> str | None:
    """The last "quantize:<mode>" step of a model's (or a library metadata's) applied
    steps, None when there is none."""
    modes = [step.split(":", 1)[1] for step in applied if step.startswith("quantize:")]
    return modes[-1] if modes else None

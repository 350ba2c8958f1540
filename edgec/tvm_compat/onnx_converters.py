"""The only place edgec reaches into TVM's Relax ONNX frontend: converter overrides and
its table of known ops.

TVM 0.27 converts Clip (ReLU6) into opaque TE calls, and HardSwish/HardSigmoid into R.clip;
ConvertLayout sees through neither, so every ReLU6 or hard-swish in a MobileNet forced a pair
of layout transforms. Here they become maximum/minimum with scalar constants: elementwise
ops that ConvertLayout propagates and FuseOps fuses into the producing conv.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def _constant_scalar(expr) -> float | None:
    import tvm

    if isinstance(expr, tvm.ir.Constant):
        value = expr.value.numpy()
        if value.size == 1 and np.isfinite(value).all():
            return float(value.reshape(()))
    return None


def _clamp(bb, x, low: float | None, high: float | None):
    from tvm import relax

    dtype = str(bb.normalize(x).ty.dtype)
    if low is not None:
        x = relax.op.maximum(x, relax.const(low, dtype))
    if high is not None:
        x = relax.op.minimum(x, relax.const(high, dtype))
    return x


def _clip_converter(original):
    class Clip(original):  # type: ignore[misc, valid-type]
        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            bounds = [None if b is None else _constant_scalar(b) for b in inputs[1:3]]
            given = [b is not None for b in inputs[1:3]]
            known = [b is not None for b in bounds]
            if given != known:  # a bound computed at run time: keep TVM's conversion
                return super()._impl_v13(bb, inputs, attr, params)
            return _clamp(bb, inputs[0], bounds[0], bounds[1])

        _impl_v11 = _impl_v13

    return Clip


def _hard_sigmoid(bb, inputs, attr, params):
    from tvm import relax

    x = bb.normalize(inputs[0])  # converters may receive not yet typed expressions
    dtype = str(x.ty.dtype)
    alpha = relax.const(float(attr.get("alpha", 0.2)), dtype)
    beta = relax.const(float(attr.get("beta", 0.5)), dtype)
    return _clamp(bb, relax.op.add(relax.op.multiply(x, alpha), beta), 0.0, 1.0)


def _hard_swish(bb, inputs, attr, params):
    from tvm import relax

    x = bb.normalize(inputs[0])
    dtype = str(x.ty.dtype)
    gate = _clamp(bb, relax.op.add(x, relax.const(3.0, dtype)), 0.0, 6.0)
    return relax.op.multiply(x, relax.op.multiply(gate, relax.const(1.0 / 6.0, dtype)))


def _converter(original, impl, *versions: int):
    """A subclass of TVM's converter whose _impl_v{N} are `impl`."""
    methods = {f"_impl_v{v}": classmethod(lambda cls, *args: impl(*args)) for v in versions}
    return type(original.__name__, (original,), methods)


@contextlib.contextmanager
def converter_overrides() -> Iterator[None]:
    """Within this context, from_onnx uses edgec's converters where TVM's fall short."""
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map

    def patched():
        table = original()
        table["Clip"] = _clip_converter(table["Clip"])
        table["HardSigmoid"] = _converter(table["HardSigmoid"], _hard_sigmoid, 1, 6)
        table["HardSwish"] = _converter(table["HardSwish"], _hard_swish, 14)
        return table

    onnx_frontend._get_convert_map = patched
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def known_ops() -> set[str]:
    """The ONNX op types TVM's Relax frontend has a converter for (its private table)."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return set(_get_convert_map())

"""Reference runtimes that compiled code is checked against: ONNX Runtime for ONNX models.

They are independent of TVM, so a wrong kernel, layout or legalization shows up as a
mismatch instead of passing silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import ModelImportError


def outputs(model: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the reference model (an ONNX ModelProto or path) and return its outputs by name.

    Raises:
        ModelImportError: the reference runtime refuses the model.
    """
    return onnxruntime_outputs(model, inputs)


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
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelImportError(
            f"ONNX Runtime cannot run the reference model, so the compiled code cannot be "
            f"checked ({first}); --no-check compiles without the check") from err
    return dict(zip(names, values, strict=True))

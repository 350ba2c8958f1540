"""Shared helpers: run the real `edgec` command and build small ONNX models for error cases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `python -m edgec ARGS` as a user would, capturing text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgec", *args], capture_output=True, text=True,
        env=full_env, cwd=cwd or REPO, timeout=timeout,
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: exit 1, one 'error:' line on stderr naming the problem, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def save_model(nodes, inputs, outputs, inits, path: Path, opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def dynamic_conv_model(tmp_path: Path) -> Path:
    """A conv net with symbolic batch/height/width, as exported with dynamic axes."""
    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    return save_model(
        [helper.make_node("Conv", ["image", "w"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["out"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8, "h", "w"])],
        [weight], tmp_path / "dynamic.onnx",
    )


def leftovers(directory: Path) -> list[str]:
    """Files a failed command must not leave behind (artifacts and temp dirs)."""
    return sorted(p.name for p in directory.iterdir()
                  if p.suffix in (".so", ".json") or p.name.startswith(".edgec-"))

"""What bench/compare.py measures besides latency: MACs, the machine's peak, tuning time, inputs.

    macs(model)              multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul nodes
    peak_gflops(threads)     best SGEMM rates of numpy's BLAS on `threads` threads
    tuning_time(logs_dir)    time MetaSchedule spent on the target's tuning logs
    snapshot_database(...)   a consistent copy of a database another process may be writing
    calibration_images(...)  real photos from scikit-image, resized and normalized
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx

# --- MACs ---------------------------------------------------------------------------------


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of every value and initializer, after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)  # Shape->Reshape
    graph = inferred.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """MACs of one node; 0 for ops that are not a matrix product or a convolution."""
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    first, weight, out = (shapes.get(node.input[0]), shapes.get(node.input[1]),
                          shapes.get(node.output[0]))
    if first is None or weight is None or out is None:
        raise ValueError(f"{node.op_type} {node.name}: shapes unknown after shape inference")
    if node.op_type == "Conv":  # each output element sums Cin/group x kH x kW products
        return int(np.prod(out)) * int(np.prod(weight[1:]))
    if node.op_type == "ConvTranspose":  # each input element scatters Cout/group x kH x kW
        return int(np.prod(first)) * int(np.prod(weight[1:]))
    trans_a = any(a.name == "transA" and a.i for a in node.attribute)
    depth = first[-2] if node.op_type == "Gemm" and trans_a else first[-1]
    return int(np.prod(out)) * depth


def macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one inference (static input shapes needed).

    Counts Conv, ConvTranspose, Gemm and MatMul only: elementwise ops, pooling and
    BatchNorm are memory-bound and a few percent of the arithmetic in these CNNs.
    """
    shapes = _shapes(model)
    return sum(_node_macs(node, shapes) for node in model.graph.node)


# --- the machine's peak -------------------------------------------------------------------


_GEMM = """
import sys, time
import numpy as np
size, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((size, size), dtype=np.float32)
b = rng.standard_normal((size, size), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
print(2.0 * size**3 / best / 1e9)
"""


def _gemm_gflops(threads: int, size: int, repeats: int, coretype: str | None) -> float:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads)}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    done = subprocess.run([sys.executable, "-c", _GEMM, str(size), str(repeats)], env=env,
                          capture_output=True, text=True, check=True, timeout=600)
    return float(done.stdout.split()[-1])


def peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best single-precision GEMM rate (size³, 2·size³ FLOP) of numpy's BLAS on `threads`.

    OpenBLAS reads its thread count and kernel choice when it loads, so each measurement
    runs in a child Python. Besides the kernels the environment selects (OPENBLAS_CORETYPE
    may pin AVX2 ones), a CPU with AVX-512 also gets OpenBLAS's AVX-512 kernels measured:
    ONNX Runtime and OpenVINO pick their kernels from cpuid, so the machine's peak is the
    larger rate. Returns {kernels: GFLOP/s}.
    """
    rates = {os.environ.get("OPENBLAS_CORETYPE", "auto"): _gemm_gflops(threads, size, repeats,
                                                                        None)}
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if " avx512f " in flags and "SkylakeX" not in rates:
        rates["SkylakeX"] = _gemm_gflops(threads, size, repeats, "SkylakeX")
    return rates


# --- tuning time --------------------------------------------------------------------------

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")
SESSION_GAP_S = 600.0  # a silence longer than this separates two tuning sessions


def _log_stamps(log_dir: Path) -> tuple[list[float], int]:
    stamps, trials = [], 0
    for path in sorted(log_dir.glob("*.log")):
        with path.open(errors="replace") as lines:
            for line in lines:
                match = _STAMP.match(line)
                if match:
                    stamps.append(datetime.fromisoformat(match.group(1)).timestamp())
                    trials += "] Trial #" in line
    return sorted(stamps), trials


def _shown(path: Path) -> str:
    """A path as the README should show it: relative to the checkout when inside it."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def tuning_time(logs_dir: Path) -> dict:
    """Time spent tuning the database in `logs_dir`, per model where known.

    Reads `metadata.json` ({"tuning_seconds": s, "models": {name: {"tuning_seconds": s}}})
    if present, else MetaSchedule's own logs (logs/*.log): the span of their timestamps,
    without silences longer than SESSION_GAP_S between sessions. Logs are not committed, so
    a fresh checkout has neither and the answer points at edgec/shipped/tuning_logs/README.md.
    """
    metadata = logs_dir / "metadata.json"
    if metadata.is_file():
        data = json.loads(metadata.read_text())
        models = {k: v.get("tuning_seconds") for k, v in data.get("models", {}).items()}
        return {"seconds": data.get("tuning_seconds"), "trials": data.get("trials"),
                "models": models, "source": _shown(metadata)}
    stamps, trials = _log_stamps(logs_dir / "logs")
    if not stamps:
        return {"seconds": None, "trials": None, "models": {},
                "source": "see edgec/shipped/tuning_logs/README.md"}
    gaps = np.diff(stamps)
    seconds = float(gaps[gaps <= SESSION_GAP_S].sum())
    return {"seconds": seconds, "trials": trials, "models": {},
            "source": f"{_shown(logs_dir / 'logs')}/*.log timestamps"}


def snapshot_database(source: Path, dest: Path) -> Path:
    """Copy a MetaSchedule JSON database's complete lines to `dest`.

    A tune may be appending to `source` right now: records are read before workloads (a
    record's workload is always written first) and a half-written last line is dropped, so
    every model of the run sees the same, loadable database.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("database_tuning_record.json", "database_workload.json"):
        path = source / name
        text = path.read_text() if path.is_file() else ""
        (dest / name).write_text(text[: text.rfind("\n") + 1])
    metadata = source / "metadata.json"  # its in-model check verdicts apply at compile
    if metadata.is_file():
        (dest / "metadata.json").write_text(metadata.read_text())
    return dest


# --- inputs -------------------------------------------------------------------------------

# RGB (or grey) photos bundled inside scikit-image's wheel: nothing is downloaded.
CALIBRATION_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                      "immunohistochemistry", "colorwheel", "camera")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def calibration_images(shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """`count` photos as NCHW float32 batches of `shape`: centre crop, resize, ImageNet norm."""
    from skimage import color, data, transform

    batch, _, height, width = shape
    images = []
    for name in CALIBRATION_IMAGES[:count]:
        image = getattr(data, name)()
        image = color.gray2rgb(image) if image.ndim == 2 else image[..., :3]
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        image = transform.resize(image[top:top + side, left:left + side], (height, width),
                                 anti_aliasing=True)  # floats in [0, 1]
        chw = ((image - _MEAN) / _STD).astype(np.float32).transpose(2, 0, 1)
        images.append(np.ascontiguousarray(np.repeat(chw[None], batch, axis=0)))
    return images

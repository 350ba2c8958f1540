"""INT8 against FP32, in edgec and in ONNX Runtime, on the same machine and threads.

    python bench/int8.py [--models mobilenet_v2 resnet18] [--runs 50] [--json FILE]

For each model: edgec FP32, edgec INT8 (calibrated on scikit-image's bundled photos),
ONNX Runtime FP32 and ONNX Runtime INT8 running the very QDQ model edgec compiled; median
ms of --runs single inferences after warm-up, and the cosine of the INT8 logits vs FP32
over the photos. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import runtimes  # bench/ is on sys.path as a script
from runtimes import ROUNDS, isolated, median_ms

from edgec import latency, pipeline, quant, runtime, zoo
from edgec.model import TensorSpec

MODELS = ("mobilenet_v2", "resnet18")


def photo_folder(where: Path) -> Path:
    """A folder of the stock photos `--calib samples` uses (scikit-image's)."""
    from edgec.quant.calibration import sample_photos

    folder = where / "photos"
    folder.mkdir()
    for photo in sample_photos():
        shutil.copy(photo, folder / photo.name)
    return folder


def edgec_median_ms(library: Path, inputs: dict, runs: int, warmup: int) -> float:
    report = latency.benchmark(runtime.load(library), inputs, runs=runs, warmup=warmup)
    return report.stats()["median"]


def ort_median_ms(model, threads: int, inputs: dict, runs: int, warmup: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return median_ms(lambda: session.run(None, inputs), runs, warmup)


def ort_logits(model, samples: list[dict]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, s)[0] for s in samples])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def measure(name: str, target: str, photos: Path, out: Path, threads: int, runs: int,
            warmup: int) -> dict:
    fp32_lib, int8_lib = out / f"{name}-fp32.so", out / f"{name}-int8.so"
    pipeline.compile_model(pipeline.CompileOptions(model=f"zoo:{name}", output=fp32_lib,
                                                   target=target))
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=f"zoo:{name}", output=int8_lib, target=target, time_fp32=False,  # timed below
        quantization=quant.QuantizeOptions("int8", calib=str(photos))))
    samples = quant.load_calibration(str(photos), quant.CalibOptions(),
                                        [TensorSpec("input", (1, 3, 224, 224))])
    float_onnx, qdq = zoo.build(name), result.model.reference
    timers = {"fp32_ms": partial(edgec_median_ms, fp32_lib),
              "int8_ms": partial(edgec_median_ms, int8_lib),
              "ort_fp32_ms": partial(ort_median_ms, float_onnx, threads),
              "ort_int8_ms": partial(ort_median_ms, qdq, threads)}
    # Each timing runs alone in a fresh process, in interleaved rounds (bench/runtimes.py).
    rounds: dict[str, list[float]] = {key: [] for key in timers}
    for _ in range(ROUNDS):
        for key, timer in timers.items():
            rounds[key].append(isolated(timer, samples[0], runs, warmup))
    timed = {key: statistics.median(values) for key, values in rounds.items()}
    reference = ort_logits(float_onnx, samples)
    int8_model = runtime.load(int8_lib)
    ours = np.concatenate([int8_model.run(s)["logits"] for s in samples])
    theirs = ort_logits(qdq, samples)
    return {**timed, "cosine": cosine(ours, reference),
            "ort_int8_cosine": cosine(theirs, reference),
            "top1_agreement": float(np.mean(ours.argmax(1) == reference.argmax(1))),
            "samples": len(samples)}


def main() -> int:
    args, threads = runtimes.parse_script_arguments(__doc__, MODELS, runs=50)
    rows = {}
    print(f"{'model':<14} {'edgec fp32':>10} {'edgec int8':>10} {'ORT fp32':>9} {'ORT int8':>9} "
          f"{'cosine':>8} {'top-1':>6}   (ms, median of {args.runs}, {threads} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        photos = photo_folder(Path(tmp))
        for name in args.models:
            row = rows[name] = measure(name, args.target, photos, Path(tmp), threads, args.runs,
                                       args.warmup)
            print(f"{name:<14} {row['fp32_ms']:>10.2f} {row['int8_ms']:>10.2f} "
                  f"{row['ort_fp32_ms']:>9.2f} {row['ort_int8_ms']:>9.2f} {row['cosine']:>8.5f} "
                  f"{100 * row['top1_agreement']:>5.0f}%")
    print(f"target {args.target}")
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "threads": threads,
                                         "runs": args.runs,
                                         "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

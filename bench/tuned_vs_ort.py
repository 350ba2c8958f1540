"""edgec (untuned, and with the shipped tuning logs) against ONNX Runtime, side by side.

    python bench/tuned_vs_ort.py [--target x86_64] [--models ...] [--runs 60] [--json FILE]

Every row is measured in this one run, on the same threads: warm-up, then the median of
--runs single inferences. `ratio` is edgec tuned / ONNX Runtime (below 1.0: edgec is ahead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from runtimes import median_ms  # bench/ is on sys.path when run as a script

from edgec import bench, pipeline, runtime, tune, verify, zoo

MODELS = ("mobilenet_v2", "resnet18", "mobilenet_v3_small")


def ort_median_ms(name: str, inputs: dict, threads: int, runs: int, warmup: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(zoo.build(name).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return median_ms(lambda: session.run(None, inputs), runs, warmup)


def edgec_median_ms(name: str, target: str, logs: Path | None, out: Path, runs: int,
                    warmup: int) -> tuple[float, dict]:
    result = pipeline.compile_model(pipeline.CompileOptions(
        model=f"zoo:{name}", output=out, target=target, tuning_logs=logs, check=True))
    model = runtime.load(out)
    report = bench.benchmark(model, verify.random_inputs(model.info.inputs), runs=runs,
                             warmup=warmup)
    return report.stats()["median"], result.tuning


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    os.environ["TVM_NUM_THREADS"] = str(threads)  # the same thread count for both runtimes
    shipped = tune.logs_root() / args.target
    empty = Path(tempfile.mkdtemp())
    (empty / "database_tuning_record.json").touch()  # an empty database: nothing tuned
    (empty / "database_workload.json").touch()
    rows = {}
    print(f"{'model':<20} {'untuned ms':>10} {'tuned ms':>9} {'ORT ms':>8} {'ratio':>6}  tuned"
          f"   ({threads} threads, median of {args.runs})")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            inputs = verify.random_inputs([{"name": "input", "shape": (1, 3, 224, 224),
                                            "dtype": "float32"}])
            untuned, _ = edgec_median_ms(name, args.target, empty, Path(tmp) / "u.so",
                                         args.runs, args.warmup)
            logs = shipped if shipped.is_dir() else empty
            tuned, stats = edgec_median_ms(name, args.target, logs, Path(tmp) / "t.so",
                                           args.runs, args.warmup)
            ort_ms = ort_median_ms(name, inputs, threads, args.runs, args.warmup)
            rows[name] = {"edgec_tuned_ms": tuned, "edgec_untuned_ms": untuned,
                          "ort_ms": ort_ms, "ratio": tuned / ort_ms,
                          "tuned_functions": stats.get("tuned", 0),
                          "functions": stats.get("functions", 0)}
            print(f"{name:<20} {untuned:>10.2f} {tuned:>9.2f} {ort_ms:>8.2f} "
                  f"{tuned / ort_ms:>6.2f}  {stats.get('tuned', 0)}/{stats.get('functions', 0)}")
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "threads": threads,
                                         "runs": args.runs, "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""edgec (untuned) beside the reference runtime of each real model from the test corpus:
ONNX Runtime for .onnx, LiteRT with XNNPACK for .tflite, side by side in interleaved rounds;
edgec both in its default layout (`--layout default`) and in NHWC.

    .venv/bin/python bench/real_models.py [--models NAME ...] [--int8] [--json FILE]

--int8 (ONNX models): edgec INT8 beside ONNX Runtime's INT8 (static QDQ, per-channel), both
calibrated on the same 8 stock photos, as bench/compare.py does for the zoo.

Each model is compiled for the widest shipped target this CPU runs (the check against its
reference runs as part of the compile). Where edgec is more than 1.2x slower, the compiled
function that costs it most is named, from `CompiledModel.profile`.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

import measures  # bench/ is on sys.path as a script
import numpy as np
import runtimes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import real_models  # noqa: E402  (tests/ holds the pinned corpus and its fetcher)
from edgec import check, runtime  # noqa: E402

SLOWER = 1.2
SHAPES = {"rapidocr_det": {"x": (1, 3, 640, 640)}}


def corpus() -> tuple[str, ...]:
    return tuple(name for name, m in real_models.MODELS.items() if m.expect_error is None)


def inputs_for(model: real_models.RealModel, shapes: dict | None) -> dict:
    specs = [{"name": n, "shape": (shapes or {}).get(n, s), "dtype": d} for n, s, d in model.inputs]
    return check.random_inputs(specs, seed=11)


def with_input_shapes(path: Path, shapes: dict | None, work: Path) -> Path:
    """A copy of an ONNX model whose inputs have `shapes` (inner shapes cleared for ONNX
    Runtime to infer), so every runtime runs the size edgec compiles: CenterFace was
    exported at 32x32 and ONNX Runtime refuses other sizes on the original file."""
    if not shapes:
        return path
    import onnx

    model = onnx.load(str(path))
    for value in model.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name],
                                 strict=True):
                dim.ClearField("dim_param")
                dim.dim_value = size
    del model.graph.value_info[:]
    for value in model.graph.output:  # symbolic: the exported sizes no longer hold
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.dim_param = f"{value.name}_{index}"
    out = work / f"{path.stem}-static.onnx"
    onnx.save(model, str(out))
    return out


def heaviest_function(library: Path, inputs: dict) -> tuple[str, float]:
    profile = runtime.load(library).profile(inputs, runs=5)
    name, ms = next(iter(profile.items()))
    return name, ms


def measure_one(name: str, args, threads: int, work: Path) -> dict:
    model = real_models.MODELS[name]
    path = real_models.fetch(name)
    shapes = SHAPES.get(name) or ({n: s for n, s, _ in model.inputs}
                                 if model.format == "onnx" else None)
    inputs = inputs_for(model, shapes)
    photos = None
    if args.int8:
        if model.format != "onnx" or len(inputs) != 1:
            raise SystemExit(f"error: --int8 times single-input ONNX models; {name} is not one")
        photos = measures.calibration_images(next(iter(inputs.values())).shape, 8)
    quantize = "int8" if args.int8 else None
    contenders = {
        "edgec": runtimes.Edgec(None, work, target=args.target, input_shapes=shapes,
                                quantize=quantize, calibration=photos),
        "edgec_nhwc": runtimes.Edgec(None, work, target=args.target, input_shapes=shapes,
                                     layout="NHWC", quantize=quantize, calibration=photos),
        "reference": (runtimes.LiteRT(threads) if model.format == "tflite"
                      else runtimes.OnnxRuntime(threads, calibration=photos))}
    if model.format == "onnx":
        path = with_input_shapes(path, shapes, work)
    measured = runtimes.measure(contenders, path, inputs, args.runs, args.warmup,
                                rounds=args.rounds)
    edgec, nhwc, ref = measured["edgec"], measured["edgec_nhwc"], measured["reference"]
    row = {"package": f"{model.package}=={model.version}", "format": model.format,
           "ops": model.ops, "notes": model.notes,
           "reference": "LiteRT (XNNPACK)" if model.format == "tflite" else "ONNX Runtime",
           "edgec_ms": edgec["ms"], "edgec_nhwc_ms": nhwc["ms"], "reference_ms": ref["ms"],
           "edgec_note": edgec.get("note"), "reference_note": ref.get("note")}
    if edgec["ms"] and ref["ms"]:
        ratios = [e / r for e, r in zip(edgec["info"]["ms_per_round"],
                                        ref["info"]["ms_per_round"], strict=True)]
        row["ratio"] = float(np.median(ratios))
    if nhwc["ms"] and ref["ms"]:
        row["nhwc_ratio"] = float(np.median([e / r for e, r in zip(
            nhwc["info"]["ms_per_round"], ref["info"]["ms_per_round"], strict=True)]))
        if row["ratio"] > SLOWER:
            library = next(work.glob(f"{path.stem}-{quantize or 'fp32'}-untuned-default.so"))
            row["heaviest"] = heaviest_function(library, inputs)
    return row


def markdown(rows: dict, args, threads: int) -> str:
    lines = [f"Measured on {platform.processor() or platform.machine()} ({args.cpu}), "
             f"`{args.target}` target, {'INT8, ' if args.int8 else ''}{threads} threads, "
             f"batch 1, median of {args.runs} runs "
             f"in {args.rounds} interleaved rounds; ratio = median of per-round edgec / "
             "reference.", "",
             "| model | package | format | ops | edgec untuned | reference | ratio | "
             "edgec NHWC (ratio) | where edgec loses |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        def ms(v):
            return f"{v:.2f} ms" if v else "n/a"
        where = (f"`{r['heaviest'][0]}` {r['heaviest'][1]:.2f} ms" if r.get("heaviest")
                 else "")
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "n/a"
        nhwc = (f"{ms(r.get('edgec_nhwc_ms'))} ({r['nhwc_ratio']:.2f})" if r.get("nhwc_ratio")
                else "n/a")
        lines.append(f"| {name} | {r['package']} | {r['format']} | {r['ops']} | "
                     f"{ms(r['edgec_ms'])} | {ms(r['reference_ms'])} {r['reference']} | "
                     f"{ratio} | {nhwc} | {where} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args, threads = runtimes.parse_script_arguments(
        __doc__, corpus(), runs=30, extra=[("--int8", {"action": "store_true"})])
    from edgec.cpu import host_label

    args.cpu = host_label()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"[bench] {name}", file=sys.stderr, flush=True)
            rows[name] = measure_one(name, args, threads, Path(tmp))
            r = rows[name]
            print(f"{name:<38} edgec {r['edgec_ms'] or float('nan'):8.2f} ms  "
                  f"NHWC {r['edgec_nhwc_ms'] or float('nan'):8.2f} ms  "
                  f"{r['reference']:<16} {r['reference_ms'] or float('nan'):8.2f} ms  "
                  f"ratio {r.get('ratio', float('nan')):.2f}", flush=True)
    table = markdown(rows, args, threads)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"cpu": args.cpu, "target": args.target,
                                         "threads": threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

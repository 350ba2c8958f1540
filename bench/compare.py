"""edgec (untuned, tuned, INT8) against ONNX Runtime, OpenVINO, LiteRT and ncnn (FP32, INT8),
per zoo model.

    python bench/compare.py [--models ...] [--runs N] [--rounds N] [--json FILE]
                            [--plot FILE.png] [--markdown FILE] [--readme] [--quick]

Every number comes from this one run, on the same threads (TVM_NUM_THREADS, ONNX Runtime's
intra_op_num_threads, OpenVINO's INFERENCE_NUM_THREADS, LiteRT's num_threads and ncnn's
opt.num_threads all get --threads): one runtime at a time, warm-up, then the median of --runs
single inferences of batch 1 on a real photo. LiteRT (XNNPACK) and ncnn run the models that
bench/arm_peers.py converts from the same ONNX file (onnx2tf, pnnx; cached), with its own
INT8 calibration; --quick skips them when their converters' venv is not installed.
Each latency also shows the fraction of the machine's peak it reaches: 2 x MACs / latency
over numpy's best SGEMM rate, measured at the start of the run. INT8 models are calibrated
on photos bundled with scikit-image. README.md's "## Performance" section explains the columns.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import arm_peers
import converted_runtimes
import measures
import numpy as np
import onnx
import runtimes

from edgec import reference, targets, tune, zoo
from edgec.errors import did_you_mean

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "resnet50",
          "shufflenet_v2", "pp_lcnet", "squeezenet1_1", "unet", "ssd_lite")
QUICK_MODELS = ("mobilenet_v2",)
DEFAULT_SIZE = 224  # for zoo models whose height and width are symbolic (pp_lcnet, unet)
COLUMNS = {  # JSON key: table header
    "edgec_untuned": "edgec untuned", "edgec_tuned": "edgec tuned", "edgec_int8": "edgec INT8",
    "ort_fp32": "ORT FP32", "ort_int8": "ORT INT8",
    "openvino_fp32": "OpenVINO FP32", "openvino_int8": "OpenVINO INT8",
    "litert_fp32": "LiteRT FP32", "litert_int8": "LiteRT INT8",
    "ncnn_fp32": "ncnn FP32", "ncnn_int8": "ncnn INT8",
}
# The ratio columns: edgec's build of each precision against the fastest other runtime's.
EDGEC_OF = {"fp32": "edgec_tuned", "int8": "edgec_int8"}
OTHERS = {precision: [k for k in COLUMNS if not k.startswith("edgec")
                      and k.endswith(f"_{precision}")] for precision in EDGEC_OF}
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help=f"zoo models (default: {' '.join(MODELS)})")
    parser.add_argument("--runs", type=int, help="timed runs per row (default 50, --quick 10)")
    parser.add_argument("--warmup", type=int, help="untimed runs first (default 10, --quick 3)")
    parser.add_argument("--rounds", type=int, help="timing processes per runtime, interleaved "
                                                   "with the others (default 3, --quick 1)")
    parser.add_argument("--pair-rounds", type=int,
                        help="rounds of edgec against the fastest other runtime taking turns "
                             "in one process (default 7, --quick 2; 0: skip)")
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1)),
                        help="threads of every runtime (default: $TVM_NUM_THREADS or all cores)")
    parser.add_argument("--target", default=targets.closest_to_host(),
                        help="edgec target (default: the widest shipped one this CPU runs)")
    parser.add_argument("--calibration", type=int, help="calibration photos (default 8, quick 4)")
    parser.add_argument("--json", type=Path, help="write every number as JSON")
    parser.add_argument("--plot", type=Path, help="write a grouped bar chart (PNG)")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown")
    parser.add_argument("--readme", action="store_true",
                        help="rewrite the table between the compare markers in README.md")
    parser.add_argument("--against", type=Path,
                        help="the --json of an earlier run: show how far each latency moved")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {', '.join(QUICK_MODELS)}, 10 runs, smaller peak GEMM")
    args = parser.parse_args(argv)
    args.models = args.models or list(QUICK_MODELS if args.quick else MODELS)
    args.runs = args.runs or (10 if args.quick else 50)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.pair_rounds is None:
        args.pair_rounds = 2 if args.quick else 7
    args.calibration = args.calibration or (4 if args.quick else 8)
    if (args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.rounds < 1
            or args.pair_rounds < 0):
        parser.error("--runs, --rounds and --threads must be >= 1, --warmup and "
                     "--pair-rounds >= 0")
    for name in args.models:
        if name not in zoo.names():
            parser.error(f'unknown zoo model "{name}"{did_you_mean(name, zoo.names())}')
    if not 1 <= args.calibration <= len(measures.CALIBRATION_IMAGES):
        parser.error(f"--calibration takes 1 to {len(measures.CALIBRATION_IMAGES)} photos")
    if args.against and not args.against.is_file():
        parser.error(f"--against {args.against}: no such file (give an earlier --json output)")
    if args.readme and (BEGIN not in README.read_text() or END not in README.read_text()):
        parser.error(f"README.md has no {BEGIN} ... {END} block to rewrite")
    return args


def static_model(name: str, workdir: Path) -> tuple[Path, tuple[int, ...]]:
    """Write zoo model `name` at batch 1 with static H/W; returns its path and input shape."""
    model = zoo.build(name)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        model = zoo.build(name, image_size=DEFAULT_SIZE)
        dims = model.graph.input[0].type.tensor_type.shape.dim
    path = workdir / f"{name}.onnx"
    onnx.save(model, str(path))
    return path, tuple(d.dim_value for d in dims)


def make_runtimes(args: argparse.Namespace, databases: dict[str, Path], workdir: Path,
                  photos: list[np.ndarray]) -> dict:
    """One runtime per column, in the order they run. LiteRT and ncnn convert with
    bench/arm_peers.py; --quick does not install its converters (TensorFlow, ~2.7 GB)."""
    install = not args.quick
    return {
        "edgec_untuned": runtimes.Edgec(None, workdir, target=args.target),
        "edgec_tuned": runtimes.Edgec(databases["shipped"], workdir, target=args.target),
        "edgec_int8": runtimes.Edgec(databases["shipped"], workdir, target=args.target,
                                     quantize="int8", calibration=photos),
        "ort_fp32": runtimes.OnnxRuntime(args.threads),
        "ort_int8": runtimes.OnnxRuntime(args.threads, photos),
        "openvino_fp32": runtimes.OpenVino(args.threads),
        "openvino_int8": runtimes.OpenVino(args.threads, photos),
        "litert_fp32": converted_runtimes.ConvertedLiteRT(args.threads, "fp32", install=install),
        "litert_int8": converted_runtimes.ConvertedLiteRT(args.threads, "int8", install=install),
        "ncnn_fp32": converted_runtimes.Ncnn(args.threads, "fp32", install=install),
        "ncnn_int8": converted_runtimes.Ncnn(args.threads, "int8", install=install),
    }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def measure_model(name: str, args: argparse.Namespace, databases: dict[str, Path],
                  workdir: Path, peak: float) -> dict:
    """Every column for one model, plus its MACs and the edgec checks."""
    onnx_path, shape = static_model(name, workdir)
    photos = measures.calibration_images(shape, args.calibration)
    input_name = onnx.load(str(onnx_path)).graph.input[0].name
    inputs = {input_name: photos[0]}
    expected = next(iter(reference.onnxruntime_outputs(onnx_path, inputs).values()))
    macs = measures.macs(onnx.load(str(onnx_path)))
    row = {"input_shape": list(shape), "macs": macs, "latency_ms": {}, "peak_fraction": {},
           "cosine_vs_ort_fp32": {}, "details": {}, "notes": {}}
    # The suite interleaves 11 runtimes: 3 rounds by default (--rounds), 1 for --quick.
    measured = runtimes.measure(make_runtimes(args, databases, workdir, photos), onnx_path,
                                inputs, args.runs, args.warmup, rounds=args.rounds)
    for key, result in measured.items():
        if result["ms"] is not None:
            result["cosine"] = cosine(result.pop("outputs"), expected)
        ms = result["ms"]
        row["latency_ms"][key] = ms
        row["peak_fraction"][key] = 2.0 * macs / (ms / 1e3) / (peak * 1e9) if ms else None
        row["cosine_vs_ort_fp32"][key] = result.get("cosine")
        row["details"][key] = result.get("info", {})
        if "note" in result:
            row["notes"][key] = result["note"]
        shown = (f"{ms:9.2f} ms  (cosine vs ORT FP32 {result['cosine']:.5f})" if ms
                 else f"      n/a  ({result['note']})")
        print(f"  {name:<20} {COLUMNS[key]:<15} {shown}", flush=True)
    row["fastest_other"] = {p: fastest_other(measured, p) for p in EDGEC_OF}
    for fastest in row["fastest_other"].values():
        if fastest is not None and fastest["ratio"] is not None and args.pair_rounds:
            print(f"  {name:<20} {COLUMNS[fastest['edgec']]} against "
                  f"{COLUMNS[fastest['runtime']]} in one process, {args.pair_rounds} rounds",
                  flush=True)
            fastest["one_process"] = runtimes.head_to_head(
                measured[fastest["edgec"]]["runtime"], measured[fastest["runtime"]]["runtime"],
                inputs, args.runs, args.warmup, args.pair_rounds)
    return row


def fastest_other(measured: dict, precision: str) -> dict | None:
    """The fastest runtime other than edgec at `precision` ("fp32", "int8") and edgec's
    latency over it (`ratio`: above 1, edgec is slower), from measure's results. The ratio
    pairs the rounds (runtimes.paired_ratio) when both have them; None if nothing ran."""
    ran = [k for k in OTHERS[precision] if measured.get(k, {}).get("ms") is not None]
    if not ran:
        return None
    best = min(ran, key=lambda k: measured[k]["ms"])
    edgec = measured.get(EDGEC_OF[precision], {})
    ratio = None
    if edgec.get("ms") is not None:
        try:
            ratio = runtimes.paired_ratio(edgec, measured[best])
        except (KeyError, TypeError, ValueError):  # no (equal) rounds: the medians' ratio
            ratio = edgec["ms"] / measured[best]["ms"]
    return {"runtime": best, "ms": measured[best]["ms"], "edgec": EDGEC_OF[precision],
            "ratio": ratio}


def _cell(row: dict, key: str) -> str:
    ms = row["latency_ms"][key]
    return "n/a" if ms is None else f"{ms:.1f} ({100 * row['peak_fraction'][key]:.0f}%)"


def _runtime_name(key: str) -> str:
    """"OpenVINO" for openvino_fp32: the column's label without its precision."""
    return COLUMNS[key].rsplit(" ", 1)[0]


def _fastest_cells(row: dict) -> list[str]:
    cells = []
    for precision in EDGEC_OF:
        fastest = row.get("fastest_other", {}).get(precision)
        if fastest is None:
            cells += ["n/a", "n/a", "n/a"]
            continue
        ratio = fastest["ratio"]
        cells += [f"{_runtime_name(fastest['runtime'])} {fastest['ms']:.1f}",
                  "n/a" if ratio is None else f"{ratio:.2f}×",
                  _one_process_cell(fastest.get("one_process"))]
    return cells


def _one_process_cell(pair: dict | None) -> str:
    """The head-to-head ratio with its range over rounds, or n/a."""
    if not pair or pair.get("ratio") is None:
        return "n/a"
    rounds = pair["rounds"]
    return f"{pair['ratio']:.2f}× ({min(rounds):.2f}-{max(rounds):.2f})"


def _edgec_cells(row: dict, tuning: dict, name: str) -> list[str]:
    details = row["details"]
    compile_s = [details.get(k, {}).get("compile_seconds")
                 for k in ("edgec_untuned", "edgec_tuned", "edgec_int8")]
    tuned = details.get("edgec_tuned", {})
    minutes = tuning["models"].get(name)
    return [" / ".join("n/a" if s is None else f"{s:.0f}" for s in compile_s),
            f"{tuned.get('tuned_functions', 0)}/{tuned.get('functions', 0)}"
            if tuned else "n/a",
            f"{minutes / 60:.0f}" if minutes is not None else "†"]


def markdown(result: dict) -> str:
    """The table and the lines that say how it was measured."""
    s = result["settings"]
    rounds = s.get("rounds", 1)
    heads = ["model", "GMACs", *COLUMNS.values(), "fastest other FP32",
             f"{COLUMNS[EDGEC_OF['fp32']]} ÷ it", "same, one process",
             "fastest other INT8", f"{COLUMNS[EDGEC_OF['int8']]} ÷ it", "same, one process",
             "edgec compile s (untuned / tuned / INT8)",
             "tuned functions", "tuning min"]
    lines = [
        f"Measured {s['date']} on {s['cpu']}, {s['threads']} threads, batch 1; median of "
        f"{s['runs']} runs after {s['warmup']} warm-up. Each cell: latency in ms "
        f"(fraction of peak). Peak: numpy SGEMM {s['peak_gemm']}, "
        f"{result['peak_gflops']:.1f} GFLOP/s (OpenBLAS kernels: "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["peak_gemm_gflops"].items()) + "). "
        f"÷ it: edgec's latency over the fastest other runtime's of the same precision, the "
        f"median of the per-round ratios over {rounds} round{'s' * (rounds != 1)} (below 1: "
        "edgec is faster); same, one process: the two loaded in one process, taking turns "
        f"for {s.get('pair_rounds', 0)} rounds of {s['runs']} runs, seconds apart (the median "
        "ratio, its range over the rounds).", "",
        "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads),
    ]
    for name, row in result["models"].items():
        cells = [name, f"{row['macs'] / 1e9:.2f}", *(_cell(row, k) for k in COLUMNS),
                 *_fastest_cells(row), *_edgec_cells(row, result["tuning"], name)]
        lines.append("| " + " | ".join(cells) + " |")
    tuning = result["tuning"]
    total = (f"{tuning['seconds'] / 60:.0f} min, {tuning['trials']} trials ({tuning['source']})"
             if tuning["seconds"] is not None else tuning["source"])
    lines += ["", f"† Tuning is stored per workload, shared by models: the {s['target']} "
                  f"database took {total}."]
    cosines = {key: [row["cosine_vs_ort_fp32"].get(key) for row in result["models"].values()]
               for key in COLUMNS}
    shown = [f"{label} {min(c for c in cosines[key] if c is not None):.4f}"
             for key, label in COLUMNS.items() if any(c is not None for c in cosines[key])]
    if shown:
        lines.append("- Output against ONNX Runtime FP32 on the same photo, cosine, lowest over "
                     "the models: " + ", ".join(shown) + ".")
    notes: dict[tuple[str, str], list[str]] = {}
    for name, row in result["models"].items():
        for key, note in row["notes"].items():
            notes.setdefault((key, note), []).append(name)
    lines += [f"- {COLUMNS[key]} n/a ({', '.join(names)}): {note}"
              for (key, note), names in notes.items()]
    return "\n".join(lines) + "\n"


# Bar colours: one hue per runtime (edgec three shades of blue), INT8 bars hatched.
COLORS = {"edgec_untuned": "#9ecae1", "edgec_tuned": "#3182bd", "edgec_int8": "#08519c",
          "ort_fp32": "#fd8d3c", "ort_int8": "#fd8d3c", "openvino_fp32": "#31a354",
          "openvino_int8": "#31a354", "litert_fp32": "#de2d26", "litert_int8": "#de2d26",
          "ncnn_fp32": "#756bb1", "ncnn_int8": "#756bb1"}


def write_plot(result: dict, path: Path) -> None:
    """Grouped bars: latency per model (groups) and runtime (bars), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    names = list(result["models"])
    width = 0.8 / len(COLUMNS)
    fig, ax = plt.subplots(figsize=(max(8.0, 2.2 * len(names) + 4), 4.8))
    legend = []
    for i, (key, label) in enumerate(COLUMNS.items()):
        values = [result["models"][n]["latency_ms"][key] for n in names]
        xs = [j + (i - (len(COLUMNS) - 1) / 2) * width for j in range(len(names))]
        hatch = "///" if key.endswith("int8") else None
        ax.bar([x for x, v in zip(xs, values, strict=True) if v],
               [v for v in values if v], width, color=COLORS[key], hatch=hatch,
               edgecolor="white", linewidth=0.3)
        legend.append(Patch(facecolor=COLORS[key], hatch=hatch, edgecolor="white",
                            label=label if any(values) else f"{label} (n/a)"))
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log scale; lower is better)")
    s = result["settings"]
    ax.set_title(f"batch 1, {s['threads']} threads, median of {s['runs']}, {s['cpu']}",
                 fontsize=9)
    ax.legend(handles=legend, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reproducibility(result: dict, earlier: dict) -> dict:
    """How each latency of this run moved from an earlier run of the suite, in percent."""
    changes = {}
    for name, row in result["models"].items():
        before = earlier.get("models", {}).get(name, {}).get("latency_ms", {})
        for key, ms in row["latency_ms"].items():
            if ms and before.get(key):
                changes[f"{name} / {COLUMNS[key]}"] = round(100.0 * (ms / before[key] - 1.0), 2)
    sizes = sorted(abs(v) for v in changes.values())
    worst = max(changes, key=lambda k: abs(changes[k])) if changes else None
    return {"earlier_date": earlier.get("settings", {}).get("date"), "changes_percent": changes,
            "median_abs_percent": float(np.median(sizes)) if sizes else None,
            "within_10_percent": sum(v <= 10.0 for v in sizes), "cells": len(sizes),
            "largest": worst and {"cell": worst, "percent": changes[worst]}}


def reproducibility_line(rep: dict) -> str:
    if not rep["cells"]:
        return "No cell in common with the earlier run."
    largest = rep["largest"]
    return (f"Against an earlier run ({rep['earlier_date']}): median change "
            f"{rep['median_abs_percent']:.1f}%, {rep['within_10_percent']} of {rep['cells']} "
            f"cells within 10%, largest {largest['percent']:+.1f}% ({largest['cell']}).")


def update_readme(table: str, readme: Path = README) -> None:
    """Replace what lies between the compare markers in README.md with `table`."""
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


def settings(args: argparse.Namespace, peak_size: int) -> dict:
    import onnxruntime
    import tvm

    from edgec.cpu import host_label

    cpu = host_label()  # names the core ("AMD EPYC (Zen 4, avx512-vnni)"): VMs say "AMD EPYC"
    versions = {"tvm": tvm.__version__, "onnxruntime": onnxruntime.__version__}
    for package in ("openvino", "nncf"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = None
    for package in ("ai-edge-litert", "ncnn"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    # bench/arm_peers.py's converters (its tools venv), pinned there
    versions.update(pin.split("==") for pin in (*arm_peers.TOOLS, *arm_peers.TOOLS_NO_DEPS)
                    if not pin.startswith("ncnn=="))
    return {"date": date.today().isoformat(), "cpu": cpu, "threads": args.threads,
            "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
            "pair_rounds": args.pair_rounds,
            "target": args.target,
            "calibration_images": args.calibration, "quick": args.quick,
            "peak_gemm": f"{peak_size}x{peak_size}x{peak_size}, best of 5", "versions": versions}


def databases(target: str, root: Path) -> dict[str, Path]:
    """A snapshot of the shipped database compile applies first here (the one measured on
    this CPU, when edgec ships one; untuned builds apply none: `--untuned`)."""
    shipped = tune.databases.shipped_layers(targets.load(target))[0]
    return {"shipped": measures.snapshot_database(shipped, root / target)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM starts its thread pool
    started = time.perf_counter()
    peak_size = 1024 if args.quick else 2048
    rates = measures.peak_gflops(args.threads, peak_size)
    peak = max(rates.values())
    result = {"settings": settings(args, peak_size), "peak_gflops": peak,
              "peak_gemm_gflops": rates,
              "tuning": measures.tuning_time(
                  tune.databases.shipped_layers(targets.load(args.target))[0]),
              "models": {}}
    print(f"peak: {peak:.1f} GFLOP/s (numpy SGEMM by OpenBLAS kernels: "
          + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
          + f"), {args.threads} threads, median of {args.runs} runs", flush=True)
    if not arm_peers.tools_ready():
        print("LiteRT and ncnn: " + ("skipped: --quick does not install their converters "
                                     "(onnx2tf + TensorFlow, pnnx; ~2.7 GB)" if args.quick else
                                     "installing their converters (onnx2tf + TensorFlow, pnnx; "
                                     f"~2.7 GB) in {arm_peers.WORK / 'tools-venv'}, once"),
              flush=True)
    with tempfile.TemporaryDirectory(prefix="edgec-compare-") as tmp:
        dbs = databases(args.target, Path(tmp))
        for name in args.models:
            result["models"][name] = measure_model(name, args, dbs, Path(tmp), peak)
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    if args.against:
        result["reproducibility"] = reproducibility(result, json.loads(args.against.read_text()))
        for cell, change in result["reproducibility"]["changes_percent"].items():
            print(f"  {cell:<40} {change:+6.1f}%")
        table += "\n" + reproducibility_line(result["reproducibility"]) + "\n"
    print("\n" + table + f"\nsuite took {result['seconds'] / 60:.1f} min")
    if args.markdown:
        args.markdown.write_text(table)
    if args.readme:
        update_readme(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        write_plot(result, args.plot)
    failed = [n for n, row in result["models"].items()
              if any(row["latency_ms"][k] is None for k in ("edgec_untuned", "edgec_tuned"))]
    if failed:
        print(f"error: edgec FP32 failed on {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

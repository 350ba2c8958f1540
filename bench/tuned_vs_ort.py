"""edgec (untuned, and with tuning logs) against ONNX Runtime, side by side.

    python bench/tuned_vs_ort.py [--target T] [--models ...] [--logs DIR] [--runs 60] [--json FILE]

--logs is a tuning database (e.g. ~/.cache/edgec/tuning_logs/<target>/<cpu>/, what `edgec
tune` wrote on this machine); without it, the shipped logs of the target.

Every row is measured in this one run, on the same threads: each runtime alone in a fresh
process, warm-up, then the median of --runs single inferences of batch 1 on a real photo;
--rounds such rounds (default 5), interleaving the runtimes, and the median of the rounds.
`ratio` is edgec tuned / ONNX Runtime (below 1.0: edgec is ahead) and `tuned/untuned` what
tuning bought (0.85: 15% faster): each the median over rounds of the two measured in the
same round, so that the VM's drift between rounds divides out.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import measures  # bench/ is on sys.path when run as a script
import onnx
import runtimes

from edgec import targets, tune, zoo

MODELS = ("mobilenet_v2", "resnet18", "mobilenet_v3_small")


def main() -> int:
    args, threads = runtimes.parse_script_arguments(__doc__, MODELS, runs=60, extra=(
        ("--logs", {"type": Path, "help": "tuning database (default: the shipped logs)"}),))
    rows = {}
    print(f"{'model':<20} {'untuned ms':>10} {'tuned ms':>9} {'ORT ms':>8} {'ratio':>6} "
          f"{'tuned/untuned':>13}  tuned   ({args.target}, {threads} threads, median of "
          f"{args.runs})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = args.logs or tune.databases.shipped_layers(targets.load(args.target))[0]
        logs = (measures.snapshot_database(source, work / "logs") if source.is_dir()
                else None)
        for name in args.models:
            path = work / f"{name}.onnx"
            onnx.save(zoo.build(name), str(path))
            shape = tuple(d.dim_value for d in
                          onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim)
            inputs = {"input": measures.calibration_images(shape, 1)[0]}
            ms = runtimes.measure({"untuned": runtimes.Edgec(None, work, target=args.target),
                                   "tuned": runtimes.Edgec(logs, work, target=args.target),
                                   "ort": runtimes.OnnxRuntime(threads)},
                                  path, inputs, args.runs, args.warmup, args.rounds)
            for key, result in ms.items():
                if result["ms"] is None:
                    print(f"error: {name} {key}: {result['note']}", file=sys.stderr)
                    return 1
            tuned_info = ms["tuned"]["info"]
            rows[name] = {"edgec_tuned_ms": ms["tuned"]["ms"],
                          "edgec_untuned_ms": ms["untuned"]["ms"], "ort_ms": ms["ort"]["ms"],
                          "ratio": runtimes.paired_ratio(ms["tuned"], ms["ort"]),
                          "tuned_over_untuned": runtimes.paired_ratio(ms["tuned"],
                                                                      ms["untuned"]),
                          "ms_per_round": {k: r["info"]["ms_per_round"]
                                             for k, r in ms.items()},
                          "tuned_functions": tuned_info["tuned_functions"],
                          "functions": tuned_info["functions"]}
            row = rows[name]
            print(f"{name:<20} {row['edgec_untuned_ms']:>10.2f} {row['edgec_tuned_ms']:>9.2f} "
                  f"{row['ort_ms']:>8.2f} {row['ratio']:>6.2f} "
                  f"{row['tuned_over_untuned']:>13.2f}  "
                  f"{row['tuned_functions']}/{row['functions']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "threads": threads,
                                         "logs": str(args.logs or "shipped"),
                                         "runs": args.runs, "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

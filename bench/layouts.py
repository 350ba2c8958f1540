"""Every zoo model in the packed layout, NHWC and NCHW, side by side (issue 15's layout goal:
each plain layout within 1.25x of packed).

    python bench/layouts.py [--target T] [--models ...] [--layouts NHWC NCHW]
                            [--runs 50] [--rounds 3] [--json FILE]

Untuned builds (edgec's default schedules, no tuning logs), each checked against ONNX
Runtime when compiled. Every build is timed alone in a fresh process, warm-up, then the
median of --runs single inferences of batch 1 on a real photo; --rounds rounds interleave
the layouts. A ratio is the median over rounds of the layout's latency over the packed
layout's in the same round (above 1.0: slower than packed), so the VM's drift between
rounds divides out. `default` says which layout `--layout default` picks for the model.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import measures  # bench/ is on sys.path when run as a script
import onnx
import runtimes

from edgec import pipeline, targets, tune, zoo

# The zoo at the sizes compare.py and the tests use; pp_lcnet and unet have symbolic H/W.
SHAPES = {"pp_lcnet": {"input": (1, 3, 224, 224)}, "unet": {"input": (1, 3, 128, 128)}}
GOAL = 1.25


def default_layout(name: str, target: str) -> str:
    """The layout `--layout default` gives a zoo model for the target."""
    return pipeline.prepare(f"zoo:{name}", targets.load(target), SHAPES.get(name),
                            "default").layout


def main() -> int:
    args, threads = runtimes.parse_script_arguments(__doc__, tuple(zoo.names()), runs=50, extra=(
        ("--layouts", {"nargs": "+", "default": ["NHWC", "NCHW"],
                       "help": "plain layouts to compare with packed (default: NHWC NCHW)"}),))
    rows = {}
    plain = list(args.layouts)
    print(f"{'model':<20} {'default':>8} {'packed ms':>9} " + " ".join(
        f"{lay + ' ms':>9} {lay + '/packed':>12}" for lay in plain)
        + f"   ({args.target}, {threads} threads, untuned, median of {args.runs})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models:
            path = work / f"{name}.onnx"
            onnx.save(zoo.build(name), str(path))
            shapes = SHAPES.get(name, {})
            shape = shapes.get("input") or tuple(
                d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim)
            inputs = {"input": measures.calibration_images(shape, 1)[0]}
            contenders = {lay: runtimes.Edgec(None, work, target=args.target, layout=lay,
                                              input_shapes=shapes)
                          for lay in ("NCHWc", *plain)}
            ms = runtimes.measure(contenders, path, inputs, args.runs, args.warmup, args.rounds)
            if ms["NCHWc"]["ms"] is None:
                print(f"error: {name} packed: {ms['NCHWc']['note']}", file=sys.stderr)
                return 1
            row = {"default": default_layout(name, args.target), "packed_ms": ms["NCHWc"]["ms"],
                   "ms_per_round": {k: r.get("info", {}).get("ms_per_round")
                                    for k, r in ms.items()}}
            cells = []
            for lay in plain:
                if ms[lay]["ms"] is None:
                    row[lay] = {"ms": None, "note": ms[lay]["note"]}
                    cells.append(f"{'n/a':>9} {'':>12}")
                    continue
                ratio = runtimes.paired_ratio(ms[lay], ms["NCHWc"])
                row[lay] = {"ms": ms[lay]["ms"], "over_packed": ratio}
                mark = "" if ratio <= GOAL else " *"
                cells.append(f"{ms[lay]['ms']:>9.2f} {ratio:>10.2f}{mark:<2}")
            rows[name] = row
            print(f"{name:<20} {row['default']:>8} {row['packed_ms']:>9.2f} " + " ".join(cells),
                  flush=True)
    print(f"* above the goal of {GOAL}x packed")
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "threads": threads,
                                         "cpu": tune.measured_on(),
                                         "runs": args.runs, "rounds": args.rounds,
                                         "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

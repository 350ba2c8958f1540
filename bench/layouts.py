"""Every zoo model in the packed layout, NHWC and NCHW, side by side (issue 15's layout goal:
each plain layout within 1.25x of packed).

    python bench/layouts.py [--target T] [--models ...] [--layouts NHWC NCHW]
                            [--runs 50] [--rounds 3] [--pair-rounds 7] [--json FILE]
    python bench/layouts.py --estimate --target rpi4 [--models ...] [--layouts NHWC]
                            [--json FILE]

Untuned builds (edgec's default schedules, no tuning logs), each checked against ONNX
Runtime when compiled. Every build is timed alone in a fresh process, warm-up, then the
median of --runs single inferences of batch 1 on a real photo; --rounds rounds interleave
the layouts. A ratio is the median over rounds of the layout's latency over the packed
layout's in the same round (above 1.0: slower than packed), so the VM's drift between
rounds divides out. `default` says which layout `--layout default` picks for the model.
Then each plain layout and the packed one are loaded in one process and take turns for
--pair-rounds rounds (runtimes.head_to_head, as bench/ab.py does; 0: skip): seconds apart,
both see the same VM speed, where fresh processes a minute apart moved one build by up to
2x on these VMs. That ratio is the firmer one.

--estimate (a board target nobody here has, e.g. rpi4, rpi5): no timing; each build is
estimated as `edgec bench LIB --estimate` does, for the core, clock and DRAM bandwidth of
the target's [board] (one inference under qemu with the block counter, blocks priced with
llvm-mca). Deterministic, so one round; the ratio is the two estimates' quotient. The check
against ONNX Runtime runs a host build of the same graph (it cannot run aarch64 code).
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path

import measures  # bench/ is on sys.path when run as a script
import onnx
import runtimes

from edgec import pipeline, targets, tune, zoo

# The zoo at the sizes compare.py and the tests use; pp_lcnet and unet have symbolic H/W.
SHAPES = {"pp_lcnet": {"input": (1, 3, 224, 224)}, "unet": {"input": (1, 3, 128, 128)}}
GOAL = 1.25
TOP_FUNCTIONS = 8  # of each estimate, kept in --json


def default_layout(name: str, target: str) -> str:
    """The layout `--layout default` gives a zoo model for the target."""
    return pipeline.prepare(f"zoo:{name}", targets.load(target), SHAPES.get(name),
                            "default").layout


def header(plain: list[str], unit: str, how: str, one_process: bool = False) -> None:
    paired = f" {'same proc.':>12}" if one_process else ""
    print(f"{'model':<20} {'default':>8} {'packed ' + unit:>9} " + " ".join(
        f"{lay + ' ' + unit:>9} {lay + '/packed':>12}{paired}" for lay in plain)
        + f"   ({how})")


def print_row(name: str, row: dict, plain: list[str]) -> None:
    def ms(value):
        return f"{'n/a':>9}" if value is None else f"{value:>9.2f}"

    def ratio_cell(ratio):
        if ratio is None:
            return f" {'':>12}"
        return f" {ratio:>10.2f}{'' if ratio <= GOAL else ' *':<2}"

    cells = [ms(row["packed_ms"])]
    for lay in plain:
        cells.append(ms(row[lay]["ms"]) + ratio_cell(row[lay].get("over_packed")))
        if "one_process" in row[lay]:
            cells.append(ratio_cell(row[lay]["one_process"].get("ratio")))
    print(f"{name:<20} {row['default']:>8} " + " ".join(cells), flush=True)


def saved_model(name: str, work: Path) -> tuple[Path, dict]:
    """The zoo model as work/NAME.onnx, and the input shapes to compile it with."""
    path = work / f"{name}.onnx"
    onnx.save(zoo.build(name), str(path))
    return path, SHAPES.get(name, {})


def estimated(built, label: str) -> dict:
    """A prepared runtimes.Edgec estimated on its target's board, as `edgec bench LIB
    --estimate` does: {"ms", ...}, or {"ms": None, "note": why} (its compile's note too)."""
    from edgec.boards.estimate import board_defaults

    if isinstance(built, dict):
        return built
    try:
        report = board_defaults.estimate_library(built.library, None, progress=lambda line: print(
            f"  [{label}] {line}", file=sys.stderr, flush=True))
    except Exception as err:  # one build's failure is a note in its row, not the end
        traceback.print_exc()
        return {"ms": None, "note": f"estimate: {type(err).__name__}: {str(err).strip()[:300]}"}
    return {"ms": report.ms, "compute_ms": report.compute_ms,
            "instructions": report.instructions, "emulation_s": report.emulation_s,
            "compile_seconds": built.info["compile_seconds"], "check": built.info["check"],
            "functions": [{"name": f.name, "ms": f.ms, "compute_ms": f.compute_ms,
                           "calls": f.calls, "instructions": f.instructions}
                          for f in report.functions[:TOP_FUNCTIONS]]}


def estimate_all(args) -> int:
    """--estimate: every model's layouts estimated once on the target's board core."""
    from edgec.boards.estimate import cores

    board = targets.load(args.target).board
    if not board.get("core"):
        print(f"error: {args.target} has no [board] core to estimate for", file=sys.stderr)
        return 1
    plain = list(args.layouts)
    header(plain, "est", f"{args.target}: {board['core']} at {board['clock_ghz']} GHz, "
           "one thread, untuned, qemu counts x llvm-mca")
    out = {"target": args.target, "method": "qemu counts x llvm-mca", "core": board["core"],
           "llvm_mca_model": cores.lookup(board["core"]).mca_cpu, "clock_ghz": board["clock_ghz"],
           "dram_gbps": board.get("dram_gbps"), "threads": 1, "untuned": True,
           "check": "ONNX Runtime vs a host build of the same graph", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path, shapes = saved_model(name, Path(tmp))
            built = runtimes.prepare_each(
                {lay: runtimes.Edgec(None, Path(tmp), target=args.target, layout=lay,
                                     input_shapes=shapes) for lay in ("NCHWc", *plain)}, path)
            est = {lay: estimated(b, f"{name} {lay}") for lay, b in built.items()}
            packed = est["NCHWc"]["ms"]
            row = {"default": default_layout(name, args.target), "packed_ms": packed,
                   "NCHWc": est["NCHWc"]}
            for lay in plain:
                ratio = est[lay]["ms"] / packed if packed and est[lay]["ms"] else None
                row[lay] = {**est[lay], "over_packed": ratio}
            out["models"][name] = row
            print_row(name, row, plain)
            if args.json:  # after every model: a long run leaves what it has
                args.json.write_text(json.dumps(out, indent=2))
    print(f"* above the goal of {GOAL}x packed")
    return 0


def main() -> int:
    args, threads = runtimes.parse_script_arguments(__doc__, tuple(zoo.names()), runs=50, extra=(
        ("--layouts", {"nargs": "+", "default": ["NHWC", "NCHW"],
                       "help": "plain layouts to compare with packed (default: NHWC NCHW)"}),
        ("--estimate", {"action": "store_true",
                        "help": "estimate on the target's board instead of timing here"}),
        ("--pair-rounds", {"type": int, "default": 7,
                           "help": "rounds of each plain layout against packed in one "
                                   "process (default 7; 0: skip)"})))
    if args.estimate:
        return estimate_all(args)
    rows = {}
    plain = list(args.layouts)
    header(plain, "ms", f"{args.target}, {threads} threads, untuned, median of {args.runs}",
           one_process=args.pair_rounds > 0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models:
            path, shapes = saved_model(name, work)
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
            for lay in plain:
                row[lay] = ({"ms": None, "note": ms[lay]["note"]} if ms[lay]["ms"] is None else
                            {"ms": ms[lay]["ms"],
                             "over_packed": runtimes.paired_ratio(ms[lay], ms["NCHWc"])})
                if ms[lay]["ms"] is not None and args.pair_rounds:
                    row[lay]["one_process"] = runtimes.head_to_head(
                        ms[lay]["runtime"], ms["NCHWc"]["runtime"], inputs, args.runs,
                        args.warmup, args.pair_rounds)
            rows[name] = row
            print_row(name, row, plain)
    print(f"* above the goal of {GOAL}x packed")
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "threads": threads,
                                         "cpu": tune.measured_on(),
                                         "runs": args.runs, "rounds": args.rounds,
                                         "pair_rounds": args.pair_rounds,
                                         "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

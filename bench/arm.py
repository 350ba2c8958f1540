"""edgec beside the ARM runtimes people pick (ONNX Runtime, LiteRT/XNNPACK, ncnn) on boards
nobody here has, estimated the same way for all: one single-threaded inference runs under
qemu-aarch64 with edgec's block-counting plugin, every executed block is priced with
llvm-mca on the core's model, cycles become ms at the board's clock.

    .venv/bin/python bench/arm.py [--models ...] [--precisions fp32 int8]
                                  [--cpus cortex-a72 cortex-a76] [--json FILE] [--plot FILE]

Same input for every runtime (scikit-image's `coffee` photo), same thread count (one), the
same pricing. The `edgec` column is priced like the peers' (instruction cycles only); its
full estimate with the memory term is `edgec bench OUT.so --estimate CPU`. The method's
accuracy, measured on x86 against real timings, is in the README (bench/estimate_check.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import arm_peers  # bench/ is on sys.path as a script
import numpy as np

from edgec import pipeline, zoo
from edgec.boards import estimate
from edgec.boards.estimate import cores, counting
from edgec.quant import QuantizeOptions

TARGET_OF = {"cortex-a72": "rpi4", "cortex-a76": "rpi5", "cortex-a53": "rpi3",
             "neoverse-n1": "neoverse-n1"}
def edgec_library(model: str, precision: str, cpu: str, work: Path) -> Path:
    out = work / f"{model}-{TARGET_OF[cpu]}-{precision}.so"
    if not out.exists():
        onnx_path = work / f"{model}.onnx"
        zoo.save(model, onnx_path)
        calib = arm_peers.prepare_inputs()[1]
        quantization = (QuantizeOptions("int8", calib=str(calib)) if precision == "int8"
                        else QuantizeOptions())
        pipeline.compile_model(pipeline.CompileOptions(
            model=str(onnx_path), output=out, target=TARGET_OF[cpu], check=True,
            quantization=quantization))
    return out


def edgec_ms(library: Path, cpu: str) -> dict:
    photo = np.load(arm_peers.prepare_inputs()[0])
    report = estimate.estimate(library, cpu, inputs={"input": photo})
    return {"ms": report.compute_ms, "full_ms": report.ms, "instructions": report.instructions}


def peer_ms(peer: str, model: str, precision: str, cpu: str) -> dict:
    """One counted inference of a peer, priced like edgec's blocks."""
    core = cores.lookup(cpu)
    argv, env = arm_peers.command(peer, model, precision, cpu=cpu, inferences=1, warmup=1)
    with tempfile.TemporaryDirectory(prefix="edgec-arm-") as tmp:
        blocks_path = Path(tmp) / "blocks.txt"
        argv = arm_peers.with_plugin(
            argv, ["-plugin", f"{counting.plugin_library()},out={blocks_path}"])
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            return {"ms": None, "note": done.stderr.strip().splitlines()[-1:]}
        blocks = counting.read_blocks(blocks_path)
    cycles = estimate.price_cycles(blocks, cpu)
    return {"ms": 1e3 * cycles / (core.clock_ghz * 1e9),
            "instructions": sum(b.count * len(b.insns) for b in blocks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(arm_peers.MODELS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--cpus", nargs="+", default=["cortex-a72", "cortex-a76"])
    parser.add_argument("--peers", nargs="+", default=list(arm_peers.PEERS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="a grouped bar chart (PNG) of the table")
    parser.add_argument("--from-json", type=Path, help="only redraw the table and chart")
    args = parser.parse_args()
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        print(table(rows, args.peers))
        if args.plot:
            plot(rows, args.peers, args.plot)
        return 0
    rows = []
    work = Path(tempfile.mkdtemp(prefix="edgec-arm-libs-"))
    for cpu in args.cpus:
        for model in args.models:
            for precision in args.precisions:
                print(f"[arm] {cpu} {model} {precision}", file=sys.stderr, flush=True)
                row = {"cpu": cpu, "model": model, "precision": precision,
                       "edgec": edgec_ms(edgec_library(model, precision, cpu, work), cpu)}
                for peer in args.peers:
                    row[peer] = peer_ms(peer, model, precision, cpu)
                best = min((row[p]["ms"], p) for p in args.peers if row[p]["ms"])
                row["ratio_vs_best"] = row["edgec"]["ms"] / best[0]
                row["best_peer"] = best[1]
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=2))
    print(table(rows, args.peers))
    if args.plot:
        plot(rows, args.peers, args.plot)
    return 0


def plot(rows: list[dict], peers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = ["edgec", *peers]
    labels = [f"{r['model']}\n{r['precision']}, {r['cpu']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.2))
    width = 0.8 / len(runtimes)
    for i, name in enumerate(runtimes):
        values = [r[name]["ms"] or 0 for r in rows]
        ax.bar([x + i * width for x in range(len(rows))], values, width, label=name)
    ax.set_xticks([x + width * (len(runtimes) - 1) / 2 for x in range(len(rows))], labels,
                  fontsize=8)
    ax.set_ylabel("estimated ms, one thread")
    ax.set_title("One inference, estimated: qemu block counts x llvm-mca cycles")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows: list[dict], peers: list[str]) -> str:
    lines = ["| core | model | precision | edgec | " + " | ".join(peers)
             + " | edgec / best peer |", "|---" * (len(peers) + 5) + "|"]
    for r in rows:
        def cell(entry):
            return f"{entry['ms']:.1f} ms" if entry.get("ms") else "n/a"
        lines.append(f"| {r['cpu']} | {r['model']} | {r['precision']} | {cell(r['edgec'])} | "
                     + " | ".join(cell(r[p]) for p in peers)
                     + f" | {r['ratio_vs_best']:.2f} ({r['best_peer']}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

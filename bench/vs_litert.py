"""An edgec library and a LiteRT model (or an ONNX model, on ONNX Runtime) timed side by
side in one process, interleaved: a second opinion on a bench/compare.py ratio that this
VM's drift between processes may have made (compare times every runtime in fresh
processes; the same build moved 1.3-2.2 ms across its three rounds of one run).

    python bench/vs_litert.py [--rounds 7] [--runs 40] EDGEC.so MODEL.tflite
    python bench/vs_litert.py [--rounds 7] [--runs 40] EDGEC.so MODEL.onnx

Each round times --runs single inferences of the edgec library (the VM's time_evaluator,
as `edgec bench`) and then of the LiteRT model (bench/runtimes.LiteRT, as compare.py times
it: XNNPACK, `--threads`, invoke() with the input copy), after 10 warm-up runs each, on
seeded random inputs; the ratio is the median over rounds of edgec's median over LiteRT's.
Both thread pools live in one process and take turns, each after a pause that lets the
other's threads stop spinning (without it, the runtime timed right after edgec ran beside
TVM's spinning worker: LiteRT INT8 at up to 2x its time alone, which flattered edgec's
ratio). The .tflite files compare.py
converts are cached in ~/.cache/edgec/arm-peers/litert/<model>/ (`<model>_float32.tflite`,
`<model>_integer_quant.tflite`), the ONNX files in ~/.cache/edgec/arm-peers/onnx/. An
.onnx model runs on ONNX Runtime as compare.py runs it (CPU provider, all graph
optimizations, --threads intra-op threads; its idle threads spin as by default: with
spinning off, SqueezeNet's ratio moved from 1.28 to 1.19 on the Xeon of 2026-12-06). Set
TVM_NUM_THREADS to --threads.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import runtimes

from edgec import latency, runtime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("library", help="an edgec library")
    parser.add_argument("peer", help="a LiteRT (.tflite) or ONNX (.onnx) model of the "
                                     "same network")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2, help="the peer runtime's threads")
    args = parser.parse_args()
    model = runtime.load(args.library, check=False)
    rng = np.random.default_rng(0)
    inputs = {s["name"]: rng.standard_normal(s["shape"]).astype(s["dtype"])
              for s in model.info.inputs}
    path = Path(args.peer)
    if path.suffix == ".onnx":
        peer, name = runtimes.OnnxRuntime(args.threads), "ONNX Runtime"
    else:
        peer, name = runtimes.LiteRT(args.threads), "LiteRT"
    peer.prepare(path)
    peer.load()
    feed = inputs if name == "ONNX Runtime" else {  # edgec's inputs are the ONNX model's
        d["name"]: rng.standard_normal(d["shape"]).astype(d["dtype"])
        for d in peer.interpreter.get_input_details()}

    ratios = []
    for index in range(args.rounds):
        runtimes.quiet()  # the other pool idle first (runtimes.QUIET_SECONDS)
        edgec = latency.benchmark(model, inputs, runs=args.runs, warmup=10).stats()["median"]
        runtimes.quiet()
        other = peer.median_ms(feed, args.runs, 10)
        ratios.append(edgec / other)
        print(f"round {index + 1}: edgec {edgec:.3f} ms, {name} {other:.3f} ms, "
              f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"edgec / {name}: {statistics.median(ratios):.3f} (median of {args.rounds} rounds; "
          f"{min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

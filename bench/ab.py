"""Two or more builds of one model timed side by side in one process: the A/B that measures a
codegen change (build before and after, or NCHW against packed).

    python bench/ab.py [--rounds 9] [--runs 40] FIRST.so OTHER.so [...]

All libraries are loaded once, then each round times --runs single inferences of every
library in turn (seeded random inputs, after 10 warm-up runs) and keeps their medians; every
other round takes them in reverse order (in a fixed order the second of two ResNet-18
builds whose per-call minimums were equal read 1.03-1.04x, whichever it was). A
ratio is the median over rounds of a library's median over the first's in the same round:
on these VMs fresh processes moved one build by up to 2x, rounds seconds apart much less.
Set TVM_NUM_THREADS (the figures in the README used 2).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from edgec import runtime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("libraries", nargs="+", help="edgec libraries; ratios are to the first")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=40, help="timed runs per library and round")
    args = parser.parse_args()
    timers = []
    for path in args.libraries:
        module = runtime.load(path, check=False)
        rng = np.random.default_rng(0)
        inputs = {s["name"]: rng.standard_normal(s["shape"]).astype(s["dtype"])
                  for s in module.info.inputs}
        timers.append(module.timer(inputs))
        timers[-1](10)  # warm-up
    medians: list[list[float]] = [[] for _ in timers]
    for index in range(args.rounds):
        pairs = list(zip(timers, medians, strict=True))
        for timer, own in pairs[::-1] if index % 2 else pairs:
            own.append(1000 * float(np.median(timer(args.runs))))
    for path, own in zip(args.libraries, medians, strict=True):
        ratio = statistics.median(a / b for a, b in zip(own, medians[0], strict=True))
        print(f"{path:<48} median {statistics.median(own):8.3f} ms  ratio {ratio:.3f}  "
              f"rounds {' '.join(f'{ms:.2f}' for ms in own)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

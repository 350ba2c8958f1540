"""Run the edgec model in this folder with Python 3 and numpy only: no TVM install needed.

    python3 run.py                                  # seeded random inputs
    python3 run.py --input input=x.npy -o out.npz   # your inputs; outputs saved as .npz
    python3 run.py --runs 50                        # latency percentiles too

This file is the `run.py` of an `edgec bundle`; it imports the loader beside it (python/)."""

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "python"))

try:
    import numpy as np
except ImportError:
    sys.exit("error: run.py needs numpy: pip install numpy, or apt-get install python3-numpy")

from edgec import runtime  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    parser.add_argument("-o", "--output", help="save the outputs as .npz")
    parser.add_argument("--runs", type=int, default=0, help="time this many inferences")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line: first inference ms and output statistics")
    args = parser.parse_args()
    bundle = json.loads((HERE / "bundle.json").read_text())
    try:
        model = runtime.load(HERE / bundle["library"])
        if args.input:
            inputs = {}
            for item in args.input:
                name, _, path = item.partition("=")
                inputs[name] = np.load(path, allow_pickle=False)
        else:
            rng = np.random.default_rng(0)
            inputs = {spec["name"]: rng.uniform(-1, 1, spec["shape"]).astype(spec["dtype"])
                      for spec in model.info.inputs}
            print("no --input given: running on seeded random inputs", file=sys.stderr)
        start = time.perf_counter()
        outputs = model.run(inputs)
        first_ms = 1000 * (time.perf_counter() - start)
    except (EdgecError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ms": first_ms, "outputs": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype), "min": float(v.min()),
                "max": float(v.max()), "mean": float(v.mean())} for k, v in outputs.items()}}))
        return 0
    for name, value in outputs.items():
        print(f"{name}: shape {value.shape} {value.dtype}  min {value.min():.4g}  "
              f"max {value.max():.4g}  mean {value.mean():.4g}")
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {args.output}")
    if args.runs > 0:
        seconds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            model.run(inputs)
            seconds.append(time.perf_counter() - start)
        ms = np.array(seconds) * 1000
        print(f"{args.runs} runs: median {np.median(ms):.3f} ms, p90 "
              f"{np.percentile(ms, 90):.3f} ms, min {ms.min():.3f} ms (with copies to and "
              "from numpy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

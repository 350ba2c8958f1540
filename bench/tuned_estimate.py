"""What tuning on the simulated board buys, by the instruction-level estimate: per zoo model
and board target, the untuned library and the one built with tuning logs, each estimated
for the target's [board] core (one thread; qemu counts x llvm-mca, see the README's "ARM
speed without a board" for the method and its measured accuracy).

    python bench/tuned_estimate.py [--targets rpi5 rpi4] [--models ...] [--logs DIR]
                                   [--json FILE]

--logs DIR holds one tuning database per target (DIR/<target>); without it, the shipped
logs. Instruction counts do not drift, so one estimate per library is the figure: no
rounds, and nothing else needs to be idle while it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgec import tune
from edgec.boards.estimate.board_defaults import estimate_library

MODELS = ("mobilenet_v2", "resnet18", "mobilenet_v3_small")


def compile_library(out: Path, model: str, target: str, logs: Path | None) -> Path:
    cmd = [sys.executable, "-m", "edgec", "compile", f"zoo:{model}", "-t", target, "-o",
           str(out), "--no-check", *(["--tuning-logs", str(logs)] if logs else ["--untuned"])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-1500:]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", default=["rpi5", "rpi4"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--logs", type=Path)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    print(f"{'target':<7} {'model':<20} {'untuned ms':>10} {'tuned ms':>9} "
          f"{'tuned/untuned':>13}  core (estimated, one thread)")
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets:
            logs = (args.logs / target) if args.logs else tune.logs_root() / target
            if not (logs / "database_tuning_record.json").is_file():
                raise SystemExit(f"no tuning database in {logs}")
            for model in args.models:
                est = {}
                for kind, source in (("untuned", None), ("tuned", logs)):
                    lib = compile_library(Path(tmp) / f"{model}-{target}-{kind}.so", model,
                                          target, source)
                    est[kind] = estimate_library(lib, None)
                row = {"target": target, "model": model,
                       "untuned_ms": est["untuned"].ms, "tuned_ms": est["tuned"].ms,
                       "core": est["tuned"].cpu, "clock_ghz": est["tuned"].core["clock_ghz"]}
                rows.append(row)
                print(f"{target:<7} {model:<20} {row['untuned_ms']:>10.2f} "
                      f"{row['tuned_ms']:>9.2f} {row['tuned_ms'] / row['untuned_ms']:>13.3f}"
                      f"  {row['core']} at {row['clock_ghz']} GHz", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How well the simulated board ranks kernel variants: estimated vs measured, on x86.

The simulated board (edgec/tune/simulated_board.py) ranks, per conv task, the kernel-space
variants by the instruction-level estimate (keeping one only when it is estimated 15%
faster than the default, a margin this script measured). Here no ARM board exists, but the
same estimate runs for this x86 machine (qemu-x86_64 counts, llvm-mca on the host core's
model), so its picks can be checked against real timings: for each conv task of the model
built for the `x86_64` (AVX2) target, every variant is built once, timed here (one thread,
cold, MetaSchedule's local runner as tuning uses it) and estimated. Per task it prints the
Spearman rank correlation, and the measured time of the estimate's pick against the
measured best and the default; then the totals over all tasks (each weighted by how often
the model runs it).

    python bench/kernel_estimate_check.py [--model resnet18] [--json OUT]

Times are taken one task at a time, nothing else running (the emulator runs between tasks,
not during them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ["TVM_NUM_THREADS"] = "1"  # the estimate is of one thread

from estimate_check import spearman  # noqa: E402

TARGET = "x86_64"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--json")
    args = parser.parse_args()

    from tvm.s_tir import meta_schedule as ms_api
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from edgec import build, pipeline, targets
    from edgec.boards.estimate import cores, kernels
    from edgec.codegen.schedule_space import variants
    from edgec.cpu import host_label
    from edgec.tvm_compat import metaschedule as ms

    target = targets.load(TARGET)
    tvm_target = target.tvm_target()
    ir = build.lower(pipeline.prepare(f"zoo:{args.model}", target, None, "default"), target,
                     default_schedules=False)
    core = cores.lookup(cores.HOST)
    # Shared libraries (the local builder's default is a .tar only the full TVM loads).
    builder, runner = ms.make_builder("g++"), ms.make_runner()
    rows = []
    print(f"{args.model}, {TARGET} target, measured on {host_label()} (1 thread, cold) vs "
          f"estimated for the host core ({core.mca_cpu} model at {core.clock_ghz} GHz)")
    print(f"{'task':<44} {'n':>3} {'rho':>6} {'pick/best':>9} {'pick/default':>12}")
    for task in ms.extract_tasks(ir, tvm_target):
        mod = ms.task_mod(task)
        with tvm_target:
            space = variants(mod["main"], tvm_target) or []
        if len(space) < 3:
            continue
        built = builder.build([ms_api.builder.BuilderInput(s.mod, tvm_target) for s in space])
        ok = [(s, b) for s, b in zip(space, built, strict=True) if b.error_msg is None]
        inputs = [ms_api.runner.RunnerInput(b.artifact_path, "cpu",
                                            ArgInfo.from_prim_func(s.mod["main"]))
                  for s, b in ok]
        measured = []
        for future in runner.run(inputs):
            result = future.result()
            measured.append(statistics.median(float(x) for x in result.run_secs)
                            if result.error_msg is None else None)
        jobs = [(b.artifact_path, [(tuple(a.shape), str(a.dtype))
                                   for a in ArgInfo.from_prim_func(s.mod["main"])])
                for s, b in ok]
        estimated = [e.seconds for e in kernels.estimate_kernels(jobs, core, "x86_64")]
        pairs = [(m, e) for m, e in zip(measured, estimated, strict=True)
                 if m is not None and e is not None]
        if len(pairs) < 3 or measured[0] is None or estimated[0] is None:
            continue
        m, e = zip(*pairs, strict=True)
        pick = m[e.index(min(e))]
        row = {"task": task.task_name, "weight": int(task.weight), "variants": len(pairs),
               "rho": spearman(list(e), list(m)), "best_s": min(m), "pick_s": pick,
               "default_s": measured[0], "estimated_s": list(e), "measured_s": list(m)}
        rows.append(row)
        print(f"{row['task'][:44]:<44} {len(pairs):>3} {row['rho']:>6.2f} "
              f"{pick / min(m):>9.3f} {pick / measured[0]:>12.3f}", flush=True)
    total = {k: sum(r["weight"] * r[k] for r in rows) for k in ("best_s", "pick_s",
                                                               "default_s")}
    summary = {"model": args.model, "target": TARGET, "cpu": host_label(),
               "date": time.strftime("%Y-%m-%d"), "tasks": len(rows),
               "median_rho": statistics.median(r["rho"] for r in rows),
               "pick_over_best": total["pick_s"] / total["best_s"],
               "pick_over_default": total["pick_s"] / total["default_s"],
               "best_over_default": total["best_s"] / total["default_s"]}
    print(f"{len(rows)} tasks: median Spearman {summary['median_rho']:.2f}; over the model's "
          f"tasks, the estimate's picks take {summary['pick_over_best']:.3f}x the measured "
          f"best and {summary['pick_over_default']:.3f}x the defaults (measured best: "
          f"{summary['best_over_default']:.3f}x the defaults)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"summary": summary, "tasks": rows}, out, indent=1)


if __name__ == "__main__":
    main()

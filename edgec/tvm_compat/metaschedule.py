"""The only module that touches MetaSchedule's internals (tvm.s_tir.meta_schedule, 0.27), with
pruned_database.py beside it (the JSON database's files, read without JSONDatabase) and
pooled_builder.py (LocalBuilder's workers kept across batches).

A TVM upgrade that moves these APIs should be these two files' work alone.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.runner.config import RPCConfig

from .tensor_intrinsics import load_cpu_intrinsics_only, load_no_intrinsics, target_arch


def _connect_direct(rpc_config: RPCConfig):
    """Session factory for a runner that talks to one RPC server, no tracker: the config's
    tracker fields carry that server's host and port."""
    from tvm import rpc

    return rpc.connect(rpc_config.tracker_host, rpc_config.tracker_port,
                       session_timeout=rpc_config.session_timeout_sec)


def _export_with(compiler: str, mod: Any) -> str:
    """Export a candidate as a shared library linked by a cross compiler (boards have none)."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(), "candidate.so")
    mod.export_library(path, fcompile=cc.cross_compiler(compiler))
    return path


def make_builder(cross_compiler: str | None, workers: int | None = None):
    """Candidates' builder: worker processes kept across batches (pooled_builder.py);
    close() it when the tune ends."""
    from .pooled_builder import PooledBuilder

    export = functools.partial(_export_with, cross_compiler) if cross_compiler else None
    return PooledBuilder(workers or os.cpu_count() or 1, 120.0, load_no_intrinsics, export)


def make_runner(rpc: tuple[str, int] | None = None, tracker: tuple[str, int] | None = None,
                key: str | None = None, timeout: float = 120.0):
    """A synchronous LocalRunner, or RPCRunner against one server or through a tracker.

    Locally each candidate is timed cold: weights and outputs flushed from the caches before
    each of 10 single runs. Timed hot (repeated until 40 ms), candidates that keep weights in
    L1/L2 won, and in the model, where deep layers' weights come from DRAM, they ran slower
    than edgec's default schedules: tuned ResNet-18 and MobileNetV3-Small were 5-15% slower
    than untuned. (Boards keep the hot timing: TVM's cache flush is x86 code.)
    """
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40,
                                          enable_cpu_cache_flush=False)
    if rpc is not None:
        config = RPCConfig(rpc[0], rpc[1], "direct", 1, int(timeout))
        return _Synchronous(ms.runner.RPCRunner(config, evaluator, max_workers=1,
                                                f_create_session=_connect_direct))
    if tracker is not None:
        # One connection per board under the key (RPCRunner's default is one): each worker
        # asks the tracker for a session, which hands out the free boards in turn.
        config = RPCConfig(tracker[0], tracker[1], key, 1, int(timeout))
        boards = boards_at_tracker(tracker, key)
        return _Synchronous(ms.runner.RPCRunner(config, evaluator, max_workers=max(1, boards)))
    cold = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0,
                                     enable_cpu_cache_flush=True)
    return _Synchronous(ms.runner.LocalRunner(timeout_sec=timeout, evaluator_config=cold))


def boards_at_tracker(tracker: tuple[str, int], key: str) -> int:
    """How many RPC servers are registered at the tracker under `key` (free or busy)."""
    from tvm import rpc

    summary = rpc.connect_tracker(*tracker).summary()
    return sum(1 for server in summary.get("server_info", [])
               if str(server.get("key", "")).split(":")[-1] == key)


Job = tuple[str, list[tuple[tuple[int, ...], str]]]  # artifact path, its arguments' shapes, dtypes


def make_estimating_runner(estimate: Callable[[list[Job]], list[tuple[float | None, str]]]):
    """A runner that prices each built candidate with `estimate` instead of timing it: the
    simulated board. `estimate` gets (artifact, [(shape, dtype)...]) per candidate and gives
    (seconds, "") or (None, error) for each."""
    return _Estimating(estimate)


@derived_object
class _Estimating(ms.runner.PyRunner):
    def __init__(self, estimate) -> None:
        super().__init__()
        self.estimate = estimate

    def run(self, runner_inputs):
        jobs = [(str(inp.artifact_path),
                 [(tuple(int(d) for d in arg.shape), str(arg.dtype)) for arg in inp.args_info])
                for inp in runner_inputs]
        results = self.estimate(jobs)  # artifacts: removed by the caller, as after any runner
        futures = []
        for seconds, error in results:
            ok = seconds is not None
            result = ms.runner.RunnerResult([seconds] if ok else None,
                                            None if ok else (error or None))
            futures.append(ms.runner.RunnerFuture(lambda: True, lambda r=result: r))
        return futures


@derived_object
class _Synchronous(ms.runner.PyRunner):
    """Waits for each batch's measurements before MetaSchedule builds the next one.

    MetaSchedule overlaps building batch N+1 with measuring batch N; on a 2-core machine the
    compiler then steals the cores being timed. Finished batches also get committed to the
    database at the next task switch, so a killed tune loses at most the batch in flight.
    """

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def run(self, runner_inputs):
        futures = self.inner.run(runner_inputs)
        for future in futures:
            future.result()
        return futures


def open_database(work_dir: Path):
    work_dir.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=True)


def layered(databases: list):
    """One database over several, in order: a workload's records come from the first that
    has any (a user's tuning before the shipped logs, never mixed by speed: they may come
    from different CPUs)."""
    return databases[0] if len(databases) == 1 else ms.database.OrderedUnionDatabase(
        *databases)


def same_schedule(scheduled, default) -> bool:
    """Whether a PrimFunc a database scheduled has the body edgec's default schedule gives
    (the record holds the seeded default, which tuning confirmed)."""
    import tvm_ffi  # TVM 0.27 moved structural_equal out of tvm.ir

    return bool(tvm_ffi.structural_equal(scheduled.body, default.body, map_free_vars=True))


def workload_key(func) -> str:
    """A name-independent key of an unscheduled PrimFunc: the same conv in two models (or two
    compiles of one model) has the same key, whatever its function is called."""
    import tvm_ffi

    hashed = tvm_ffi.structural_hash(func.without_attr("global_symbol"), map_free_vars=True)
    return f"{hashed & (1 << 64) - 1:016x}"


def extract_tasks(ir, target) -> list:
    return list(ms.relax_integration.extract_tasks(ir, target))


def task_mod(task):
    return task.dispatched[0]


def measured(database, mod) -> list:
    """Valid measured records of a workload, best first."""
    if not database.has_workload(mod):
        return []
    return list(database.get_top_k(database.commit_workload(mod), 1 << 20))


def record_seconds(record) -> float:
    return sum(float(s) for s in record.run_secs) / len(record.run_secs)


def estimate_flops(mod) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    return float(estimate_tir_flops(mod))


def make_progress_callback(on_batch: Callable[[int, int, list[float]], None]):
    """A measure callback that reports (task index, trials in batch, latencies) per batch."""

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
                  runner_results) -> None:
            seconds = [sum(float(s) for s in r.run_secs) / len(r.run_secs)
                       for r in runner_results if r.run_secs]
            on_batch(int(task_id), len(measure_candidates), seconds)

    return Progress()


def evolutionary_search(per_batch: int):
    """MetaSchedule's evolutionary search with a population scaled to the batch: 16
    candidates per trial measured, 64 to 512 (its default, reached at batches of 32). A
    population of 512 bred over 4 generations for a batch of 4 trials spent most of a short
    tune in the search, not in measuring."""
    population = max(64, min(512, 16 * per_batch))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 4))


def run_tuning(tasks, weights, work_dir: Path, database, *, total_trials: int,
               trials_per_task: int, builder, runner, on_batch) -> None:
    """Tune ExtractedTasks with the XGBoost cost model, committing each batch to `database`."""
    load_cpu_intrinsics_only(target_arch(tasks[0].target))
    # MetaSchedule names its logger's handlers in a logging dictConfig: one without a name
    # (left by an earlier tune in the same process under pytest) fails that config.
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in [h for h in logger.handlers if h.get_name() is None]:
        logger.removeHandler(handler)
    # Its console handler takes this logger's level: WARNING keeps the per-task INFO lines
    # and tables in work_dir/logs (where edgec's report points) and off the progress bar.
    logger.setLevel(logging.WARNING)
    per_batch = min(32, trials_per_task)
    contexts, _ = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted_tasks=tasks, work_dir=str(work_dir), space="post-order-apply",
        strategy=evolutionary_search(per_batch), num_threads=os.cpu_count() or 1,
    )
    callbacks = [*ms.measure_callback.MeasureCallback.create("default"),
                 make_progress_callback(on_batch)]
    ms.tune_tasks(
        tasks=contexts, task_weights=weights, work_dir=str(work_dir),
        max_trials_global=total_trials, max_trials_per_task=trials_per_task,
        num_trials_per_iter=per_batch, builder=builder, runner=runner,
        database=database, cost_model="xgb", measure_callbacks=callbacks,
        # Round-robin touches every task on each pick, committing finished batches at once;
        # the gradient scheduler holds a whole first round of batches uncommitted.
        task_scheduler="round-robin",
    )


def seed_database(database, tasks, target, schedule_fn, builder, runner) -> int:
    """Measure schedule_fn's schedule of every task the database has no record of it for,
    and commit it as a tuning record.

    The tuned result is then never worse than the default schedule: ApplyDatabase takes
    the fastest record, and the search starts from a measured baseline. A default schedule
    that changed since a database was made (a new edgec) is measured again, or the old
    records would win over it unmeasured. Returns how many records were committed.
    """
    candidates = []
    for task in tasks:
        mod = task_mod(task)
        sch = schedule_fn(mod["main"], target)
        if sch is not None and not has_trace(database, mod, sch):
            candidates.append((mod, sch))
    seconds = measure_into(database, candidates, target, builder, runner)
    return sum(1 for s in seconds if s is not None)


def has_trace(database, mod, sch) -> bool:
    """Whether the database holds a measured record of exactly this schedule of `mod`."""
    trace = str(sch.trace)
    return any(str(record.trace) == trace for record in measured(database, mod))


def measure_into(database, candidates: list, target, builder, runner) -> list[float | None]:
    """Build and run each (workload mod, traced Schedule) and commit it as a tuning record;
    returns each one's mean seconds (None: it failed to build or run)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    if not candidates:
        return []
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in candidates])
    runs, seconds = [], [None] * len(candidates)
    for index, ((_, sch), result) in enumerate(zip(candidates, built, strict=True)):
        if result.error_msg is None:
            args = ArgInfo.from_prim_func(sch.mod["main"])
            runs.append((index, args, ms.runner.RunnerInput(
                result.artifact_path, "cpu", args)))  # CPU targets only
    futures = runner.run([entry[-1] for entry in runs])
    for (index, args, _), future in zip(runs, futures, strict=True):
        result = future.result()
        shutil.rmtree(os.path.dirname(built[index].artifact_path), ignore_errors=True)
        if result.error_msg is None and result.run_secs:
            mod, sch = candidates[index]
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, database.commit_workload(mod), result.run_secs, target, args))
            seconds[index] = sum(float(s) for s in result.run_secs) / len(result.run_secs)
    return seconds


def apply_database(ir, database, target):
    """Replace every function the database has a record for by its best schedule."""
    from tvm import relax

    with target, database:
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(ir)


def is_scheduled(func) -> bool:
    """True for a PrimFunc a schedule (tuned or default) has been applied to."""
    from tvm import tirx

    if not isinstance(func, tirx.PrimFunc) or func.attrs is None:
        return False
    return "tirx.is_scheduled" in func.attrs and int(func.attrs["tirx.is_scheduled"]) == 1

"""Tune stage: MetaSchedule search over a model's tasks, recorded in resumable tuning logs.

A user's tuning goes to ~/.cache/edgec/tuning_logs/<target>/<cpu>/ (or --tuning-logs DIR),
one MetaSchedule JSON database per CPU the records were measured on (its metadata.json says
which, in `measured_on`), layered over the read-only shipped one: each measured batch is
appended as it finishes, so an interrupted tune loses at most the batch in flight. Records
are keyed by workload (the TIR function), so a conv shape tuned for one model serves every
model that has it. Tasks that already have their trials are skipped on the next run.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgec.errors import ConfigError, TuneError
from edgec.targets import Target
from edgec.tune import kernel_space, simulated_board
from edgec.tune.databases import (
    claim_for,
    database_layers,
    logs_dir,
    measured_on,
    read_metadata,
    rejected_in_model,
    sources,
    write_metadata,
)


@dataclass(frozen=True)
class TuneOptions:
    """How much to tune and where to measure."""

    trials_per_task: int = 64
    total_trials: int | None = None  # default: trials_per_task x tasks left
    budget_seconds: float | None = None
    rpc: tuple[str, int] | None = None
    tracker: tuple[str, int] | None = None
    key: str | None = None
    logs: Path | None = None
    dry_run: bool = False  # report what the logs cover, measure nothing
    model_check: bool = True  # after a local tune: keep only records faster in the model

    def __post_init__(self) -> None:
        if self.trials_per_task < 1:
            raise ConfigError(f"--trials-per-task must be >= 1, got {self.trials_per_task}")
        if self.rpc and self.tracker:
            raise ConfigError("give --rpc or --tracker, not both")
        if self.tracker and not self.key:
            raise ConfigError("--tracker needs --key (the board's RPC key)")


@dataclass
class TaskRow:
    name: str
    weight: int
    flops: float
    trials: int = 0
    best_seconds: float | None = None
    source: str = ""  # --status: the CPU whose record compile applies ("" none)
    left: int = 0  # trials it can still take (conv tasks: their unmeasured kernel variants)

    @property
    def gflops(self) -> float | None:
        return self.flops / self.best_seconds / 1e9 if self.best_seconds else None


@dataclass
class TuneReport:
    """Per-task results of a tuning run, and the database they went to."""

    target: str
    logs: Path
    rows: list[TaskRow]
    trials_run: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    seeded: int = 0  # edgec default schedules measured into the logs (new or changed ones)
    stopped_by: str = ""  # "budget" or "interrupt" when the tune ended before its trials
    model_check: object = None  # edgec.tune.model_check.ModelCheck, when one ran

    @property
    def log_file(self) -> Path:
        """MetaSchedule's own log of the run (its per-task lines and tables)."""
        return self.logs / "logs" / "tvm.s_tir.meta_schedule.logging.task_scheduler.log"

    @property
    def estimated_ms(self) -> float | None:
        if any(r.best_seconds is None for r in self.rows):
            return None
        return 1000.0 * sum(r.weight * r.best_seconds for r in self.rows)

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.trials_run / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        with_sources = any(r.source for r in self.rows)
        lines = [f"{'task':<44} {'x':>2} {'MFLOP':>8} {'trials':>6} {'best ms':>9} {'GFLOP/s':>8}"
                 + ("  record compile applies, measured on" if with_sources else "")]
        for r in sorted(self.rows, key=lambda r: -(r.best_seconds or 0) * r.weight):
            best = f"{r.best_seconds * 1000:.3f}" if r.best_seconds else "-"
            rate = f"{r.gflops:.1f}" if r.gflops else "-"
            lines.append(f"{r.name[:44]:<44} {r.weight:>2} {r.flops / 1e6:>8.1f} "
                         f"{r.trials:>6} {best:>9} {rate:>8}"
                         + (f"  {r.source or '- (edgec default)'}" if with_sources else ""))
        est = self.estimated_ms
        if self.seeded:
            lines.append(f"{self.seeded} new or changed default schedules measured as records")
        lines.append(
            f"{self.trials_run} trials in {self.seconds / 60:.1f} min "
            f"({self.trials_per_minute:.0f}/min); sum of tuned tasks: "
            f"{f'{est:.2f} ms' if est else 'n/a (some tasks untuned)'}; logs: {self.logs}"
        )
        if self.trials_run and self.log_file.exists():  # conv tasks alone never reach it
            lines.append(f"MetaSchedule's log: {self.log_file}")
        if self.model_check is not None:
            lines.append(self.model_check.summary())
        return "\n".join(lines)


Progress = Callable[[TuneReport, int], None]  # report so far, trials planned in total


def tune(ir, target: Target, options: TuneOptions, progress: Progress | None = None,
         name: str | None = None) -> TuneReport:
    """Tune every task of a lowered (legalized, fused, unscheduled) Relax module.

    The time and trials spent are added up in the database's metadata.json, for the model
    `name` too when given, after every batch (so a killed tune still counts what it did).

    Raises:
        TuneError: MetaSchedule failed; what was measured until then stays in the logs.
    """
    with contextlib.ExitStack() as cleanup:  # ends the builder's worker processes
        return _tune(ir, target, options, progress, name, cleanup)


def _tune(ir, target: Target, options: TuneOptions, progress: Progress | None,
          name: str | None, cleanup: contextlib.ExitStack) -> TuneReport:
    from edgec.codegen.amx_schedule import on_amx_tiles
    from edgec.codegen.schedules import schedule_function
    from edgec.runtime import use_all_cores
    from edgec.tvm_compat import metaschedule as ms

    use_all_cores()  # local runner workers inherit it: measure on the threads we deploy with
    tvm_target = target.tvm_target()
    cpu = measured_on(options, target)
    work_dir = logs_dir(target, options.logs, cpu)
    if not options.dry_run:
        claim_for(work_dir, cpu)
    database = ms.open_database(work_dir)
    # AMX convs keep their one schedule (amx_schedule.on_amx_tiles): MetaSchedule's
    # generic search would only find int32 loops far slower than the tiles.
    tasks = [task for task in ms.extract_tasks(ir, tvm_target)
             if not on_amx_tiles(ms.task_mod(task)["main"])]
    report = TuneReport(target.name, work_dir, [])
    remote = options.rpc or options.tracker
    builder = runner = None
    simulated = not remote and simulated_board.applies_to(target)
    if not options.dry_run:
        builder = ms.make_builder(target.cross_compiler if remote or simulated else None)
        cleanup.callback(builder.close)
        runner = simulated_board.runner(target) if simulated else ms.make_runner(
            options.rpc, options.tracker, options.key)
        # Default schedules first: they count as trials, so --trials 1 measures just them.
        report.seeded = _failing_as_tune_error(
            target, work_dir, ms.seed_database, database, tasks, tvm_target,
            schedule_function, builder, runner)
        if simulated:  # searched candidates must beat the default by the estimate's error
            runner = simulated_board.runner(target, simulated_board.HANDICAP)
    pending, pending_rows, fresh = [], [], []
    layers = sources(target, options) if options.dry_run else []
    rejected = rejected_in_model(database_layers(target, options.logs)) if layers else {}
    for task in tasks:
        mod = ms.task_mod(task)
        records = ms.measured(database, mod)
        row = TaskRow(task.task_name, int(task.weight), ms.estimate_flops(mod), len(records),
                      ms.record_seconds(records[0]) if records else None)
        row.source = next((label for label, db in layers if ms.measured(db, mod)), "")
        verdict = rejected.get(ms.workload_key(mod["main"]))
        if row.source and verdict:
            row.source = (f"- (edgec default: the record ran {verdict['ratio']:.2f}x slower "
                          f"in {verdict['model']})")
        report.rows.append(row)
        space = kernel_space.unmeasured(mod, tvm_target, database)
        row.left = max(0, options.trials_per_task - row.trials)
        if space is not None:  # a conv task: done when its kernel space is measured
            row.left = min(row.left, len(space))
            space = space[:row.left]
        if row.left == 0:
            report.skipped.append(row.name)
        else:
            pending.append(task)
            pending_rows.append(row)
            fresh.append(space)
    if options.dry_run or not pending:
        return report
    # Heaviest first: by each task's share of the latency, its best measured time (the
    # seeded default at least) times how often the model runs it, so a budget that ends
    # the tune early has spent it where the time goes.
    order = sorted(range(len(pending)), key=lambda i: -pending_rows[i].weight * (
        pending_rows[i].best_seconds or pending_rows[i].flops * 1e-12))
    pending, pending_rows = [pending[i] for i in order], [pending_rows[i] for i in order]
    fresh = [fresh[i] for i in order]
    total = options.total_trials or sum(r.left for r in pending_rows)
    start = time.perf_counter()
    spent_before = read_metadata(work_dir)

    # Raised inside MetaSchedule's callback, _Stop comes back as whatever error the FFI makes
    # of it (a bare RuntimeError with tvm-ffi 0.1.14), so the reason is also noted here.
    stop: list[str] = []

    def on_batch(task_id: int, count: int, seconds: list[float]) -> None:
        row = pending_rows[task_id]
        row.trials += count
        report.trials_run += count
        if seconds:
            best = min(seconds)
            row.best_seconds = best if row.best_seconds is None else min(row.best_seconds, best)
        report.seconds = time.perf_counter() - start
        write_metadata(work_dir, _add_spent(spent_before, name, report.seconds,
                                            report.trials_run))
        if progress:
            progress(report, total)
        if options.budget_seconds and report.seconds > options.budget_seconds:
            stop.append("budget")
        if stop:
            raise _Stop()

    try:
        with _ctrl_c_stops_after_the_batch(stop):
            # Conv tasks in edgec's kernel space, then MetaSchedule's generic search on the
            # tasks no edgec kernel covers.
            _failing_as_tune_error(
                target, work_dir, kernel_space.search,
                [(i, ms.task_mod(pending[i]), space) for i, space in enumerate(fresh)
                 if space is not None], database, tvm_target, builder=builder,
                runner=runner, on_batch=on_batch, should_stop=lambda: bool(stop),
                stopped=lambda: bool(stop))
            left = [i for i, space in enumerate(fresh) if space is None]
            if not stop and left and report.trials_run < total:
                generic = _generic_phase(pending, pending_rows, left, on_batch)
                _failing_as_tune_error(
                    target, work_dir, ms.run_tuning, generic.tasks, generic.weights, work_dir,
                    database, total_trials=total - report.trials_run,
                    trials_per_task=options.trials_per_task, builder=builder, runner=runner,
                    on_batch=generic.on_batch, stopped=lambda: bool(stop))
    except TuneError:
        if not stop:
            raise
        # the batch that crossed the budget, or ended after Ctrl-C, is in the database
    report.seconds = time.perf_counter() - start
    report.stopped_by = stop[0] if stop else ""
    return report


@dataclass
class _GenericPhase:
    tasks: list
    weights: list[float]
    on_batch: Callable[[int, int, list[float]], None]


def _generic_phase(pending: list, rows: list[TaskRow], left: list[int],
                   on_batch: Callable[[int, int, list[float]], None]) -> _GenericPhase:
    """The tasks MetaSchedule's search still gets, with its task indices mapped back."""
    return _GenericPhase([pending[i] for i in left], [float(pending[i].weight) for i in left],
                         lambda task_id, count, seconds: on_batch(left[task_id], count,
                                                                  seconds))


@contextlib.contextmanager
def _ctrl_c_stops_after_the_batch(stop: list[str]):
    """The first Ctrl-C (SIGINT) asks the tune to stop once the batch in flight is committed;
    a second one interrupts at once, as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def first(_signum, _frame) -> None:
        stop.append("interrupt")
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _failing_as_tune_error(target: Target, work_dir: Path, step, *args,
                           stopped=lambda: False, **kwargs):
    """Run a MetaSchedule step; TVM's errors become TuneError, edgec's bugs keep their
    traceback. `stopped()` True: the error is our own stop (_Stop, in whatever form the FFI
    returns it), also a TuneError for the caller to recognise."""
    from edgec.tvm_compat.errors import is_tvm_error

    try:
        return step(*args, **kwargs)
    except Exception as err:
        if not is_tvm_error(err) and not stopped():
            raise
        last_line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        raise TuneError(f"tuning for {target.name} failed: {last_line}; "
                        f"records measured so far are kept in {work_dir}") from err


def _add_spent(before: dict, name: str | None, seconds: float, trials: int) -> dict:
    after = json.loads(json.dumps(before))  # deep copy
    after["tuning_seconds"] = round(before.get("tuning_seconds", 0.0) + seconds, 1)
    after["trials"] = before.get("trials", 0) + trials
    if name:
        model = after.setdefault("models", {}).setdefault(name, {})
        model["tuning_seconds"] = round(model.get("tuning_seconds", 0.0) + seconds, 1)
        model["trials"] = model.get("trials", 0) + trials
    return after


class _Stop(Exception):
    """Raised from the measure callback to stop MetaSchedule (--budget spent, or Ctrl-C)."""


def parse_budget(text: str | None) -> float | None:
    """'20m', '90s', '1.5h' or plain seconds → seconds; 'none' (or None) → no limit."""
    if text is None or text.strip().lower() in ("none", "no", "off"):
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise ConfigError(f'--budget "{text}" is not a duration like 20m, 90s or 1h (or none)')
    return seconds


"""Tuning conv tasks in edgec's own kernel space (edgec.codegen.schedule_space); MetaSchedule's
generic search gets only the tasks no edgec kernel covers.

The space is small (up to ~40 distinct variants of a conv's micro-kernel, fewer for most
shapes), so it is measured in full, nearest to the default first, instead of sampled
through a cost model: each task's unmeasured variants, up to its trials left, go out as one
batch (built in parallel, then timed one by one) and land in the database as ordinary
MetaSchedule tuning records, which compile applies by the fastest. A conv task whose
variants are all measured is done. (MetaSchedule's search on conv tasks after them found
nothing faster on ResNet-18 in 128 trials, and on a Winograd task it spent 5 minutes
breeding its first batch.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def unmeasured(mod, target, database) -> list | None:
    """The task's kernel-space variants the database has no record of (None: no edgec
    kernel rule covers the task)."""
    from edgec.codegen.schedule_space import variants
    from edgec.tvm_compat import metaschedule as ms

    space = variants(mod["main"], target)
    if not space:
        return None
    return [sch for sch in space if not ms.has_trace(database, mod, sch)]


def search(batches: Sequence[tuple[int, object, list]], database, target, *, builder, runner,
           on_batch: Callable[[int, int, list[float]], None],
           should_stop: Callable[[], bool]) -> int:
    """Measure each (task index, workload mod, schedules) batch in the order given (heaviest
    first); on_batch(index, count, seconds) after each (it may raise to stop the tune).
    Returns the number of variants measured."""
    from edgec.tvm_compat import metaschedule as ms

    measured = 0
    for index, mod, schedules in batches:
        if should_stop():
            break
        if not schedules:
            continue
        seconds = ms.measure_into(database, [(mod, sch) for sch in schedules], target,
                                  builder, runner)
        measured += len(schedules)
        on_batch(index, len(schedules), [s for s in seconds if s is not None])
    return measured

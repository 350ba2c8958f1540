"""Tuning conv tasks in edgec's own kernel space (edgec.codegen.schedule_space), before
MetaSchedule's generic search gets the trials left.

The space is small (up to ~40 distinct variants of a conv's micro-kernel, fewer for most
shapes), so it is measured in full, nearest to the default first, instead of sampled
through a cost model: each task's unmeasured variants, up to its trials left, go out as one
batch (built in parallel, then timed one by one) and land in the database as ordinary
MetaSchedule tuning records, which compile applies by the fastest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def search(tasks: Sequence, trials_left: Sequence[int], database, target, *, builder, runner,
           on_batch: Callable[[int, int, list[float]], None],
           should_stop: Callable[[], bool]) -> int:
    """Measure the kernel-space variants of each task in the order given (heaviest first),
    up to trials_left[i] for task i; on_batch(i, count, seconds) after each task's batch
    (it may raise to stop the tune). Returns the number of variants measured."""
    from edgec.codegen.schedule_space import variants
    from edgec.tvm_compat import metaschedule as ms

    measured = 0
    for index, task in enumerate(tasks):
        if should_stop():
            break
        if trials_left[index] <= 0:
            continue
        mod = ms.task_mod(task)
        fresh = [sch for sch in variants(mod["main"], target)
                 if not ms.has_trace(database, mod, sch)][:trials_left[index]]
        if not fresh:
            continue
        seconds = ms.measure_into(database, [(mod, sch) for sch in fresh], target, builder,
                                  runner)
        measured += len(fresh)
        on_batch(index, len(fresh), [s for s in seconds if s is not None])
    return measured

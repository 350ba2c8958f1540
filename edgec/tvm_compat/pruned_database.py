"""A compile's view of a MetaSchedule JSON database: only its model's workloads.

JSONDatabase deserializes every module of its workload file when opened: the shipped
x86_64-avx512-vnni logs (25 MB of workloads) took 10.5 s of a 21.6 s SqueezeNet compile on
a Zen 4, for the few dozen workloads one model has. Tuning still writes through
JSONDatabase (metaschedule.open_database); compile reads through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from tvm.s_tir import meta_schedule as ms


def open_pruned(work_dir: Path, funcs: list, index: dict | None = None):
    """An in-memory database holding only the records of `funcs`' workloads from the JSON
    database in `work_dir`. A workload is matched by MetaSchedule's own hash of
    the module MetaScheduleApplyDatabase queries, then by structural equality with the
    stored one; its records are read against the stored module, as JSONDatabase reads them
    (structural equality ignores block names, which a record's trace looks blocks up by:
    read against the queried module, PP-LCNet's packed x86_64 records failed to replay).
    `index` is workload_index(work_dir), which callers may cache."""
    index = index if index is not None else workload_index(work_dir)
    memory = ms.database.MemoryDatabase()
    loaded = set()
    for func in funcs:
        shash, stored_workloads = _stored_workloads(memory, func, index)
        if shash in loaded:  # two functions of one workload (or two models'): loaded once
            continue
        loaded.add(shash)
        for stored, records in stored_workloads:
            for record in _fastest(records):
                memory.commit_tuning_record(
                    ms.database.TuningRecord.from_json(record[1], stored))
    return memory


def has_record_of(func, trace, index: dict) -> bool | None:
    """Whether a database (its workload_index) holds a measured record of `trace` (a
    Schedule's trace) for func's workload, among all its records, not only the ones
    open_pruned keeps; None where it holds no measured record of the workload. Compares
    the records' JSON, not parsed traces (parsing every record of MobileNetV3-Small's
    searched workloads added 2.7 s to its 8.7 s compile)."""
    wanted = _plain(trace.as_json(remove_postproc=False))
    found = None
    for _, records in _stored_workloads(ms.database.MemoryDatabase(), func, index)[1]:
        for record in _fastest(records, len(records)):
            found = False
            if record[1][0] == wanted:  # JSON's 1 and 0 equal Python's True and False
                return True
    return found


def _plain(value):
    """A trace's JSON (TVM arrays, strings and integer or float immediates) as the Python
    lists, strings and numbers json.loads gives for it."""
    import tvm_ffi

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tvm_ffi.Array, list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "value"):  # IntImm, FloatImm
        return value.value
    return str(value)


def _stored_workloads(memory, func, index: dict) -> tuple[str, list]:
    """(MetaSchedule's hash of func's workload, [(stored Workload, its record lines)] of the
    stored workloads that are func's): matched by that hash (of the module
    MetaScheduleApplyDatabase queries, committed to `memory` to get it), then by
    structural equality."""
    import tvm_ffi
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    wanted = memory.commit_workload(_normalize_mod(func))
    shash = str(wanted.as_json()[0])
    matches = []
    for line, records in index.get(shash, ()):
        stored = ms.database.Workload.from_json(json.loads(line))
        if tvm_ffi.structural_equal(stored.mod, wanted.mod):  # else a hash collision
            matches.append((stored, records))
    return shash, matches


# Records parsed per workload: the database answers a compile with the fastest valid one.
# Parsing all (a trace each) took 3.5 of a 17 s MobileNetV2 compile on Zen 1 (592 records).
# A few runners-up stay in case the fastest's trace is one MetaSchedule deems invalid.
_KEPT_PER_WORKLOAD = 4
_NOT_MEASURED = 1e10  # MetaSchedule's stand-in for a failed run


def _fastest(lines: list[str], kept: int = _KEPT_PER_WORKLOAD) -> list:
    """The `kept` parsed records of `lines` with the lowest mean run time, as MetaSchedule
    ranks them (a stable sort; records with no real run time are never returned, as its
    TuningRecord.IsValid)."""
    parsed = [json.loads(line) for line in lines]
    timed = []
    for order, record in enumerate(parsed):
        secs = record[1][1] or []
        if any(s is not None and s != _NOT_MEASURED for s in secs):
            timed.append((sum(secs) / len(secs), order, record))
    timed.sort(key=lambda entry: entry[:2])
    return [record for _, _, record in timed[:kept]]


def workload_index(work_dir: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """{workload hash: [(its line of database_workload.json, the lines of
    database_tuning_record.json that refer to that line)]}, nothing parsed beyond the
    leading hash and index: JSONDatabase's files are a [hash, module] per line and an
    [index of the workload line, record] per line."""
    by_line: dict[int, list[str]] = {}
    records = work_dir / "database_tuning_record.json"
    if records.is_file():
        for line in records.read_text().splitlines():
            if line.strip():
                by_line.setdefault(int(line[1:line.index(",")]), []).append(line)
    index: dict[str, list[tuple[str, list[str]]]] = {}
    workloads = work_dir / "database_workload.json"
    lines = workloads.read_text().splitlines() if workloads.is_file() else []
    for number, line in enumerate(lines):
        if number in by_line:
            shash = line[2:line.index('"', 2)]
            index.setdefault(shash, []).append((line, by_line[number]))
    return index

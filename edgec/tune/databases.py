"""Tuning databases: where a user's records go (one MetaSchedule JSON database per target and
CPU measured on), the layers compile applies (the user's for this CPU, then other CPUs',
then the shipped logs), their metadata.json, and the schedule callback that applies them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgec import shipped
from edgec.cache import cache_root
from edgec.errors import ConfigError
from edgec.targets import Target

if TYPE_CHECKING:
    from edgec.tune.search import TuneOptions


def logs_root() -> Path:
    """The shipped tuning databases, one folder per target (package data, see edgec.shipped):
    read-only, made by edgec's developers."""
    return shipped.path("tuning_logs")


def user_logs_root() -> Path:
    """Where a user's tuning goes: $EDGEC_TUNING_LOGS, else ~/.cache/edgec/tuning_logs."""
    override = os.environ.get("EDGEC_TUNING_LOGS")
    cache = cache_root()
    return Path(override) if override else cache / "tuning_logs"


def measured_on(options: TuneOptions | None = None, target: Target | None = None) -> str:
    """The CPU a tune measures on: this machine's (edgec.cpu.host_label), or for --rpc and
    --tracker the target's board (its [board] core when the target file names one; not the
    address, which changes from one session to the next), or for an absent aarch64 board
    the simulated one (edgec.tune.simulated_board)."""
    from edgec.tune import simulated_board

    remote = options is not None and bool(options.rpc or options.tracker)
    if target is not None and not remote and simulated_board.applies_to(target):
        return simulated_board.label(target)
    if options is not None and (options.rpc or options.tracker):
        name = target.name if target is not None else "remote"
        core = (target.board or {}).get("core") if target is not None else None
        via = f"tracker key {options.key}" if options.tracker else "RPC"
        return f"{name} board" + (f" ({core})" if core else "") + f" via {via}"
    from edgec.cpu import host_label

    return host_label()


def logs_dir(target: Target, override: str | Path | None = None,
             cpu: str | None = None) -> Path:
    """The database `tune` writes: --tuning-logs DIR, else the user's one for the target and
    the CPU measured on (`cpu`, default this machine's). Never the shipped logs: tuning does
    not modify files of the installed package."""
    from edgec.cpu import label_slug

    if override:
        return Path(override)
    return user_logs_root() / target.name / label_slug(cpu or measured_on())


def _has_database(path: Path) -> bool:
    return (path / "database_tuning_record.json").is_file()


def shipped_layers(target: Target) -> list[Path]:
    """The target's shipped databases compile applies: the one measured on this machine's
    CPU, when edgec ships one (a subfolder named by its label, as a user's database is:
    machines of one kind differ, a Zen 5 prefers other tiles than a Xeon), then the
    target's own."""
    from edgec.cpu import label_slug

    root = logs_root() / target.logs_name
    here = root / label_slug(measured_on()) if target.is_native else None
    return [p for p in (here, root) if p is not None and _has_database(p)]


def database_layers(target: Target, logs: str | Path | None = None) -> list[Path]:
    """The databases compile applies, first wins per workload: --tuning-logs DIR, or the
    user's for this machine's CPU, then the shipped one measured on this CPU, then the
    user's measured on other CPUs (boards), then the target's shipped logs."""
    shipped = shipped_layers(target)
    same_cpu = [p for p in shipped if p != logs_root() / target.logs_name]
    if logs:
        if not _has_database(Path(logs)):
            raise ConfigError(f"--tuning-logs {logs} holds no MetaSchedule database")
        return [Path(logs), *shipped]
    here = logs_dir(target)
    folder = user_logs_root() / target.name
    others = sorted(p for p in folder.iterdir() if p != here) if folder.is_dir() else []
    mine = [p for p in (here, *same_cpu, *others, folder)  # folder: pre-CPU logs
            if _has_database(p)]
    return mine + [p for p in shipped if p not in mine]


def layer_cpu(path: Path) -> str:
    """The CPU a database's records were measured on (its metadata.json), "?" if unrecorded."""
    return str(read_metadata(path).get("measured_on") or "?")


def rejected_in_model(layers: list[Path]) -> dict[str, dict]:
    """{workload key: verdict} of the records the in-model check (edgec.tune.model_check)
    found slower in their model than edgec's default, over the layers compile applies; per
    workload the first layer with a verdict decides (a user's check that kept a record
    overrides the shipped database's rejection)."""
    verdicts: dict[str, dict] = {}
    for path in reversed(layers):
        verdicts.update(read_metadata(path).get("in_model", {}))
    return {key: verdict for key, verdict in verdicts.items() if not verdict.get("kept")}


def database_schedule(target: Target, logs: str | Path | None, stats: dict[str, int],
                      rejected: dict[str, dict] | None = None):
    """A schedule callback for build.lower that applies the target's tuning databases,
    counting into `stats` the functions ("functions"), those scheduled from records
    ("tuned"), and of those, the ones whose record is edgec's default schedule, measured
    and kept by tuning ("confirmed"), and the ones left to edgec's defaults because their
    record lost in the model ("rejected") or was never measured against today's default
    ("stale": tuned with an older edgec); "searched" maps each function scheduled from a
    searched record to its workload key, "without_record" lists the functions no record
    covers. `rejected` overrides the databases' own verdicts
    (the in-model check builds with {}). None when there are no logs for the target."""
    layers = database_layers(target, logs)
    if not layers:
        return None
    if rejected is None:
        rejected = rejected_in_model(layers)
    from edgec.codegen import intrinsics
    from edgec.codegen.schedules import schedule_function
    from edgec.tvm_compat import metaschedule as ms

    intrinsics.register_all()

    def _measured_against(default, func) -> bool:
        """Whether the first layer with records of func's workload (the one applied) holds
        a measured record of its default schedule as edgec makes it today."""
        from edgec.tvm_compat import pruned_database

        for path in layers:
            index = _cached(_INDEXED, path, pruned_database.workload_index)
            held = pruned_database.has_record_of(func, default.trace, index)
            if held is not None:
                return held
        return False

    def schedule(ir):
        tvm_target = target.tvm_target()
        before = {g.name_hint: f for g, f in ir.functions_items()
                  if type(f).__name__ == "PrimFunc"}
        opened = [_open_for(path, list(before.values())) for path in layers]
        database = ms.layered(opened)
        ir_before = ir
        ir = ms.apply_database(ir, database, tvm_target)
        tuned = [(g.name_hint, f) for g, f in ir.functions_items() if ms.is_scheduled(f)]
        confirmed, searched, lost, stale = 0, {}, [], []
        for name, func in tuned:
            with tvm_target:
                default = schedule_function(before[name], tvm_target)
            if default is not None and ms.same_schedule(func, default.mod["main"]):
                confirmed += 1
                continue
            key = ms.workload_key(before[name])
            if key in rejected:  # slower in its model than the default: back to the default
                lost.append(name)
            elif default is not None and not _measured_against(default, before[name]):
                # Tuned against an older default (edgec's defaults moved since): the record
                # never competed with today's. Such records had pinned old schedules:
                # MobileNetV2 3.3 ms against 3.0 untuned (shipped NHWC records, 2026-12-02),
                # 11.6 against 10.8 on a Zen 1 (the Xeon's x86_64 records, 2026-12-05).
                stale.append(name)
            else:
                searched[name] = key
        defaults = set(lost) | set(stale)
        for name in defaults:
            ir.update_func(ir.get_global_var(name), before[name])  # lower gives it the default
        tuned = [(name, func) for name, func in tuned if name not in defaults]
        scheduled = {name for name, _ in tuned} | defaults
        stats.update(functions=len(before), tuned=len(tuned), confirmed=confirmed,
                     rejected=len(lost), stale=len(stale), searched=searched,
                     without_record=sorted(set(before) - scheduled),
                     layers=[str(p) for p in layers],
                     from_cpu=_records_by_cpu(ir_before, list(zip(layers, opened, strict=True)),
                                              {n for n, _ in tuned}, tvm_target))
        return ir

    return schedule


_OPENED: dict[str, tuple[tuple[int, float], object]] = {}
_INDEXED: dict[str, tuple[tuple[int, float], dict]] = {}


def _cached(cache: dict, path: Path, read):
    """read(path), kept in `cache` per process while the database's records file is
    unchanged (new, or tuned since: read again)."""
    stat = (path / "database_tuning_record.json").stat()
    key, version = str(path.resolve()), (stat.st_size, stat.st_mtime)
    if key not in cache or cache[key][0] != version:
        cache[key] = (version, read(path))
    return cache[key][1]


def _open_for(path: Path, funcs: list):
    """The records of `funcs`' workloads in the database at `path` (pruned_database: what a
    compile needs, 0.3 s where opening the shipped x86_64-avx512-vnni logs whole took 10.4);
    the file's index is read once per process."""
    from edgec.tvm_compat import pruned_database

    index = _cached(_INDEXED, path, pruned_database.workload_index)
    return pruned_database.open_pruned(path, funcs, index)


def _open_cached(path: Path):
    """A whole database (for `tune --status`), opened once per process: parsing the shipped
    x86_64-avx512-vnni logs takes ~10 s."""
    from edgec.tvm_compat import metaschedule as ms

    return _cached(_OPENED, path, ms.open_database)


def _records_by_cpu(ir, layers: list[tuple[Path, object]], tuned: set[str],
                    tvm_target) -> dict[str, int]:
    """{CPU the records were measured on: functions compile took from them}: each function
    is credited to the first layer that schedules it, as the layered database applies them."""
    from edgec.tvm_compat import metaschedule as ms

    counts: dict[str, int] = {}
    left = set(tuned)
    for index, (path, database) in enumerate(layers):
        if not left:
            break
        if index == len(layers) - 1:  # what is left came from the last layer: no second pass
            mine = set(left)
        else:
            scheduled = ms.apply_database(ir, database, tvm_target)
            mine = {g.name_hint for g, f in scheduled.functions_items()
                    if g.name_hint in left and ms.is_scheduled(f)}
        if mine:
            label = layer_cpu(path)
            counts[label] = counts.get(label, 0) + len(mine)
            left -= mine
    return counts


def read_metadata(work_dir: Path) -> dict:
    """The database's metadata.json: {"tuning_seconds", "trials", "models": {name: {...}}}."""
    path = work_dir / "metadata.json"
    if not path.is_file():
        return {"tuning_seconds": 0.0, "trials": 0, "models": {}}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); fix or delete it") from err


def write_metadata(work_dir: Path, metadata: dict) -> None:
    path = work_dir / "metadata.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    partial.replace(path)  # atomic: a kill mid-write leaves the previous file


def claim_for(work_dir: Path, cpu: str) -> None:
    """Record in the database's metadata which CPU its records are measured on; refuse to
    mix in records from another (a --tuning-logs folder tuned on another machine)."""
    metadata = read_metadata(work_dir)
    if metadata.get("measured_on") not in (None, cpu):
        raise ConfigError(f"--tuning-logs {work_dir} holds records measured on "
                          f"{metadata['measured_on']}; this tune measures on {cpu}: give "
                          "another folder (records are kept per CPU)")
    if metadata.get("measured_on") != cpu:
        work_dir.mkdir(parents=True, exist_ok=True)
        write_metadata(work_dir, {**metadata, "measured_on": cpu})


def sources(target: Target, options: TuneOptions) -> list[tuple[str, object]]:
    """(label, database) of each layer compile applies, first wins: for --status."""

    shipped = shipped_layers(target)
    return [(layer_cpu(path) + (" (shipped)" if path in shipped else ""), _open_cached(path))
            for path in database_layers(target, options.logs)]

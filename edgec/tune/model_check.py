"""The in-model check of tuned records: a searched record is kept only where its function got
faster in the model it was tuned for.

Candidates are timed alone and cold (caches flushed before each run); in the model a layer's
input comes warm from the layer before, and its weights compete with its neighbours'. That
ranks some variants wrongly: MobileNetV1 (x86_64-avx512-vnni, Xeon, 2026-12-03) tuned for 12
minutes ran 1.245x slower than untuned, its 14x14 1x1 convs 1.38x slower per function in the
model while their records said faster. So after a local tune the model is built twice, with
edgec's defaults and with every record compile would apply, both are profiled per function
in interleaved rounds, and the workloads whose function did not get faster are written to the
tuned database's metadata.json ("in_model", a verdict per workload key); compile leaves those
functions to edgec's defaults (databases.database_schedule). The check runs again whenever
the database changed since it last checked the model.
"""

from __future__ import annotations

import datetime
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgec.targets import Target
from edgec.tune.databases import database_schedule, read_metadata, write_metadata

ROUNDS = 5  # interleaved rounds: VMs here drift up to 1.5x within minutes
RUNS = 10  # profiled (and timed) inferences per build and round


@dataclass
class FunctionTiming:
    name: str
    workload: str
    default_ms: float  # median over rounds
    tuned_ms: float
    ratio: float  # median of the per-round tuned / default

    @property
    def kept(self) -> bool:
        return self.ratio < 1.0


@dataclass
class ModelCheck:
    model: str
    rows: list[FunctionTiming] = field(default_factory=list)
    model_ms: dict[str, float] = field(default_factory=dict)  # defaults / all records / kept
    skipped: str = ""  # why no check ran

    @property
    def rejected(self) -> list[FunctionTiming]:
        return [row for row in self.rows if not row.kept]

    def summary(self) -> str:
        if self.skipped:
            return f"in-model check: {self.skipped}"
        lines = [f"in-model check of the searched records ({len(self.rows)} functions, "
                 f"{ROUNDS} interleaved rounds of {RUNS} profiled runs):",
                 f"  {'function':<44} {'default ms':>10} {'tuned ms':>9} {'ratio':>6}  verdict"]
        for row in sorted(self.rows, key=lambda r: -r.default_ms):
            lines.append(f"  {row.name[:44]:<44} {row.default_ms:>10.3f} {row.tuned_ms:>9.3f} "
                         f"{row.ratio:>6.2f}  {'kept' if row.kept else 'rejected: slower'}")
        ms = self.model_ms
        if ms:
            lines.append(
                f"whole model (interleaved rounds): defaults {ms['defaults']:.2f} ms, "
                f"every record {ms['all records']:.2f} ms "
                f"({ms['all records'] / ms['defaults']:.3f}x), kept records "
                f"{ms['kept records']:.2f} ms ({ms['kept records'] / ms['defaults']:.3f}x); "
                f"{len(self.rejected)} of {len(self.rows)} records rejected: compile runs "
                "those functions on edgec's defaults")
        return "\n".join(lines)


def due(work_dir: Path, name: str) -> bool:
    """Whether the database changed since the model was last checked against it."""
    checked = read_metadata(work_dir).get("model_checks", {}).get(name, {})
    return checked.get("records") != _records_version(work_dir)


def check_in_model(prepared, target: Target, work_dir: Path, logs: Path | None, name: str,
                   say: Callable[[str], None] = lambda _msg: None) -> ModelCheck:
    """Profile `prepared` built with edgec's defaults and with the records compile applies
    (`logs` as compile's --tuning-logs), and record in `work_dir` (the tuned database) which
    searched records lost in the model. The target must run on this machine."""
    from edgec import build, runtime

    runtime.use_all_cores()
    check = ModelCheck(name)
    stats: dict = {}
    schedule = database_schedule(target, logs, stats, rejected={})
    if schedule is None:
        check.skipped = "no tuning records to check"
        return check
    say("in-model check: building with edgec's defaults")
    builds = {"defaults": build.compile_to_executable(prepared, target)}
    say("in-model check: building with every tuning record")
    builds["all records"] = build.compile_to_executable(prepared, target, schedule)
    searched: dict[str, str] = stats["searched"]
    if not searched:
        check.skipped = "every record compile applies is edgec's default schedule"
        _record(work_dir, name, {}, set(), check)
        return check
    with tempfile.TemporaryDirectory(prefix="edgec-check-") as tmp:
        loaded = {label: _load(executable, prepared, target, Path(tmp) / f"{index}.so")
                  for index, (label, executable) in enumerate(builds.items())}
        inputs = _inputs(prepared)
        check.rows = _profile(loaded["defaults"], loaded["all records"], inputs, searched, say)
        rejected = {row.workload: row for row in check.rows if not row.kept}
        if rejected and len(rejected) < len(check.rows):
            say("in-model check: building with the records kept")
            kept = database_schedule(target, logs, {}, rejected={k: {} for k in rejected})
            loaded["kept records"] = _load(
                build.compile_to_executable(prepared, target, kept), prepared, target,
                Path(tmp) / "kept.so")
        else:
            loaded["kept records"] = loaded["all records" if not rejected else "defaults"]
        check.model_ms = _time_models(loaded, inputs, say)
    _record(work_dir, name, searched, set(rejected), check)
    return check


def _load(executable, prepared, target: Target, path: Path):
    from edgec import build, runtime

    build.export(executable, prepared, target, path)
    return runtime.load(path, check=False)


def _inputs(prepared) -> dict:
    from edgec import check

    return check.random_inputs([s.to_dict() for s in prepared.inputs], seed=0)


def _profile(defaults, tuned, inputs: dict, searched: dict[str, str],
             say: Callable[[str], None]) -> list[FunctionTiming]:
    """Per searched function, its per-round times in both builds; rounds alternate which build
    goes first, so neither always runs on a cache the other warmed."""
    times: dict[str, dict[str, list[float]]] = {n: {"d": [], "t": []} for n in searched}
    for index in range(ROUNDS):
        say(f"in-model check: profiling round {index + 1} of {ROUNDS}")
        order = [("d", defaults), ("t", tuned)]
        for label, model in order if index % 2 == 0 else reversed(order):
            profile = model.profile(inputs, runs=RUNS)
            for name in searched:
                times[name][label].append(profile.get(name, 0.0))
    rows = []
    for name, key in searched.items():
        d, t = times[name]["d"], times[name]["t"]
        ratios = [b / a for a, b in zip(d, t, strict=True) if a > 0]
        rows.append(FunctionTiming(name, key, statistics.median(d), statistics.median(t),
                                   statistics.median(ratios) if ratios else 1.0))
    return rows


def _time_models(loaded: dict, inputs: dict, say: Callable[[str], None]) -> dict[str, float]:
    """Whole-model median latency of each build, in interleaved rounds."""
    from edgec import measured_choice

    return measured_choice.interleaved_medians(
        {label: measured_choice.model_timer(model, inputs) for label, model in loaded.items()},
        say, "in-model check: timing the builds")


def _records_version(work_dir: Path) -> list:
    path = work_dir / "database_tuning_record.json"
    return [path.stat().st_size, path.stat().st_mtime] if path.is_file() else [0, 0]


def _record(work_dir: Path, name: str, searched: dict[str, str], rejected: set[str],
            check: ModelCheck) -> None:
    """Write the verdict on each of this model's searched workloads, kept or rejected (a
    workload shared with another model takes the newest), and when the model was checked."""
    metadata = read_metadata(work_dir)
    verdicts = metadata.setdefault("in_model", {})
    rows = {row.workload: row for row in check.rows}
    for function, key in searched.items():
        verdicts[key] = {"kept": key not in rejected, "model": name, "function": function,
                         "ratio": round(rows[key].ratio, 3)}
    metadata.setdefault("model_checks", {})[name] = {
        "records": _records_version(work_dir),
        "date": datetime.date.today().isoformat(),
        "rejected": len(rejected), "searched": len(searched),
        **({"model_ms": {k: round(v, 4) for k, v in check.model_ms.items()}}
           if check.model_ms else {}),
    }
    write_metadata(work_dir, metadata)

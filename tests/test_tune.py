"""Tuning: MetaSchedule records land in a resumable database that compile then applies.

Checks read MetaSchedule's own JSON files and compare outputs with ONNX Runtime.
"""

import base64
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from edgec import check, pipeline, reference, runtime, tune
from edgec.boards import emulator
from edgec.quant import QuantizeOptions

SMALL = {"image": (1, 3, 16, 16)}


def record_lines(logs: Path) -> list[dict]:
    """MetaSchedule's tuning records, one JSON document per line."""
    path = logs / "database_tuning_record.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_tune_then_compile_uses_the_records_and_still_matches_onnxruntime(
        dynamic_conv_model, tmp_path):
    logs = tmp_path / "logs"
    result = run_cli("tune", str(dynamic_conv_model), "--input-shape", "image:1,3,16,16",
                     "--trials", "4", "--tuning-logs", str(logs))
    assert result.returncode == 0, result.stderr
    assert len(record_lines(logs)) >= 4
    assert "trials in" in result.stdout
    compiled = pipeline.compile_model(pipeline.CompileOptions(
        model=str(dynamic_conv_model), output=tmp_path / "m.so", input_shapes=SMALL,
        tuning_logs=logs))
    assert compiled.tuning["tuned"] >= 1
    assert compiled.verify.ok
    model = runtime.load(tmp_path / "m.so")
    inputs = check.random_inputs(model.info.inputs, seed=4)
    report = check.compare(model.run(inputs),
                            reference.onnxruntime_outputs(str(dynamic_conv_model), inputs))
    assert report.ok, report.summary()


def edgec_schedules(records: list[dict]) -> dict[int, set[str]]:
    """Per workload, the distinct traces without sampled decisions: schedules written out by
    edgec's rules (its default and its kernel-space variants). MetaSchedule's own
    candidates come from its design space's sampling instructions, so they carry decisions."""
    found: dict[int, set[str]] = {}
    for workload, (trace, *_rest) in records:
        instructions, decisions = trace
        if not decisions:
            found.setdefault(workload, set()).add(json.dumps(instructions))
    return found


@pytest.mark.slow
def test_conv_tasks_tune_in_edgecs_kernel_space_first_and_compile_applies_the_fastest(
        tmp_path):
    """The heavy conv's variants (pixels per tile, channel vectors, loop orders) are measured
    as records beside the default, and the compiled model still matches ONNX Runtime."""
    logs = tmp_path / "logs"
    model = light_then_heavy_model(tmp_path / "m.onnx")
    result = run_cli("tune", str(model), "--trials", "6", "--tuning-logs", str(logs))
    assert result.returncode == 0, result.stderr
    records = record_lines(logs)
    by_workload = edgec_schedules(records)
    heaviest = max(records, key=mean_seconds)[0]
    # Its default (the seed) and the 5 nearest variants: all edgec schedules, all distinct.
    assert len(by_workload.get(heaviest, ())) == 6, {w: len(t) for w, t in by_workload.items()}
    compiled = pipeline.compile_model(pipeline.CompileOptions(
        model=str(model), output=tmp_path / "m.so", tuning_logs=logs))
    assert compiled.verify.ok
    library = runtime.load(tmp_path / "m.so")
    inputs = check.random_inputs(library.info.inputs, seed=5)
    report = check.compare(library.run(inputs), reference.onnxruntime_outputs(str(model), inputs))
    assert report.ok, report.summary()


def light_then_heavy_model(path: Path) -> Path:
    """A tiny 1x1 conv, then a 3x3 conv with 16x the MACs of everything before it: the
    heaviest task is not the first one a model's graph order gives."""
    from onnx import TensorProto, helper, numpy_helper

    from conftest import save_model

    rng = np.random.default_rng(3)
    weights = [rng.standard_normal(s).astype(np.float32) * 0.2
               for s in ((8, 3, 1, 1), (64, 8, 3, 3), (64, 64, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"]),
             helper.make_node("Conv", ["c0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    return save_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 48, 48])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 48, 48])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)], path)


def mean_seconds(record: dict) -> float:
    run_secs = record[1][1]
    return sum(run_secs) / len(run_secs)


@pytest.mark.slow
def test_a_record_slower_in_the_model_is_rejected_and_compile_builds_the_default(tmp_path):
    """The cold per-task runner can rank a schedule faster than it runs in the model
    (tuned MobileNetV1 ran 1.245x slower than untuned). A record that claims 1 us for the
    heavy conv's plain loop nest (several times slower than edgec's kernel) stands for such a
    mis-ranking: compile applies it while no check ran; the in-model check of the next tune
    rejects it in metadata.json, and compile then builds that conv with the default and
    still matches ONNX Runtime."""
    logs = tmp_path / "logs"
    model = light_then_heavy_model(tmp_path / "m.onnx")
    seeded = run_cli("tune", str(model), "--trials", "1", "--tuning-logs", str(logs))
    assert seeded.returncode == 0, seeded.stderr
    heavy = seeded.stdout.splitlines()[1].split()[0]  # the table lists the slowest task first
    commit_plain_loops_record(logs)
    unchecked = run_cli("tune", str(model), "--trials", "1", "--tuning-logs", str(logs),
                        "--no-model-check")
    assert unchecked.returncode == 0, unchecked.stderr
    options = pipeline.CompileOptions(model=str(model), output=tmp_path / "m.so",
                                      tuning_logs=logs)
    applied = pipeline.compile_model(options).tuning
    assert applied["tuned"] - applied["confirmed"] == 1 and applied["rejected"] == 0, applied

    checked = run_cli("tune", str(model), "--trials", "1", "--tuning-logs", str(logs))
    assert checked.returncode == 0, checked.stderr
    assert "1 of 1 records rejected" in checked.stdout, checked.stdout
    verdicts = json.loads((logs / "metadata.json").read_text())["in_model"]
    assert [(v["function"], v["kept"]) for v in verdicts.values()] == [(heavy, False)], verdicts
    assert list(verdicts.values())[0]["ratio"] > 1.5, verdicts
    compiled = pipeline.compile_model(options)
    assert compiled.tuning["rejected"] == 1 and compiled.tuning["tuned"] == compiled.tuning[
        "confirmed"], compiled.tuning
    assert "1 on defaults because their records ran slower in the model" in compiled.summary()
    library = runtime.load(tmp_path / "m.so")
    inputs = check.random_inputs(library.info.inputs, seed=6)
    report = check.compare(library.run(inputs), reference.onnxruntime_outputs(str(model), inputs))
    assert report.ok, report.summary()
    status = run_cli("tune", str(model), "--tuning-logs", str(logs), "--status")
    assert re.search(rf"{heavy}.*record ran [\d.]+x slower in m", status.stdout), status.stdout


@pytest.mark.slow
def test_shipped_records_measured_on_this_cpu_come_before_the_targets_own(tmp_path,
                                                                          monkeypatch):
    """Machines of one kind differ (a Zen 5 prefers shorter tiles than a Xeon), so edgec
    ships databases per CPU beside a target's own: compile applies the one measured on this
    machine's CPU first. Here the target's own database holds a record that claims 1 us for
    the heavy conv's plain loops (from "Other CPU"); the one for this CPU only confirms the
    defaults. Compile takes this CPU's, and the other's record only without it."""
    import shutil

    from edgec.cpu import host_label, label_slug
    from edgec.tune import databases

    model = light_then_heavy_model(tmp_path / "m.onnx")
    measured = tmp_path / "measured"
    seeded = run_cli("tune", str(model), "--trials", "1", "--tuning-logs", str(measured),
                     "--no-model-check")
    assert seeded.returncode == 0, seeded.stderr
    shipped = tmp_path / "shipped"
    target_own, this_cpu = shipped / "x86_64", shipped / "x86_64" / label_slug(host_label())
    for folder in (target_own, this_cpu):
        shutil.copytree(measured, folder, ignore=shutil.ignore_patterns("logs"),
                        dirs_exist_ok=True)
    commit_plain_loops_record(target_own)
    (target_own / "metadata.json").write_text(json.dumps({"measured_on": "Other CPU"}))
    monkeypatch.setattr(databases, "logs_root", lambda: shipped)
    monkeypatch.setenv("EDGEC_TUNING_LOGS", str(tmp_path / "no-user-logs"))
    options = pipeline.CompileOptions(model=str(model), output=tmp_path / "m.so", check=False)
    applied = pipeline.compile_model(options).tuning
    assert applied["tuned"] == applied["confirmed"] == applied["functions"], applied
    assert applied["from_cpu"] == {host_label(): applied["functions"]}, applied
    shutil.rmtree(this_cpu)
    applied = pipeline.compile_model(options).tuning
    assert applied["tuned"] - applied["confirmed"] == 1, applied
    assert applied["from_cpu"] == {"Other CPU": applied["functions"]}, applied



def test_compile_reads_only_its_models_records_and_they_are_what_jsondatabase_holds(
        tmp_path, monkeypatch):
    """Opening the shipped x86_64-avx512-vnni logs with MetaSchedule's JSONDatabase
    deserializes all of their 25 MB of workloads (10.4 s of a 21.6 s SqueezeNet compile);
    compile opens only its model's (edgec.tvm_compat.pruned_database). For every function
    of MobileNetV2 (whose tuning is among the logs' thousands of records), the pruned
    database holds the workload exactly when JSONDatabase does, with its fastest records
    (the best that a compile applies, and up to 3 runners-up), best first; a function the
    logs never saw (a ShuffleNetV2 channel shuffle) has none."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    from edgec import build, targets
    from edgec.tune import databases
    from edgec.tvm_compat import metaschedule as ms
    from edgec.tvm_compat import pruned_database

    target = targets.load("x86_64-avx512-vnni")
    funcs = []
    for model in ("zoo:mobilenet_v2", "zoo:shufflenet_v2"):
        ir = build.lower(pipeline.prepare(model, target, None, "default"), target,
                         default_schedules=False)
        funcs += [f for _, f in ir.functions_items() if type(f).__name__ == "PrimFunc"]
    logs = databases.logs_root() / target.logs_name
    pruned = pruned_database.open_pruned(logs, funcs)
    whole = ms.open_database(logs)
    found = 0
    for func in funcs:
        mod = _normalize_mod(func)
        # has_workload first: committing a workload it lacks would append to the file.
        expected = [(str(r.trace), list(map(float, r.run_secs)))
                    for r in whole.get_top_k(whole.commit_workload(mod), 1 << 20)
                    ] if whole.has_workload(mod) else []
        got = [(str(r.trace), list(map(float, r.run_secs)))
               for r in pruned.get_top_k(pruned.commit_workload(mod), 1 << 20)]
        found += bool(expected)
        expected = expected[:4]
        # The same records, best first (records of equal times may come in either order).
        assert sorted(got) == sorted(expected), func
        assert [t for _, t in got] == [t for _, t in expected], func
    assert 30 <= found < len(funcs), (found, len(funcs))
    assert len(pruned.get_all_tuning_records()) < len(whole.get_all_tuning_records()) / 10

    def whole_database(work_dir):
        raise AssertionError(f"compile opened the whole database in {work_dir}")

    monkeypatch.setattr(ms, "open_database", whole_database)
    monkeypatch.setenv("EDGEC_TUNING_LOGS", str(tmp_path / "no-user-logs"))
    compiled = pipeline.compile_model(pipeline.CompileOptions(
        model=str(light_then_heavy_model(tmp_path / "m.onnx")), output=tmp_path / "m.so",
        target="x86_64-avx512-vnni", check=False))
    assert compiled.tuning["layers"] == [str(logs)], compiled.tuning

def commit_plain_loops_record(logs: Path) -> None:
    """Commit, for the slowest workload in the database, a record of its unscheduled loop
    nest (only a no-op annotation: MetaSchedule skips empty traces) that claims 1 us."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(work_dir=str(logs), allow_missing=True)
    slowest = max(database.get_all_tuning_records(),
                  key=lambda r: sum(float(s) for s in r.run_secs))
    plain = s_tir.Schedule(slowest.workload.mod)
    plain.annotate(plain.get_sblock("root"), "plain_loops", 1)
    database.commit_tuning_record(ms.database.TuningRecord(
        plain.trace, slowest.workload, [1e-6], slowest.target, slowest.args_info))


@pytest.mark.slow
def test_records_tuned_against_an_older_default_give_way_to_todays_default(tmp_path,
                                                                          monkeypatch):
    """A searched record beat the default of the edgec that tuned it; once edgec's default
    changed, the two were never measured against each other (the shipped NHWC records of
    2026-12-02 ran MobileNetV2 at 3.3 ms against 3.0 untuned). A record
    that claims 1 us for the heavy conv's plain loop nest is applied while the database
    holds a measurement of today's default; with a new default (the same code, another
    trace, as a new edgec would make) compile builds the default, says why, and still
    matches ONNX Runtime."""
    from edgec.codegen import schedules

    logs = tmp_path / "logs"
    model = light_then_heavy_model(tmp_path / "m.onnx")
    seeded = run_cli("tune", str(model), "--trials", "1", "--tuning-logs", str(logs),
                     "--no-model-check")
    assert seeded.returncode == 0, seeded.stderr
    commit_plain_loops_record(logs)
    options = pipeline.CompileOptions(model=str(model), output=tmp_path / "m.so",
                                      tuning_logs=logs)
    applied = pipeline.compile_model(options).tuning
    assert applied["tuned"] - applied["confirmed"] == 1 and applied["stale"] == 0, applied
    real = schedules.schedule_function

    def changed(func, target):
        sch = real(func, target)
        if sch is not None:
            schedules.root_blocks(sch)
        return sch

    monkeypatch.setattr(schedules, "schedule_function", changed)
    compiled = pipeline.compile_model(options)
    assert compiled.tuning["stale"] == 1 and compiled.tuning["tuned"] == compiled.tuning[
        "confirmed"], compiled.tuning
    assert "1 on defaults because their records were tuned against an older default" in (
        compiled.summary())
    assert compiled.verify is not None and compiled.verify.ok, compiled.verify.summary()


@pytest.mark.slow
def test_a_spent_budget_stops_the_tune_cleanly_after_tuning_the_heaviest_task_first(tmp_path):
    """--budget stops after the batch that crosses it: exit 0, that batch in the database.
    That first batch went to the task whose measured default was slowest (its share of the
    latency), not to the first task in graph order."""
    logs = tmp_path / "logs"
    model = light_then_heavy_model(tmp_path / "m.onnx")
    result = run_cli("tune", str(model), "--trials", "8", "--budget", "1s",
                     "--tuning-logs", str(logs))
    assert result.returncode == 0, result.stderr
    records = record_lines(logs)
    seeds = len({r[0] for r in records})  # one measured default per task comes first
    assert seeds < len(records) < seeds + 8 * 2, len(records)
    assert json.loads((logs / "metadata.json").read_text())["trials"] >= 1
    slowest = max(records[:seeds], key=mean_seconds)[0]
    assert records[seeds][0] == slowest, (records[seeds][0], [
        (r[0], mean_seconds(r)) for r in records[:seeds]])


@pytest.mark.slow
def test_a_changed_default_schedule_is_measured_into_finished_logs(dynamic_conv_model,
                                                                   tmp_path, monkeypatch):
    """Logs made with an older edgec must not keep winning over a new default schedule
    that was never measured: a rerun measures it even when every task has its trials."""
    from edgec.codegen import schedules

    options = tune.TuneOptions(trials_per_task=1, logs=tmp_path / "logs")  # defaults only

    def run():
        return pipeline.tune_model(str(dynamic_conv_model), "x86_64", options,
                                   input_shapes=SMALL)

    first = run()
    assert first.seeded == len(first.rows) and first.trials_run == 0
    lines = len(record_lines(options.logs))
    assert run().seeded == 0 and len(record_lines(options.logs)) == lines
    real = schedules.schedule_function

    def changed(func, target):  # the same code, another trace: as a new edgec would make
        sch = real(func, target)
        if sch is not None:
            schedules.root_blocks(sch)
        return sch

    monkeypatch.setattr(schedules, "schedule_function", changed)
    rerun = run()
    assert rerun.trials_run == 0 and rerun.seeded == first.seeded
    assert len(record_lines(options.logs)) == lines + first.seeded


@pytest.mark.slow
def test_int8_tasks_tune_into_the_database_and_compile_applies_them(dynamic_conv_model,
                                                                    tmp_path):
    logs = tmp_path / "logs"
    # Packed: in NHWC on AVX2 both convs compute in float (the 3x3 one as Winograd, the
    # stem's 27 terms exactly), so no integer conv would be left to tune; packed, the stem
    # runs on the dot product.
    quantized = ["--input-shape", "image:1,3,16,16", "--quantize", "int8", "--calib", "random",
                 "--layout", "NCHWc"]
    result = run_cli("tune", str(dynamic_conv_model), *quantized, "--trials", "2",
                     "--tuning-logs", str(logs))
    assert result.returncode == 0, result.stderr
    assert len(record_lines(logs)) >= 2
    workloads = [base64.b64decode(json.loads(line)[1]) for line in
                 (logs / "database_workload.json").read_text().splitlines() if line.strip()]
    assert any(b'"int8"' in tir for tir in workloads)  # the integer conv's TIR
    assert json.loads((logs / "metadata.json").read_text())["models"]["dynamic-int8"]["trials"]
    compiled = pipeline.compile_model(pipeline.CompileOptions(
        model=str(dynamic_conv_model), output=tmp_path / "q.so", input_shapes=SMALL,
        layout="NCHWc", quantization=QuantizeOptions("int8", calib="random"),
        tuning_logs=logs))
    assert compiled.tuning["tuned"] >= 1
    assert compiled.verify.ok


@pytest.mark.slow
def test_a_killed_tune_keeps_its_records_and_the_rerun_continues(dynamic_conv_model, tmp_path):
    logs = tmp_path / "logs"
    args = [sys.executable, "-m", "edgec", "tune", str(dynamic_conv_model), "--input-shape",
            "image:1,3,16,16", "--trials", "8", "--tuning-logs", str(logs)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not record_lines(logs) and proc.poll() is None:
        time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = record_lines(logs)  # every line parses: at most the batch in flight was lost
    assert kept, "no records were written before the kill"
    rerun = run_cli(*args[3:])
    assert rerun.returncode == 0, rerun.stderr
    after = record_lines(logs)
    assert after[: len(kept)] == kept
    # The rerun tops tasks up to 8 trials (or all their kernel-space variants, for conv
    # tasks that have fewer) instead of starting each from zero.
    status = pipeline.tune_model(str(dynamic_conv_model), "x86_64", tune.TuneOptions(
        trials_per_task=8, logs=logs, dry_run=True), input_shapes=SMALL)
    assert all(row.left == 0 for row in status.rows if row.flops > 0), status.summary()
    # A third run leaves the complete tasks alone. (Zero-FLOP data-movement tasks whose search
    # space has fewer than 8 distinct candidates are retried each time, harmlessly.)
    complete = {row.name: row.trials for row in status.rows if row.flops > 0}
    again = run_cli(*args[3:])
    assert again.returncode == 0, again.stderr
    status = pipeline.tune_model(str(dynamic_conv_model), "x86_64", tune.TuneOptions(
        trials_per_task=8, logs=logs, dry_run=True), input_shapes=SMALL)
    assert {row.name: row.trials for row in status.rows if row.flops > 0} == complete


def tree_digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def cpuinfo_model_name() -> str:
    return next(line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))


@pytest.mark.slow
def test_tuning_goes_to_the_user_database_of_this_cpu_and_compile_says_what_it_applied(
        dynamic_conv_model, tmp_path):
    """Without --tuning-logs, records land in the user's database for this machine's CPU
    (EDGEC_TUNING_LOGS here), the shipped logs stay byte for byte, and compile applies the
    user's records. With one trial per task only edgec's defaults are measured, and compile
    says so instead of counting them as tuned. Records measured on another CPU are applied
    with a note, and `tune --status` says which CPU each applied record came from."""
    shipped = tune.logs_root()
    before = tree_digest(shipped)
    user = tmp_path / "user"
    env = {"EDGEC_TUNING_LOGS": str(user)}
    shape = ["--input-shape", "image:1,3,16,16"]
    result = run_cli("tune", str(dynamic_conv_model), *shape, "--trials", "1", env=env)
    assert result.returncode == 0, result.stderr
    (mine,) = [p.parent for p in (user / "x86_64").glob("*/database_tuning_record.json")]
    metadata = json.loads((mine / "metadata.json").read_text())
    assert cpuinfo_model_name() in metadata["measured_on"]  # keyed by the CPU measured on
    assert record_lines(mine) and tree_digest(shipped) == before
    compiled = run_cli("compile", str(dynamic_conv_model), *shape,
                       "-o", str(tmp_path / "m.so"), env=env)
    assert compiled.returncode == 0, compiled.stderr
    assert len(record_lines(mine)) >= 2
    assert "0 functions from tuned records" in compiled.stdout, compiled.stdout
    assert "untuned (edgec's defaults)" in compiled.stdout
    assert "another CPU" not in compiled.stdout
    # --untuned ignores the same database (what the benchmarks' untuned columns build).
    untuned = run_cli("compile", str(dynamic_conv_model), *shape,
                      "-o", str(tmp_path / "u.so"), "--untuned", "--no-check", env=env)
    assert untuned.returncode == 0, untuned.stderr
    assert "no tuning logs applied (--untuned)" in untuned.stdout, untuned.stdout
    assert "functions from tuned records" not in untuned.stdout
    # The same records as if measured on another machine: applied, and said so.
    other = mine.parent / "other-cpu"
    mine.rename(other)
    (other / "metadata.json").write_text(json.dumps({**metadata, "measured_on": "Other CPU"}))
    foreign = run_cli("compile", str(dynamic_conv_model), *shape,
                      "-o", str(tmp_path / "f.so"), "--no-check", env=env)
    assert foreign.returncode == 0, foreign.stderr
    assert re.search(r"records measured on another CPU.*\d+ functions from Other CPU",
                     foreign.stdout), foreign.stdout
    status = run_cli("tune", str(dynamic_conv_model), *shape, "--status", env=env)
    assert status.returncode == 0, status.stderr
    assert "measured on" in status.stdout and "Other CPU" in status.stdout, status.stdout


@pytest.mark.slow
def test_ctrl_c_stops_after_the_batch_in_flight_and_keeps_the_records(dynamic_conv_model,
                                                                      tmp_path):
    logs = tmp_path / "logs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgec", "tune", str(dynamic_conv_model), "--input-shape",
         "image:1,3,16,16", "--trials", "256", "--tuning-logs", str(logs)], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ctrl-C once MetaSchedule's search runs (after edgec's kernel space): the harder stop.
    log = logs / "logs" / "tvm.s_tir.meta_schedule.logging.task_scheduler.log"
    deadline = time.time() + 600
    while time.time() < deadline and not log.exists() and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr
    assert "stopped:" in stderr and "run the same command to resume" in stderr
    assert "error:" not in stderr and "Traceback" not in stderr, stderr
    assert "trials in" in stdout  # the report of what was done
    assert record_lines(logs)  # every line parses: the kept records are whole
    # MetaSchedule's per-task lines and tables go to its log, not over the progress bar.
    assert "[INFO]" not in stdout + stderr
    assert Path(stdout.split("MetaSchedule's log: ")[1].split()[0]) == log
    assert "TaskScheduler picks" in log.read_text()


@pytest.mark.slow
def test_remote_tuning_on_the_emulated_board_is_applied_by_a_later_compile(
        dynamic_conv_model, tmp_path, emulated_board):
    logs, board = tmp_path / "rpi4-logs", emulated_board
    report = pipeline.tune_model(
        str(dynamic_conv_model), "rpi4",
        tune.TuneOptions(trials_per_task=2, rpc=(board.host, board.port), logs=logs),
        input_shapes=SMALL)
    assert report.trials_run >= 2
    assert any(r.best_seconds for r in report.rows)
    out = tmp_path / "m-rpi4.so"
    compiled = pipeline.compile_model(pipeline.CompileOptions(
        model=str(dynamic_conv_model), output=out, target="rpi4", input_shapes=SMALL,
        tuning_logs=logs))
    assert compiled.tuning["tuned"] >= 1
    on_board = runtime.load_remote(board.connect(session_timeout=300), out)
    inputs = check.random_inputs(on_board.info.inputs, seed=8)
    got = on_board.run(inputs)
    del on_board
    expected = reference.onnxruntime_outputs(str(dynamic_conv_model), inputs)
    np.testing.assert_allclose(got["out"], expected["out"], atol=1e-4, rtol=1e-4)
    assert record_lines(logs)


def test_tuning_a_board_target_with_no_board_and_no_core_to_simulate_is_refused(tmp_path):
    """rpi4.toml without its [board] table: neither a board to measure on nor a core for the
    simulated board."""
    text = (REPO / "edgec" / "shipped" / "targets" / "rpi4.toml").read_text()
    target = tmp_path / "bare-a72.toml"
    target.write_text(text.split("[board]")[0])
    result = run_cli("tune", "zoo:squeezenet1_1", "--target", str(target),
                     "--tuning-logs", str(tmp_path / "logs"))
    assert result.returncode == 1 and "--rpc HOST:PORT" in result.stderr, result.stderr
    assert not (tmp_path / "logs").exists()


# Cortex-A76 (rpi5.toml's [board] core): two 128-bit FMA pipes, 16 FP32 FLOPs a cycle.
A76_PEAK_FLOPS = 16 * 2.4e9


@pytest.mark.slow
def test_tuning_for_an_absent_board_prices_candidates_on_the_simulated_board(tmp_path,
                                                                             emulated_board):
    """No board for rpi5: candidates are cross-compiled and priced by the instruction-level
    estimate. The heavy conv's figure must respect the A76's peak (a physical lower bound
    from the layer's fewest multiplies) and be a vectorised kernel's; the records are
    labelled as estimated; compile applies them and the library still computes what ONNX
    Runtime does, run on the emulated board."""
    logs = tmp_path / "logs"
    model = light_then_heavy_model(tmp_path / "m.onnx")
    result = run_cli("tune", str(model), "--target", "rpi5", "--trials", "4",
                     "--tuning-logs", str(logs), timeout=1200)
    assert result.returncode == 0, result.stderr
    assert "measured on rpi5 board (cortex-a76 at 2.4 GHz), estimated" in result.stderr
    measured_on = json.loads((logs / "metadata.json").read_text())["measured_on"]
    assert "cortex-a76" in measured_on and "estimated" in measured_on
    records = record_lines(logs)
    # The fewest multiplies any kernel of the heavy 3x3 conv does: Winograd F(4x4, 3x3),
    # 36 per 4x4 tile and channel pair (a direct conv does 4x as many).
    fewest_flops = 2 * 64 * 64 * 36 * (48 // 4) ** 2
    fastest_heavy = min(mean_seconds(r) for r in records
                        if r[0] == max(records, key=mean_seconds)[0])
    bound = fewest_flops / A76_PEAK_FLOPS
    # A scalar kernel would be >= 8x the direct conv's bound, 32x this one.
    assert bound <= fastest_heavy <= 8 * bound, (fastest_heavy, bound)
    assert len(edgec_schedules(records)[max(records, key=mean_seconds)[0]]) == 4

    out = tmp_path / "m-rpi5.so"
    compiled = pipeline.compile_model(pipeline.CompileOptions(
        model=str(model), output=out, target="rpi5", tuning_logs=logs))
    assert compiled.tuning["tuned"] >= 1
    assert any("estimated" in cpu for cpu in compiled.tuning["from_cpu"])
    on_board = runtime.load_remote(emulated_board.connect(session_timeout=300), out)
    inputs = check.random_inputs(on_board.info.inputs, seed=9)
    got = on_board.run(inputs)
    del on_board
    expected = reference.onnxruntime_outputs(str(model), inputs)
    np.testing.assert_allclose(got["y"], expected["y"], atol=1e-3, rtol=1e-3)


def candidate_sessions(server_log: str) -> list[tuple[float, float]]:
    """(start, end) seconds of each session of a stock TVM RPC server's log that loaded a
    MetaSchedule candidate: 'connected from' ... 'load_module .../candidate.so' ...
    'finish serving'."""
    from datetime import datetime

    sessions, start, loaded = [], None, False
    for line in server_log.splitlines():
        stamp = line[:23]
        if "connected from" in line:
            start, loaded = datetime.fromisoformat(stamp).timestamp(), False
        elif "candidate.so" in line:
            loaded = True
        elif "finish serving" in line and start is not None and loaded:
            sessions.append((start, datetime.fromisoformat(stamp).timestamp()))
    return sessions


@pytest.mark.slow
def test_tuning_through_a_tracker_measures_on_every_board_under_its_key(tmp_path):
    """Two emulated boards registered under one key at a stock TVM tracker: a tune's
    candidates are timed on both at once (each board's own server log shows candidates
    loaded, in sessions that overlap), every record comes from one of them, and the tuned
    library, run through the tracker, matches ONNX Runtime."""
    from conftest import stock_tvm_server

    logs, key = tmp_path / "logs", "pool"
    model = light_then_heavy_model(tmp_path / "m.onnx")
    with stock_tvm_server("rpc_tracker", tmp_path / "tracker.log") as (_, port):
        tracker = ("127.0.0.1", port)
        with emulator.EmulatedBoard(tracker=tracker, key=key) as first, \
                emulator.EmulatedBoard(tracker=tracker, key=key) as second:
            assert first.port != second.port
            result = run_cli("tune", str(model), "--target", "rpi4", "--trials", "6",
                             "--tracker", f"127.0.0.1:{port}", "--key", key,
                             "--tuning-logs", str(logs), timeout=1800)
            assert result.returncode == 0, result.stderr
            logs_text = [board.log_path.read_text() for board in (first, second)]
            loads = [text.count("candidate.so") for text in logs_text]
            out = tmp_path / "m-rpi4.so"
            compiled = pipeline.compile_model(pipeline.CompileOptions(
                model=str(model), output=out, target="rpi4", tuning_logs=logs))
            on_board = runtime.load_remote(first.connect(session_timeout=300), out)
            inputs = check.random_inputs(on_board.info.inputs, seed=10)
            got = on_board.run(inputs)
    assert all(n >= 1 for n in loads), loads
    # In parallel, not in turns: a candidate session on one board overlaps one on the other.
    first_sessions, second_sessions = (candidate_sessions(text) for text in logs_text)
    assert any(a0 < b1 and b0 < a1 for a0, a1 in first_sessions for b0, b1 in second_sessions)
    assert sum(loads) >= len(record_lines(logs)), (loads, len(record_lines(logs)))
    assert compiled.tuning["tuned"] >= 1
    expected = reference.onnxruntime_outputs(str(model), inputs)
    np.testing.assert_allclose(got["y"], expected["y"], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("text,seconds", [("20m", 1200), ("90s", 90), ("1.5h", 5400), ("30", 30),
                                          ("none", None)])
def test_budget_durations_parse(text, seconds):
    assert tune.parse_budget(text) == seconds


def test_a_bad_budget_is_refused():
    from edgec.errors import ConfigError

    with pytest.raises(ConfigError, match="20m"):
        tune.parse_budget("soon")

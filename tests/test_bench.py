"""bench/compare.py end to end: one small model through every runtime, JSON and chart written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

COLUMNS = ("edgec_untuned", "edgec_tuned", "edgec_int8", "ort_fp32", "ort_int8",
           "openvino_fp32", "openvino_int8", "litert_fp32", "litert_int8", "ncnn_fp32",
           "ncnn_int8")
MUST_RUN = ("edgec_untuned", "edgec_tuned", "ort_fp32", "openvino_fp32")
# LiteRT and ncnn run models that bench/arm_peers.py converts in its tools venv (onnx2tf +
# TensorFlow, pnnx): --quick does not install it, so without it they are n/a, with why.
CONVERTED = ("litert_fp32", "litert_int8", "ncnn_fp32", "ncnn_int8")


def _tools_ready() -> bool:
    sys.path.insert(0, str(REPO / "bench"))
    import arm_peers

    return arm_peers.tools_ready()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("compare")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "compare.py"), "--quick", "--models",
         "squeezenet1_1", "--runs", "5", "--json", "out.json", "--plot", "out.png"],
        cwd=out, capture_output=True, text=True, timeout=900)  # 5.6 min alone here
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "out.json").read_text()), out / "out.png"


@pytest.mark.slow
def test_compare_reports_every_runtime_column_as_a_number_or_explicit_na(quick_run):
    result, _ = quick_run
    row = result["models"]["squeezenet1_1"]
    assert set(row["latency_ms"]) == set(COLUMNS)
    for column, ms in row["latency_ms"].items():
        if ms is None:
            assert row["notes"][column], f"{column} is n/a without a reason"
            assert row["peak_fraction"][column] is None
        else:
            assert ms > 0 and row["peak_fraction"][column] > 0
    for column in MUST_RUN:  # installed with .[bench]: n/a here would hide a broken runtime
        assert row["latency_ms"][column] is not None, row["notes"].get(column)
    for column in CONVERTED:  # SqueezeNet converts to both: only a missing venv excuses n/a
        if _tools_ready():
            assert row["latency_ms"][column] is not None, row["notes"].get(column)
        elif row["latency_ms"][column] is None:
            assert "--quick does not install" in row["notes"][column]
    assert row["macs"] == pytest.approx(349.15e6, rel=1e-3)  # SqueezeNet 1.1: 0.35 GMACs
    assert result["peak_gflops"] > 1


@pytest.mark.slow
def test_compare_checks_edgec_outputs_against_onnx_runtime(quick_run):
    result, _ = quick_run
    row = result["models"]["squeezenet1_1"]
    for column in ("edgec_untuned", "edgec_tuned"):
        check = row["details"][column]["check"]
        assert check["ok"] and check["min_cosine"] > 0.9999, check
        assert row["cosine_vs_ort_fp32"][column] > 0.9999
    if row["latency_ms"]["edgec_int8"] is not None:  # checked against ORT on its QDQ model
        assert row["details"]["edgec_int8"]["check"]["ok"]
    for column in ("edgec_int8", "ort_int8", "openvino_int8", "litert_int8", "ncnn_int8"):
        if row["latency_ms"][column] is not None:  # quantized, same network
            assert row["cosine_vs_ort_fp32"][column] > 0.9
    for column in ("litert_fp32", "ncnn_fp32"):  # converted from the same ONNX, same weights
        if row["latency_ms"][column] is not None:
            assert row["cosine_vs_ort_fp32"][column] > 0.999


@pytest.mark.slow
def test_compare_names_the_fastest_other_runtime_and_edgecs_ratio_to_it(quick_run):
    result, _ = quick_run
    row = result["models"]["squeezenet1_1"]
    for precision, edgec in (("fp32", "edgec_tuned"), ("int8", "edgec_int8")):
        others = {k: ms for k, ms in row["latency_ms"].items()
                  if k.endswith(precision) and not k.startswith("edgec") and ms is not None}
        fastest = row["fastest_other"][precision]
        assert fastest["runtime"] == min(others, key=others.get)
        if row["latency_ms"][edgec] is not None:  # one round: the ratio of the two medians
            assert fastest["ratio"] == pytest.approx(row["latency_ms"][edgec] / fastest["ms"])


@pytest.mark.slow
def test_compare_times_edgec_against_the_fastest_other_runtime_in_one_process(quick_run):
    """The head-to-head: edgec and the fastest other runtime loaded in one process, taking
    turns (--quick: 2 rounds). Its ratio is not held against the process rounds' one: under
    the suite's second worker a single process round had edgec at 1.71x where the shared
    process saw 0.49x (CI, stop 54); test_head_to_head_* checks what the ratio means."""
    result, _ = quick_run
    pair = result["models"]["squeezenet1_1"]["fastest_other"]["fp32"]["one_process"]
    assert pair["ratio"] is not None, pair.get("note")
    assert len(pair["rounds"]) == 2 and all(r > 0 for r in pair["rounds"])
    assert pair["ratio"] == pytest.approx(sum(pair["rounds"]) / 2)  # median of two


class SleepingRuntime:
    """A contender whose inference is a sleep: its time is set, not measured against the
    load of the machine, so head_to_head's ratio has a known answer (picklable for the
    child process head_to_head runs in)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def load(self) -> None:
        pass

    def median_ms(self, inputs: dict, runs: int, warmup: int) -> float:
        import time

        import runtimes

        return runtimes.median_ms(lambda: time.sleep(self.seconds), runs, warmup)


def test_head_to_head_gives_first_over_second_in_every_round_whichever_ran_first():
    """Rounds alternate which contender runs first; each round's ratio is still the first
    contender's time over the second's (a swapped round would read 0.25 here, not 4)."""
    sys.path.insert(0, str(REPO / "bench"))
    import runtimes

    slow, fast = SleepingRuntime(0.016), SleepingRuntime(0.004)
    pair = runtimes.head_to_head(slow, fast, {}, runs=3, warmup=1, rounds=3)
    assert len(pair["rounds"]) == 3
    assert all(2 < r < 8 for r in pair["rounds"]), pair  # 16 ms over 4 ms
    reverse = runtimes.head_to_head(fast, slow, {}, runs=3, warmup=1, rounds=2)
    assert all(1 / 8 < r < 1 / 2 for r in reverse["rounds"]), reverse


@pytest.mark.slow
def test_compare_writes_a_real_png_chart(quick_run):
    _, png = quick_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_markdown_shows_the_fastest_other_runtime_per_precision_and_edgecs_ratio():
    sys.path.insert(0, str(REPO / "bench"))
    import compare

    def timed(*per_round):
        return {"ms": sorted(per_round)[len(per_round) // 2], "info": {"ms_per_round": per_round}}

    measured = {key: {"ms": None, "note": "not here"} for key in COLUMNS}
    measured.update(edgec_tuned=timed(4.0, 10.0, 6.0), ort_fp32=timed(6.0, 9.0, 7.0),
                    ncnn_fp32=timed(2.0, 8.0, 5.0), litert_int8=timed(3.0, 3.0, 3.0))
    fp32 = compare.fastest_other(measured, "fp32")
    assert fp32["runtime"] == "ncnn_fp32" and fp32["edgec"] == "edgec_tuned"
    assert fp32["ratio"] == pytest.approx(1.25)  # median of 4/2, 10/8, 6/5, not 6/5
    assert compare.fastest_other(measured, "int8")["ratio"] is None  # edgec INT8 n/a
    measured["litert_int8"] = {"ms": None, "note": "no venv"}
    assert compare.fastest_other(measured, "int8") is None

    fp32["one_process"] = {"ratio": 1.1, "rounds": [1.0, 1.1, 1.3]}
    row = {"macs": 1e9, "latency_ms": {k: measured[k]["ms"] for k in COLUMNS},
           "peak_fraction": {k: 0.5 for k in COLUMNS}, "cosine_vs_ort_fp32": {},
           "notes": {"litert_int8": "no venv"},
           "fastest_other": {"fp32": fp32, "int8": None}, "details": {}}
    result = {"settings": {"date": "2026-01-01", "cpu": "cpu", "threads": 2, "runs": 5,
                           "warmup": 1, "rounds": 3, "peak_gemm": "8", "target": "x86_64"},
              "peak_gflops": 10.0, "peak_gemm_gflops": {"auto": 10.0},
              "tuning": {"seconds": None, "source": "none", "models": {}}, "models": {"m": row}}
    lines = compare.markdown(result).splitlines()
    head = next(line for line in lines if line.startswith("| model"))
    cells = dict(zip(head.split(" | "), next(line for line in lines if line.startswith("| m "))
                     .split(" | "), strict=True))
    assert cells["fastest other FP32"] == "ncnn 5.0"
    assert cells["edgec tuned ÷ it"] == "1.25×"
    assert "| 1.25× | 1.10× (1.00-1.30) | n/a | n/a | n/a |" in next(
        line for line in lines if line.startswith("| m "))
    assert cells["fastest other INT8"] == cells["edgec INT8 ÷ it"] == "n/a"
    assert cells["LiteRT INT8"] == "n/a" and "- LiteRT INT8 n/a (m): no venv" in lines


def test_against_reports_how_far_each_latency_moved_between_two_runs():
    sys.path.insert(0, str(REPO / "bench"))
    import compare

    def run(date, latencies):
        return {"settings": {"date": date},
                "models": {"m": {"latency_ms": dict(zip(COLUMNS, latencies, strict=False))}}}

    earlier = run("2026-01-01", [10.0, 8.0, 4.0, None])
    now = run("2026-01-02", [11.0, 8.0, 3.0, 5.0])  # +10%, 0%, -25%, and one cell new
    rep = compare.reproducibility(now, earlier)
    assert rep["cells"] == 3 and rep["within_10_percent"] == 2
    assert rep["median_abs_percent"] == pytest.approx(10.0)
    assert rep["largest"]["percent"] == pytest.approx(-25.0)
    assert "edgec INT8" in rep["largest"]["cell"]
    assert "2 of 3 cells within 10%" in compare.reproducibility_line(rep)

"""bench/compare.py end to end: one small model through every runtime, JSON and chart written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

COLUMNS = ("edgec_untuned", "edgec_tuned", "edgec_int8", "ort_fp32", "ort_int8",
           "openvino_fp32", "openvino_int8")
MUST_RUN = ("edgec_untuned", "edgec_tuned", "ort_fp32", "openvino_fp32")


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
    for column in ("edgec_int8", "ort_int8", "openvino_int8"):  # quantized, same network
        if row["latency_ms"][column] is not None:
            assert row["cosine_vs_ort_fp32"][column] > 0.9


@pytest.mark.slow
def test_compare_writes_a_real_png_chart(quick_run):
    _, png = quick_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


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

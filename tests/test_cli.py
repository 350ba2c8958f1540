"""The command line as a user meets it: bad input gives one clear line, exit 1, no artifact."""

import os
import shutil
from pathlib import Path

import numpy as np

from conftest import assert_clean_failure, leftovers, run_cli


def test_help_is_instant_and_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("compile", "run", "verify", "targets", "zoo", "bench"):
        assert command in result.stdout


def test_targets_and_zoo_are_listed():
    assert "rpi4" in run_cli("targets").stdout
    assert "mobilenet_v3_small" in run_cli("zoo").stdout


def test_zoo_writes_an_onnx_file_that_onnxruntime_runs(tmp_path):
    import onnxruntime as ort

    out = tmp_path / "sq.onnx"
    assert run_cli("zoo", "squeezenet1_1", "-o", str(out)).returncode == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})
    assert logits.shape == (1, 1000)


def test_compile_rejects_a_missing_file(tmp_path):
    result = run_cli("compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "m.so"))
    assert_clean_failure(result, "missing.onnx", "does not exist")
    assert leftovers(tmp_path) == []


def test_compile_rejects_a_file_that_is_not_onnx(tmp_path):
    bad = tmp_path / "photo.onnx"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    result = run_cli("compile", str(bad), "-o", str(tmp_path / "m.so"))
    assert_clean_failure(result, "photo.onnx")
    assert leftovers(tmp_path) == []


def test_compile_rejects_a_truncated_onnx_file(tmp_path):
    full = tmp_path / "full.onnx"
    run_cli("zoo", "mobilenet_v1", "-o", str(full))
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(full.read_bytes()[:300_000])
    result = run_cli("compile", str(cut), "-o", str(tmp_path / "m.so"))
    assert_clean_failure(result, "cut.onnx")
    assert leftovers(tmp_path) == []


def test_compile_rejects_an_unknown_input_shape_name(dynamic_conv_model, tmp_path):
    result = run_cli("compile", str(dynamic_conv_model), "--input-shape", "img:1,3,8,8",
                     "-o", str(tmp_path / "m.so"))
    assert_clean_failure(result, '"img"', "image")
    assert leftovers(tmp_path) == []


def test_compile_rejects_a_dynamic_model_without_shapes(dynamic_conv_model, tmp_path):
    result = run_cli("compile", str(dynamic_conv_model), "-o", str(tmp_path / "m.so"))
    assert_clean_failure(result, "dynamic input dims", "image: [batch, 3, h, w]", "--input-shape")
    assert leftovers(tmp_path) == []


def test_compile_rejects_an_unknown_target(tmp_path):
    result = run_cli("compile", "zoo:squeezenet1_1", "--target", "raspi4",
                     "-o", str(tmp_path / "m.so"))
    assert_clean_failure(result, "raspi4", "rpi4")
    assert leftovers(tmp_path) == []


def test_compile_names_the_missing_cross_compiler_and_its_package(tmp_path):
    python_dir = Path(shutil.which("python3") or "/usr/bin/python3").parent
    result = run_cli("compile", "zoo:squeezenet1_1", "--target", "rpi4",
                     "-o", str(tmp_path / "m.so"), env={"PATH": str(python_dir)})
    assert_clean_failure(result, "aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu")
    assert leftovers(tmp_path) == []


def test_compile_writes_library_and_metadata_then_run_and_verify_agree(tmp_path):
    out = tmp_path / "sq.so"
    result = run_cli("compile", "zoo:squeezenet1_1", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "check against ONNX Runtime" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sq.so", "sq.so.json"]
    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = run_cli("run", str(out), "--input", f"input={tmp_path / 'x.npy'}",
                  "-o", str(tmp_path / "out.npz"))
    assert run.returncode == 0, run.stderr
    import onnxruntime as ort

    from edgec import zoo

    ref = ort.InferenceSession(zoo.build("squeezenet1_1").SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = np.load(tmp_path / "out.npz")["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    verify = run_cli("verify", str(out), "--reference", "zoo:squeezenet1_1")
    assert verify.returncode == 0 and "ok" in verify.stdout
    # The same library, given what users get wrong:
    for bad in (x.astype(np.float64), x.astype(np.int8), x.astype(np.complex64),
                np.full(x.shape, "a")):
        np.save(tmp_path / "bad.npy", bad)
        refused = run_cli("run", str(out), "--input", f"input={tmp_path / 'bad.npy'}")
        assert_clean_failure(refused, "input input", str(bad.dtype), "float32 expected")
    missing = tmp_path / "missing" / "dir" / "out.npz"
    assert_clean_failure(run_cli("run", str(out), "-o", str(missing)), str(missing.parent),
                         "does not exist")
    random_run = run_cli("run", str(out))
    assert random_run.returncode == 0 and "random inputs" in random_run.stderr


def test_verify_fails_against_a_different_model(tmp_path):
    out = tmp_path / "sq.so"
    assert run_cli("compile", "zoo:squeezenet1_1", "-o", str(out), "--no-check").returncode == 0
    other = tmp_path / "other.onnx"
    run_cli("zoo", "squeezenet1_1", "--seed", "7", "-o", str(other))
    result = run_cli("verify", str(out), "--reference", str(other))
    assert_clean_failure(result, "differs")
    assert "MISMATCH" in result.stdout


def test_run_refuses_a_library_whose_bytes_changed(tmp_path):
    out = tmp_path / "sq.so"
    assert run_cli("compile", "zoo:squeezenet1_1", "-o", str(out), "--no-check").returncode == 0
    data = bytearray(out.read_bytes())
    data[-10] ^= 0xFF
    out.write_bytes(bytes(data))
    assert_clean_failure(run_cli("run", str(out)), "does not match its metadata")


def test_run_refuses_a_library_without_metadata(tmp_path):
    out = tmp_path / "sq.so"
    assert run_cli("compile", "zoo:squeezenet1_1", "-o", str(out), "--no-check").returncode == 0
    (tmp_path / "sq.so.json").unlink()
    assert_clean_failure(run_cli("run", str(out)), "no metadata file")

"""The command line as a user meets it: bad input gives one clear line, exit 1, no artifact."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_failure, assert_only_error, leftovers, run_cli


def test_help_is_instant_and_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("compile", "run", "verify", "targets", "zoo", "bench"):
        assert command in result.stdout


def test_targets_and_zoo_are_listed_in_aligned_columns():
    from edgec import targets

    lines = run_cli("targets").stdout.splitlines()
    assert lines[0].split() == ["target", "arch", "layout", "description"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(targets.names())
    for column in ("arch", "layout", "description"):  # every cell starts under its heading
        start = lines[0].index(column)
        assert all(row[start - 2:start] == "  " and row[start] != " " for row in rows.values())
    assert "mobilenet_v3_small" in run_cli("zoo").stdout


def all_commands():
    """(name, click command) of every edgec command and subcommand."""
    import click

    from edgec.cli import cli

    found = []
    for name, command in cli.commands.items():
        found.append((name, command))
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
    return found


def test_every_option_has_help_and_the_command_list_is_not_cut():
    import click

    missing = [f"{name} {'/'.join(param.opts)}" for name, command in all_commands()
               for param in command.params
               if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert missing == []
    listing = run_cli("--help").stdout.split("Commands:")[1]
    assert "..." not in listing
    assert len([line for line in listing.splitlines() if line.strip()]) == len(
        [c for c in all_commands() if " " not in c[0]])
    deploy = " ".join(run_cli("deploy", "--help").stdout.split())
    assert "--ssh USER@HOST[:PORT] A board over SSH. [required]" in deploy
    assert "[default: 30.0]" in " ".join(run_cli("bench", "--help").stdout.split())


def test_zoo_writes_an_onnx_file_that_onnxruntime_runs(tmp_path):
    import onnxruntime as ort

    out = tmp_path / "sq.onnx"
    assert run_cli("zoo", "squeezenet1_1", "-o", str(out)).returncode == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})
    assert logits.shape == (1, 1000)


def test_compile_rejects_a_missing_file(tmp_path):
    result = run_cli("compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "m.so"))
    assert_only_error(result, "missing.onnx", "does not exist")
    assert leftovers(tmp_path) == []


def test_compile_rejects_a_file_that_is_not_onnx(tmp_path):
    bad = tmp_path / "photo.onnx"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    result = run_cli("compile", str(bad), "-o", str(tmp_path / "m.so"))
    assert_only_error(result, "photo.onnx")
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
    assert_only_error(result, '"img"', "image")
    assert leftovers(tmp_path) == []


def test_compile_rejects_a_dynamic_model_without_shapes(dynamic_conv_model, tmp_path):
    result = run_cli("compile", str(dynamic_conv_model), "-o", str(tmp_path / "m.so"))
    # The hint spells the model's own dims, its dynamic ones as placeholders to fill.
    assert_only_error(result, "dynamic input dims", "image: [batch, 3, h, w]",
                      "--input-shape image:BATCH,3,H,W (replace BATCH, H, W by sizes)")
    assert leftovers(tmp_path) == []


def test_dims_an_exporter_named_for_nobody_become_the_axes_roles_in_the_hint(
        dynamic_conv_model, tmp_path):
    """PaddlePaddle names every dynamic dim "DynamicDimension.N" (PP-LCNet's orientation
    model); spelled back they read "DYNAMICDIMENSION_0", not a placeholder anyone fills."""
    import onnx

    model = onnx.load(str(dynamic_conv_model))
    for value in (*model.graph.input, *model.graph.output):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param:
                dim.dim_param = f"DynamicDimension.{axis}"
    path = tmp_path / "paddle_named.onnx"
    onnx.save(model, str(path))
    result = run_cli("compile", str(path), "-o", str(tmp_path / "m.so"))
    assert_only_error(result, "--input-shape image:BATCH,3,H,W (replace BATCH, H, W by sizes)")
    assert "DYNAMICDIMENSION" not in result.stderr
    assert leftovers(tmp_path) == []


def test_an_input_shape_too_small_for_the_model_is_one_line_naming_the_op(tmp_path):
    result = run_cli("compile", "zoo:squeezenet1_1", "--input-shape", "input:1,3,8,8",
                     "-o", str(tmp_path / "m.so"))
    line = assert_clean_failure(result, "input:1,3,8,8", "too small", "max_pool2d",
                                "larger --input-shape")
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert result.stdout == "" and line == result.stderr.strip().splitlines()[-1]
    assert leftovers(tmp_path) == []


def test_compile_rejects_an_unknown_target(tmp_path):
    result = run_cli("compile", "zoo:squeezenet1_1", "--target", "raspi4",
                     "-o", str(tmp_path / "m.so"))
    assert_only_error(result, "raspi4", "rpi4")
    assert leftovers(tmp_path) == []


def test_compile_names_the_missing_cross_compiler_and_its_package(tmp_path):
    # A PATH with python3 alone: python3's own folder is /usr/bin on a stock Debian, where
    # the cross compiler is installed too (the test then found it and compiled).
    only_python = tmp_path / "bin"
    only_python.mkdir()
    (only_python / "python3").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    result = run_cli("compile", "zoo:squeezenet1_1", "--target", "rpi4",
                     "-o", str(tmp_path / "m.so"), env={"PATH": str(only_python)})
    assert_clean_failure(result, "aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu")
    assert leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`edgec compile zoo:squeezenet1_1` run once for this module: (library, its result)."""
    out = tmp_path_factory.mktemp("compiled") / "sq.so"
    return out, run_cli("compile", "zoo:squeezenet1_1", "-o", str(out))


def copy_of(compiled, folder: Path) -> Path:
    """The module's library and its metadata, copied into `folder` for a test to alter."""
    library, result = compiled
    assert result.returncode == 0, result.stderr
    for path in (library, library.with_name(library.name + ".json")):
        shutil.copy(path, folder / path.name)
    return folder / library.name


def test_compile_writes_library_and_metadata_then_run_and_verify_agree(compiled, tmp_path):
    out, result = compiled
    assert result.returncode == 0, result.stderr
    assert "check against ONNX Runtime" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["sq.so", "sq.so.json"]
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
    assert "float build: compile's check tolerance" in verify.stdout
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


def test_bench_stops_at_max_seconds_says_so_and_shows_progress_on_stderr(compiled, tmp_path):
    library, report = copy_of(compiled, tmp_path), tmp_path / "bench.json"
    result = run_cli("bench", str(library), "--runs", "1000000", "--warmup", "2",
                     "--max-seconds", "2", "--json", str(report))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["ended_by"] == "time" and data["requested_runs"] == 1_000_000
    assert 1 <= data["runs"] == len(data["latencies_ms"]) < 1_000_000
    assert "stopped by --max-seconds 2 before --runs 1000000" in result.stdout
    assert f"{data['runs']}/1000000 runs" in result.stderr  # the bar, off stdout
    few = run_cli("bench", str(library), "--runs", "3", "--warmup", "0", "--json", str(report))
    assert few.returncode == 0 and json.loads(report.read_text())["ended_by"] == "runs"
    assert "stopped by" not in few.stdout


def test_verify_fails_against_a_different_model(compiled, tmp_path):
    out = copy_of(compiled, tmp_path)
    other = tmp_path / "other.onnx"
    run_cli("zoo", "squeezenet1_1", "--seed", "7", "-o", str(other))
    result = run_cli("verify", str(out), "--reference", str(other))
    assert_clean_failure(result, "differs")
    assert "MISMATCH" in result.stdout


def test_run_refuses_a_library_whose_bytes_changed(compiled, tmp_path):
    out = copy_of(compiled, tmp_path)
    data = bytearray(out.read_bytes())
    data[-10] ^= 0xFF
    out.write_bytes(bytes(data))
    assert_clean_failure(run_cli("run", str(out)), "does not match its metadata")


def test_run_refuses_a_library_without_metadata(compiled, tmp_path):
    out = copy_of(compiled, tmp_path)
    (tmp_path / "sq.so.json").unlink()
    assert_clean_failure(run_cli("run", str(out)), "no metadata file")

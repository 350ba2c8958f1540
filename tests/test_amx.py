"""INT8 convs on Intel AMX tiles (x86_64-amx): the code holds the tile instructions and asks
Linux for the tile state, and on a CPU with AMX the artifact matches ONNX Runtime running
the same QDQ model. The compile-and-inspect half runs on any x86 machine; the run half
needs AMX (Sapphire Rapids or newer) and says so loudly where it is missing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper
from test_quantize import assert_agrees_with_qdq, compile_int8, disassembly, integer_convs

from conftest import function_code, save_classifier
from edgec import pipeline, runtime, targets, tune
from edgec.errors import ConfigError
from edgec.quant import QuantizeOptions


def _he_weights(rng):
    """weight(name, *shape): a He-scaled initializer from `rng`, so activations keep their
    range layer to layer (biases: x 0.1)."""

    def weight(name, *shape):
        scale = np.sqrt(2 / np.prod(shape[1:])) if len(shape) > 1 else 0.1
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    return weight


@pytest.fixture
def tile_net(tmp_path: Path) -> Path:
    """Every AMX tile geometry: a 3x3 conv at 28x28 (two rows of 14 pixels per tile), one
    of stride 2 (the tile load's row stride steps over pixels), a 1x1 conv over two
    64-channel chunks, one down to 7x7 (one row of 7: odd height), behind an RGB stem the
    tiles do not take (3 channels), then a classifier."""
    weight = _he_weights(np.random.default_rng(21))

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c4"], ["r4"]),
    ]
    inits = [weight("w0", 64, 3, 3, 3), weight("b0", 64), weight("w1", 64, 64, 3, 3),
             weight("b1", 64), weight("w2", 128, 64, 3, 3), weight("b2", 128),
             weight("w3", 128, 128, 1, 1), weight("b3", 128), weight("w4", 64, 128, 3, 3),
             weight("b4", 64), weight("w5", 10, 64), weight("b5", 10)]
    return save_classifier(nodes, "r4", ("w5", "b5"), inits, 28,
                           tmp_path / "tile_net.onnx")


def test_int8_convs_run_on_amx_tiles_and_match_the_qdq_model(tile_net, tmp_path):
    samples = np.random.default_rng(22).uniform(-1, 1, (16, 1, 3, 28, 28)).astype(np.float32)
    out = tmp_path / "tiles.so"
    result = compile_int8(tile_net, out, samples, "x86_64-amx", check=False)
    assert result.model.layout == "NHWC"
    assert len(integer_convs(result.model.ir)) == 5
    code = disassembly(out)
    # Four convs on tiles (one tdpbusd per tile row and weight tile, unrolled per tap), the
    # stem on vpdpbusd; each AMX kernel's tasks read the thread's tile configuration and load
    # their own where it differs, zero the accumulator tiles in place, and the kernel asks
    # for the tile state. Tile heights differ (14 pixels, then 7 at 7x7), so the run below
    # passes only if each kernel reloads where the last kernel's configuration differs; it
    # alternates with ONNX Runtime, whose MLAS AMX kernels (on the same thread) die of
    # SIGILL unless edgec gives their configuration back.
    assert code.count("tdpbusd") >= 4 and code.count("vpdpbusd") > 0
    assert code.count("sttilecfg") >= 4 and code.count("ldtilecfg") >= 8
    assert code.count("tilezero") >= 4
    assert code.count("<syscall@plt>") >= 4
    if not {"amx_int8", "amx_tile"} <= targets.cpu_flags():
        pytest.skip("THIS CPU HAS NO AMX: the tile code was compiled and inspected, but its "
                    "results are checked only on Sapphire Rapids or newer")
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


def test_tuning_leaves_the_amx_convs_on_their_tile(tile_net, tmp_path):
    """An AMX conv has one schedule; MetaSchedule's generic search of it would only find
    int32 loops far slower than the tiles, so tuning does not take it as a task. The stem
    (3 channels, on vpdpbusd) stays tunable."""
    samples = np.random.default_rng(23).uniform(-1, 1, (8, 1, 3, 28, 28)).astype(np.float32)
    np.save(tmp_path / "calib.npy", samples)
    report = pipeline.tune_model(
        str(tile_net), "x86_64-amx", tune.TuneOptions(logs=tmp_path / "logs", dry_run=True),
        quantization=QuantizeOptions("int8", calib=str(tmp_path / "calib.npy")))
    convs = [row.name for row in report.rows if "conv2d" in row.name]
    assert len(convs) == 1, report.summary()


def test_amx_code_is_checked_through_a_host_build_on_a_cpu_without_amx(tile_net, tmp_path,
                                                                       monkeypatch):
    """On a CPU without AMX (this Xeon's /proc/cpuinfo with the amx flags taken out, as on a
    Zen 5), x86_64-amx code would die of SIGILL where compile's check runs it: the check
    goes through a host build of the same graph and says why, and tune refuses to measure
    (naming the missing features), while --status, which measures nothing, still works."""
    from conftest import skip_unless_this_cpu_runs

    skip_unless_this_cpu_runs("x86_64-avx512-vnni")  # the faked host builds AVX-512 code
    text = (Path(__file__).parent / "data" / "cpuinfo-xeon-amx.txt").read_text()
    no_amx = "\n".join(line.replace(" amx_int8", "").replace(" amx_tile", "")
                       for line in text.splitlines())
    monkeypatch.setattr(targets, "_read_cpuinfo", lambda: no_amx)
    assert not targets.load("x86_64-amx").is_native
    assert targets.load("x86_64-avx512-vnni").is_native
    samples = np.random.default_rng(24).uniform(-1, 1, (8, 1, 3, 28, 28)).astype(np.float32)
    result = compile_int8(tile_net, tmp_path / "tiles.so", samples, "x86_64-amx")
    assert result.verify.ok, result.verify.summary()
    assert ("checked via a host build of the same graph (x86_64-amx code needs amx_int8, "
            "amx_tile, which this CPU lacks)") in result.verify.note
    with pytest.raises(ConfigError, match="x86_64-amx needs amx_int8, amx_tile, which this "
                                          "CPU lacks"):
        pipeline.tune_model(str(tile_net), "x86_64-amx",
                            tune.TuneOptions(logs=tmp_path / "logs", trials_per_task=1))
    assert pipeline.tune_model(str(tile_net), "x86_64-amx", tune.TuneOptions(
        logs=tmp_path / "logs", dry_run=True)).rows


# The tile configuration's word of row counts (bytes 48-55: tiles 0-5 of `rows` pixels, the
# two weight tiles of 16), as objdump shows the immediate an AMX kernel stores for it.
def _rows_word(rows: int) -> str:
    return hex(int.from_bytes(bytes([rows] * 6 + [16, 16]), "little"))


@pytest.mark.parametrize("size", [7, 5])
def test_pointwise_convs_on_small_planes_take_flat_tiles(tmp_path, size):
    """1x1 convs on a 7x7 plane ran one-row tiles of 7 pixels (each tdpbusd filling 7 of
    16 tile rows), and a 5x5 plane's rows fit no tile (under 7 pixels: vpdpbusd). Computed
    over the plane as one flat row, both take tiles of 13 pixels (49 -> 4 x 13, 25 -> 2 x
    13; the padding pixels are cropped): the code configures 13-row tiles, which neither
    plane's rows would, and the model matches ONNX Runtime on the same QDQ model."""
    rng = np.random.default_rng(25)
    weight = _he_weights(rng)

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
    ]
    # The second 1x1 conv has the work and the channel chunks a flat conv needs (1024 x 1024
    # channels: 51 M multiply-adds at 7x7, 26 M at 5x5); the first one does not.
    inits = [weight("w0", 64, 3, 3, 3), weight("b0", 64), weight("w1", 1024, 64, 1, 1),
             weight("b1", 1024), weight("w2", 1024, 1024, 1, 1), weight("b2", 1024),
             weight("w3", 10, 1024), weight("b3", 10)]
    net = save_classifier(nodes, "r2", ("w3", "b3"), inits, size, tmp_path / "flat.onnx")
    samples = rng.uniform(-1, 1, (16, 1, 3, size, size)).astype(np.float32)
    out = tmp_path / "flat.so"
    result = compile_int8(net, out, samples, "x86_64-amx", check=False)
    code = disassembly(out)
    assert code.count("tdpbusd") >= 2
    assert _rows_word(13) in code, "no kernel configures 13-row tiles"
    if size == 7:  # the first 1x1 conv, too small for flat tiles, keeps its rows of 7
        assert _rows_word(7) in code, "the small conv left its row tiles"
    if not {"amx_int8", "amx_tile"} <= targets.cpu_flags():
        pytest.skip("THIS CPU HAS NO AMX: the tile code was compiled and inspected, but its "
                    "results are checked only on Sapphire Rapids or newer")
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])


@pytest.mark.parametrize("low", [-1.0, 0.0])
def test_an_rgb_stem_runs_on_amx_tiles_as_columns(tmp_path, low):
    """A 7x7 stride-2 conv of an image's 3 channels (ResNet's stem) fits no tile row of 64
    input channels and ran on vpdpbusd; copied as columns of 7 x 7 x 3 = 147 bytes (192
    with zeros) it is a 1x1 conv on AMX tiles: no conv function is left with vpdpbusd.
    Inputs in [-1, 1] put the input's zero point at 128, so the quantizer pads explicitly
    before the conv; inputs in [0, 1] give zero point 0 and the conv's own padding, which
    the column copy applies: both match ONNX Runtime on the same QDQ model."""
    weight = _he_weights(np.random.default_rng(26))
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], pads=[3, 3, 3, 3],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
    ]
    inits = [weight("w0", 64, 3, 7, 7), weight("b0", 64), weight("w1", 64, 64, 3, 3),
             weight("b1", 64), weight("w2", 10, 64), weight("b2", 10)]
    net = save_classifier(nodes, "r1", ("w2", "b2"), inits, 28, tmp_path / "stem.onnx")
    samples = np.random.default_rng(27).uniform(low, 1, (16, 1, 3, 28, 28)).astype(np.float32)
    out = tmp_path / "stem.so"
    result = compile_int8(net, out, samples, "x86_64-amx", check=False)
    convs = {name: function_code(out, "objdump", name) for name in
             set(re.findall(r"<(fused_\w*conv2d\w*_compute_)>:", disassembly(out)))}
    assert len(convs) == 2, sorted(convs)
    for name, body in convs.items():
        assert "tdpbusd" in body and "vpdpbusd" not in body, f"{name} is not on AMX tiles"
    if not {"amx_int8", "amx_tile"} <= targets.cpu_flags():
        pytest.skip("THIS CPU HAS NO AMX: the tile code was compiled and inspected, but its "
                    "results are checked only on Sapphire Rapids or newer")
    assert_agrees_with_qdq(runtime.load(out), result.model.reference, samples[:4])

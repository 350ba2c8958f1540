"""Target files load into valid TVM targets; bad files and names get errors naming the problem."""

from pathlib import Path

import pytest
import tvm

from conftest import assert_clean_failure, run_cli
from edgec import shipped, targets
from edgec.cpu import CpuCaps, cpuinfo_flags, parse_cpuinfo
from edgec.errors import ConfigError

REQUIRED = {"x86_64", "x86_64-avx512", "rpi3", "rpi4", "rpi5", "cortex-a55", "neoverse-n1", "host"}


def test_every_required_target_ships():
    assert REQUIRED <= set(targets.names())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_target_becomes_a_tvm_target_with_its_cpu(name):
    target = targets.load(name)
    tvm_target = target.tvm_target()
    assert isinstance(tvm_target, tvm.target.Target)
    assert tvm_target.attrs["mcpu"] == target.tvm["mcpu"]
    if target.arch == "aarch64":
        assert "arm_cpu" in tvm_target.keys and target.cross_compiler
        assert target.cpu.nchwc_block == 4


def test_nchwc_block_follows_vector_width():
    assert targets.load("x86_64").cpu.nchwc_block == 8
    assert targets.load("x86_64-avx512").cpu.nchwc_block == 16


def test_host_target_is_detected_from_this_machine():
    import platform

    from tvm.target import codegen

    host = targets.load("host")
    assert host.arch == platform.machine()
    assert host.tvm["mcpu"] == codegen.llvm_get_system_cpu()
    assert host.is_native


def test_dotprod_targets_carry_the_feature():
    for name in ("rpi5", "cortex-a55", "neoverse-n1"):
        assert "+dotprod" in targets.load(name).tvm["mattr"]


def test_unknown_target_suggests_the_nearest_name():
    with pytest.raises(ConfigError, match=r'unknown target "rpi44".*did you mean "rpi4"'):
        targets.load("rpi44")


def test_user_target_file_with_a_typo_names_file_and_field(tmp_path):
    text = (targets.targets_dir() / "rpi4.toml").read_text().replace("vector_bits", "vector_bit")
    path = tmp_path / "myboard.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"myboard.toml.*cpu.vector_bit.*did you mean"):
        targets.load(str(path))


def test_user_target_file_with_bad_value_names_the_field(tmp_path):
    text = (targets.targets_dir() / "rpi4.toml").read_text().replace('default = "NCHWc"',
                                                                     'default = "NCWH"')
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"board.toml: field layout.default"):
        targets.load(str(path))


def test_user_target_file_is_loaded_by_path(tmp_path):
    path = tmp_path / "myboard.toml"
    path.write_text((targets.targets_dir() / "rpi5.toml").read_text())
    target = targets.load(str(path))
    assert target.name == "myboard" and target.tvm["mcpu"] == "cortex-a76"


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(("board", "mcpu", "features"), [
    ("rpi4-a72", "cortex-a72", ("neon",)),
    ("rpi5-a76", "cortex-a76", ("neon", "dotprod", "fp16")),
    ("graviton2-n1", "neoverse-n1", ("neon", "dotprod", "fp16")),
])
def test_aarch64_cpuinfo_from_real_boards_maps_to_target_features(board, mcpu, features):
    """/proc/cpuinfo as real boards print it: asimddp is dotprod, asimdhp is FP16."""
    detected = parse_cpuinfo((DATA / f"cpuinfo-{board}.txt").read_text(), "aarch64")
    assert detected.mcpu == mcpu
    assert detected.features == features
    assert detected.mattr == [{"neon": "+neon", "dotprod": "+dotprod", "fp16": "+fullfp16"}[f]
                              for f in features]
    caps = CpuCaps("aarch64", detected.vector_bits, detected.features)
    assert caps.int8_dot == ("sdot" if "dotprod" in features else None)
    assert caps.fp16_arithmetic == ("fp16" in features)


@pytest.mark.parametrize(("name", "dot", "weight_bits", "activations", "registers"), [
    ("x86_64", "avx2", 7, "uint8", 16),
    ("x86_64-avx512", "avx2", 7, "uint8", 32),
    ("x86_64-avx512-vnni", "vnni", 8, "uint8", 32),
    ("x86_64-amx", "vnni", 8, "uint8", 32),
    ("rpi4", None, 8, "uint8", 32),
    ("rpi5", "sdot", 8, "int8", 32),
])
def test_cpu_capabilities_of_shipped_targets(name, dot, weight_bits, activations, registers):
    cpu = targets.load(name).cpu
    assert (cpu.int8_dot, cpu.int8_weight_bits, cpu.int8_activation_dtype,
            cpu.vector_registers) == (dot, weight_bits, activations, registers)


def test_amx_is_the_x86_64_amx_targets_alone_and_detected_from_cpuinfo(monkeypatch):
    """/proc/cpuinfo of this Sapphire Rapids guest (LLVM calls its masked model "rocketlake",
    which has no AMX): the host target adds the AMX attributes itself, and of the shipped
    targets x86_64-amx fits it best; without the AMX flags (a Zen 4/5) x86_64-avx512-vnni."""
    text = (DATA / "cpuinfo-xeon-amx.txt").read_text()
    detected = parse_cpuinfo(text, "x86_64")
    assert {"amx_int8", "amx_tile"} <= set(detected.features)
    assert sorted(detected.mattr) == ["+amx-int8", "+amx-tile"]
    assert targets.load("x86_64-amx").cpu.int8_tiles == "amx"
    assert targets.load("x86_64-avx512-vnni").cpu.int8_tiles is None
    monkeypatch.setattr(targets, "_read_cpuinfo", lambda: text)
    assert targets.closest_to_host() == "x86_64-amx"
    assert targets.load("host").tvm["mattr"] == detected.mattr
    no_amx = "\n".join(line.replace(" amx_int8", "").replace(" amx_tile", "")
                       for line in text.splitlines())
    monkeypatch.setattr(targets, "_read_cpuinfo", lambda: no_amx)
    assert targets.closest_to_host() == "x86_64-avx512-vnni"


def test_a_target_applies_the_shipped_logs_it_names():
    """x86_64-amx builds float models with x86_64-avx512-vnni's kernels: its logs apply."""
    assert targets.load("x86_64-amx").logs_name == "x86_64-avx512-vnni"
    assert targets.load("x86_64").logs_name == "x86_64"


def test_shipped_aarch64_targets_run_on_the_boards_they_name():
    """The flags a target needs are the ones its board's cpuinfo lists."""
    a76 = cpuinfo_flags((DATA / "cpuinfo-rpi5-a76.txt").read_text())
    a72 = cpuinfo_flags((DATA / "cpuinfo-rpi4-a72.txt").read_text())
    assert targets.load("rpi5").cpu.cpuinfo_flags() <= a76
    assert targets.load("rpi4").cpu.cpuinfo_flags() <= a72
    assert not targets.load("rpi5").cpu.cpuinfo_flags() <= a72


@pytest.mark.parametrize(("mcpu", "mattr", "int8", "named"), [
    ("cortex-a7x", '["+neon"]', "", "mcpu cortex-a7x"),
    ("cortex-a72", '["+neon", "+dotprodx"]', "", "mattr +dotprodx"),
    ("cortex-a72", '["+neon"]', '["+i8mmx"]', "mattr +i8mmx"),  # the INT8 builds' own mattr
])
def test_a_target_file_llvm_does_not_know_is_refused_before_compiling(tmp_path, mcpu, mattr,
                                                                      int8, named):
    """Before, LLVM warned ~90 lines, compiled generic code and edgec exited 0."""
    text = (shipped.path("targets") / "rpi4.toml").read_text()
    text = text.replace('mcpu = "cortex-a72"', f'mcpu = "{mcpu}"').replace(
        'mattr = ["+neon"]', f"mattr = {mattr}")
    if int8:
        text += f"\n[int8]\nmattr = {int8}\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = run_cli("compile", "zoo:squeezenet1_1", "--target", str(bad), "-o",
                     str(tmp_path / "out.so"), timeout=300)
    assert_clean_failure(result, str(bad), named, "[tvm]")
    assert "not a recognized feature" not in result.stderr and "is not valid" not in result.stderr
    assert not list(tmp_path.glob("out.so*"))


def test_cpu_labels_name_the_core_so_zen_generations_keep_their_own_records(monkeypatch):
    """"AMD EPYC" is all a VM's model name says on Zen 3, 4 and 5 alike, and they time the
    same code differently (Zen 4 runs 512-bit vectors as two halves), so the label that keys
    tuning records carries the core: AMD's documented family/model ranges (family 19h models
    10h-1Fh Genoa, 01h Milan; 1Ah Turin). Intel guests report masked models (this Sapphire
    Rapids guest says 167, Rocket Lake's), so they keep their numbers. The shipped records
    measured on a Zen 5 apply first on a Zen 5 only, not on this Zen 4 guest's cpuinfo."""
    from edgec.cpu import cpu_label, label_slug
    from edgec.tune import databases

    zen4 = (DATA / "cpuinfo-epyc-zen4.txt").read_text()
    zen5 = zen4.replace("cpu family\t: 25", "cpu family\t: 26").replace("model\t\t: 17",
                                                                         "model\t\t: 2")
    milan = zen4.replace("model\t\t: 17", "model\t\t: 1")
    milan = "\n".join(line.replace(" avx512", " no512") for line in milan.splitlines())
    assert cpu_label(zen4) == "AMD EPYC (Zen 4, avx512-vnni)"
    assert cpu_label(zen5) == "AMD EPYC (Zen 5, avx512-vnni)"
    assert cpu_label(milan) == "AMD EPYC (Zen 3, avx2)"
    xeon = (DATA / "cpuinfo-xeon-amx.txt").read_text()
    assert cpu_label(xeon) == "Intel(R) Xeon(R) Processor (family 6 model 167, avx512-vnni)"
    assert cpu_label((DATA / "cpuinfo-rpi5-a76.txt").read_text()).startswith("Raspberry Pi 5")

    target = targets.load("x86_64-avx512-vnni")
    own = databases.logs_root() / target.logs_name
    for text, expected in ((zen5, [own / label_slug(cpu_label(zen5)), own]), (zen4, [own])):
        monkeypatch.setattr("edgec.cpu.host_label", lambda text=text: cpu_label(text))
        # and its flags: on an AVX2-only host the target would not be native, and no CPU's
        # subfolder applies to code that cannot run here
        monkeypatch.setattr(targets, "_read_cpuinfo", lambda text=text: text)
        assert databases.shipped_layers(target) == expected

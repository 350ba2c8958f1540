"""Target files load into valid TVM targets; bad files and names get errors naming the problem."""

import pytest
import tvm

from edgec import targets
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
        assert target.nchwc_block == 4


def test_nchwc_block_follows_vector_width():
    assert targets.load("x86_64").nchwc_block == 8
    assert targets.load("x86_64-avx512").nchwc_block == 16


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

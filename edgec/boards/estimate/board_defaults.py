"""Which core (and clock, bandwidth) to estimate a library for when the user names none:
the [board] table of the target the library was compiled for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgec.errors import ConfigError
from edgec.package import read_info


def board_of_library(library: Path) -> dict:
    """The [board] table of the library's target ({} when its target file has none)."""
    from edgec import targets

    target = read_info(library).target
    source = target.get("source") or ""
    try:
        loaded = targets.load(source if source and Path(source).is_file() else target["name"])
    except ConfigError:
        return {}
    return loaded.board


def estimate_library(library: Path, cpu: str | None, *,
                     progress: Callable[[str], None] | None = None):
    """estimate() on `cpu`, or on the library's target's board (its core, clock and DRAM
    bandwidth) when `cpu` is None.

    Raises:
        ConfigError: no cpu given and the target file names no [board] core.
    """
    from edgec.boards import estimate
    from edgec.boards.estimate import cores

    board = board_of_library(library)
    if cpu is None:
        if not board:
            raise ConfigError(
                f"{Path(library).name}: its target file has no [board] core; name one: "
                f"--estimate {'|'.join(cores.names())}")
        cpu = board["core"]
    overrides = {k: board[k] for k in ("clock_ghz", "dram_gbps") if k in board}
    if board.get("core") != cpu:
        overrides = {}  # the target's clock belongs to its own core, not to the one named
    if read_info(library).arch == "aarch64":
        from edgec.boards import emulator_root

        emulator_root.prepare(progress=progress)  # once per machine: the board's Python
    return estimate.estimate(Path(library), cpu, progress=progress, core_overrides=overrides)

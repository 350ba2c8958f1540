"""--layout auto: build the candidate layouts for the target, time them, keep the fastest.

Where the code runs here (a target this machine executes) the candidates are timed here, in
interleaved rounds (this kind of VM drifts by up to 1.5x within minutes, so only ratios
within a round count). For a board that is absent they are priced by the instruction-level
estimate (edgec.boards.estimate, qemu counts x llvm-mca; README "ARM speed without a
board"). The decision is stored beside the user's tuning logs, keyed by the model file, its
input shapes, the quantization mode and the CPU it was measured on, so the next compile of
the same model for the same target does not measure again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgec import measured_choice
from edgec.layout.blocks import block_of
from edgec.layout.convert import apply_layout, resolve
from edgec.model import Model
from edgec.targets import Target

DECISIONS_FILE = "layout_decisions.json"


@dataclass(frozen=True)
class LayoutDecision:
    """The layout --layout auto chose and the table it chose from (ms per candidate)."""

    layout: str
    table: dict[str, float]
    how: str  # "measured on <cpu>" or "estimated for <core>"
    cached: bool = False

    def summary(self) -> str:
        return "\n".join(measured_choice.decision_table(
            "layout auto", self.layout, self.how, self.cached, "layout", self.table))


def candidates(target: Target, ir) -> list[str]:
    """The packed layout with the block edgec.layout.blocks chooses, the same with half that
    block (narrower vectors pack more of some models' layers), and NHWC."""
    packed = resolve("NCHWc", target, ir)
    found = [packed]
    half = (block_of(packed) or 0) // 2
    if half >= 4:
        found.append(f"NCHW{half}c")
    return [*found, "NHWC"]


def decision_key(model_source: str, shapes: Mapping, mode: str | None, where: str) -> str:
    """What a stored decision is valid for: the model, its input shapes, the quantization
    mode and the CPU or core it was measured for."""
    return measured_choice.decision_key(model_source, shapes, mode or "fp32", where)


def load_decision(folder: Path, key: str) -> LayoutDecision | None:
    stored = measured_choice.load_decision(folder, DECISIONS_FILE, key)
    if stored is None:
        return None
    return LayoutDecision(stored["layout"], stored["table"], stored["how"], cached=True)


def store_decision(folder: Path, key: str, decision: LayoutDecision) -> None:
    record = {k: v for k, v in asdict(decision).items() if k != "cached"}
    measured_choice.store_decision(folder, DECISIONS_FILE, key, record)


def stored_layout(source: str, shapes: Mapping, mode: str | None, target: Target,
                  folder: Path, on_board: bool = False) -> str:
    """The layout a compile --layout auto stored for this model and target.

    Raises:
        ConfigError: none stored yet.
    """
    from edgec.errors import ConfigError

    where = measured_choice.where_measured(target, on_board) or ""
    decision = load_decision(folder, decision_key(source, shapes, mode, where))
    if decision is None:
        raise ConfigError(f"--layout auto: no layout was measured yet for {source} on "
                          f"{target.name}; run `edgec compile {source} --layout auto` first "
                          "(it stores its decision), or name a layout")
    return decision.layout


def choose(imported: Model, target: Target, build_one: Callable[[Model, dict], Any],
           stats: dict, say: Callable[[str], None], *, source: str, shapes: Mapping,
           mode: str | None, folder: Path,
           board: Any = None) -> tuple[Model, Any, LayoutDecision]:
    """The stored decision for this model and target, else every candidate built, timed or
    estimated, and the decision stored in `folder`. build_one(model, counts) compiles one
    layout (filling `counts` with its schedule statistics); `stats` gets the winner's.
    `board`: a sessions.BoardEndpoint to time the candidates on.

    Returns:
        (the laid-out model, its executable, the decision).
    """
    where = measured_choice.where_measured(target, board is not None)
    key = decision_key(source, shapes, mode, where or "")
    decision = load_decision(folder, key) if where else None
    if decision is not None:
        say(decision.summary())
        model = apply_layout(imported, decision.layout, target)
        say(f"compiling for {target.name}")
        return model, build_one(model, stats), decision
    counts: dict[str, dict] = {}

    def build_counting(model: Model):
        counts[model.layout] = {}
        return build_one(model, counts[model.layout])

    from edgec import check

    inputs = check.random_inputs([s.to_dict() for s in imported.inputs], seed=0)
    decision, built = decide(imported, target, build_counting, inputs, say, where, board)
    store_decision(folder, key, decision)
    say(decision.summary())
    stats.update(counts[decision.layout])
    model, executable = built[decision.layout]
    return model, executable, decision


def decide(imported: Model, target: Target, build_one: Callable[[Model], Any],
           inputs: Mapping[str, Any], say: Callable[[str], None],
           how: str | None, board: Any = None) -> tuple[LayoutDecision, dict]:
    """Build every candidate layout of `imported` with `build_one` (Model -> executable),
    time or estimate each, and return the decision with the built {layout: (model,
    executable)} so the winner is not built twice. `how` is where_measured(target).

    Raises:
        ConfigError: the target neither runs here nor names a [board] core to estimate.
    """
    from edgec.errors import ConfigError

    if how is None:
        raise ConfigError(f"--layout auto cannot measure for {target.name}: it does not run "
                          "here and its target file names no [board] core to estimate; give "
                          "its board (--rpc, --tracker or --ssh) or choose --layout NCHWc or NHWC")
    built = {}
    for name in candidates(target, imported.ir):
        say(f"layout auto: building {name}")
        model = apply_layout(imported, name, target)
        built[model.layout] = (model, build_one(model))
    if target.is_native and board is None:
        table = _time_here(built, inputs, say)
    else:
        table = _exported(built, target, inputs, say, board)
    best = min(table, key=table.get)
    return LayoutDecision(best, table, how), built


def _time_here(built: dict, inputs: Mapping[str, Any], say) -> dict[str, float]:
    from edgec import check

    def timer(model, executable):
        return lambda: check.median_ms(executable, model, inputs, runs=measured_choice.RUNS)

    return measured_choice.interleaved_medians(
        {name: timer(*built[name]) for name in built}, say, "layout auto")


def _exported(built: dict, target: Target, inputs: Mapping[str, Any], say,
              board: Any) -> dict[str, float]:
    """Each layout's library exported, then timed on the board or estimated for its core."""
    from edgec import build

    with tempfile.TemporaryDirectory(prefix="edgec-layout-") as tmp:
        libraries = {}
        for name, (model, executable) in built.items():
            libraries[name] = Path(tmp) / f"{name}.so"
            build.export(executable, model, target, libraries[name])
        return measured_choice.time_libraries(libraries, target, inputs, say, "layout auto",
                                              board)

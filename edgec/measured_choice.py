"""What `--layout auto` and `--quantize auto` share: where a variant is measured (here, or
priced by the instruction-level estimate for an absent board), interleaved timing, and the
decisions stored beside the user's tuning logs so the next compile does not measure again.

A decision is keyed by the model's bytes (zoo:NAME by name), its input shapes, what else
the choice depends on (the quantization mode for a layout, the calibration data for a
quantization) and the CPU or board core it was measured for.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgec.cpu import host_label
from edgec.targets import Target

# This kind of VM drifts by up to 1.5x within minutes: only ratios within a round count, so
# candidates are timed in interleaved rounds and each keeps the median of its rounds.
ROUNDS, RUNS = 3, 10


def where_measured(target: Target, on_board: bool = False) -> str | None:
    """"measured on <cpu>" for a target this machine runs, "measured on <target> board" when
    a board is given (--rpc, --tracker, --ssh; not its address, which changes between
    sessions), "estimated for <core>" for one with a [board] core, None when none applies."""
    core = target.board.get("core") if target.board else None
    if on_board:
        return f"measured on {target.name} board" + (f" ({core})" if core else "")
    if target.is_native:
        return f"measured on {host_label()}"
    return f"estimated for {core}" if core else None


def decision_table(what: str, choice: str, how: str, cached: bool, column: str,
                   table: Mapping[str, float]) -> list[str]:
    """The lines a measured choice prints: what it chose, how, and every candidate's ms and
    ratio to the best, fastest first."""
    best = min(table.values())
    rows = [f"{what}: {choice} ({how}"
            + ("; stored decision, delete it to measure again)" if cached else ")"),
            f"  {column:<10} {'ms':>9} {'vs best':>8}"]
    for name, ms in sorted(table.items(), key=lambda kv: kv[1]):
        rows.append(f"  {name:<10} {ms:9.3f} {ms / best:7.2f}x")
    return rows


def file_digest(source: str | None) -> str:
    """16 hex digits of a file's bytes; the text itself for zoo:NAME, random, or None."""
    if source is None:
        return "none"
    path = Path(source)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if path.is_dir():  # a calibration folder: its files' names and sizes
        entries = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
    return source


def decision_key(model_source: str, shapes: Mapping, variant: str, where: str) -> str:
    shape_text = ";".join(f"{k}={','.join(map(str, v))}" for k, v in sorted(shapes.items()))
    return f"{file_digest(model_source)}|{shape_text}|{variant}|{where}"


def load_decision(folder: Path, file: str, key: str) -> dict | None:
    try:
        return json.loads((folder / file).read_text())[key]
    except (OSError, ValueError, KeyError):
        return None


def store_decision(folder: Path, file: str, key: str, record: dict) -> None:
    """Add the record under `key` to folder/file (written whole, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    stored[key] = {**record, "date": time.strftime("%Y-%m-%d")}
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(stored, indent=2))
    partial.replace(path)


def interleaved_medians(timers: Mapping[str, Callable[[], float]], say: Callable[[str], None],
                        what: str) -> dict[str, float]:
    """Median per candidate of its per-round medians; each round times every candidate once
    (timers[name]() returns one median in ms)."""
    rounds: dict[str, list[float]] = {name: [] for name in timers}
    for index in range(ROUNDS):
        say(f"{what}: timing round {index + 1} of {ROUNDS}")
        for name, timer in timers.items():
            rounds[name].append(timer())
    return {name: statistics.median(values) for name, values in rounds.items()}


def library_timer(library: Path, inputs: Mapping[str, Any]) -> Callable[[], float]:
    """A timer of one exported library on this machine: the median of RUNS inferences."""
    from edgec import runtime

    return model_timer(runtime.load(library, check=False), inputs)


def model_timer(model: Any, inputs: Mapping[str, Any]) -> Callable[[], float]:
    """A timer of one loaded model, here or on a board: the median of RUNS inferences."""
    from edgec import latency

    return lambda: latency.benchmark(model, inputs, runs=RUNS, warmup=2).stats()["median"]


def estimate_ms(library: Path) -> float:
    """Single-thread estimate of an exported library on its target's board core."""
    from edgec.boards.estimate.board_defaults import estimate_library

    return estimate_library(library, None).ms


def time_libraries(libraries: Mapping[str, Path], target: Target, inputs: Mapping[str, Any],
                   say: Callable[[str], None], what: str, board: Any = None) -> dict[str, float]:
    """ms per exported candidate library: timed on the board (a sessions.BoardEndpoint) in
    interleaved rounds, else here in interleaved rounds for a target this machine runs,
    else estimated for the target's [board] core."""
    if board is not None:
        from edgec.boards import sessions

        with sessions.open_board(board, progress=say) as remote:
            timers = {}
            for name, library in libraries.items():
                say(f"{what}: uploading {name} to {remote.where}")
                timers[name] = model_timer(remote.load(library), inputs)
            return interleaved_medians(timers, say, what)
    if target.is_native:
        return interleaved_medians({name: library_timer(library, inputs)
                                    for name, library in libraries.items()}, say, what)
    table = {}
    for name, library in libraries.items():
        say(f"{what}: estimating {name} on {target.board['core']}")
        table[name] = estimate_ms(library)
    return table

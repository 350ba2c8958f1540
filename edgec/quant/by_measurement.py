"""--quantize auto: compile FP32, FP16 and (with calibration data) INT8, keep the fastest
that passes the accuracy check, and say loudly when INT8 buys nothing.

Each candidate is a whole compile (import, quantize, layout, build, check against the
reference runtime), so a candidate that fails its check is rejected, not shipped. A
quantized candidate must also stay close to FP32 on the calibration (or random) inputs:
every output's mean cosine >= MIN_COSINE and, for classifiers, top-1 agreement >=
MIN_TOP1. Timing and storage are shared with --layout auto (edgec.measured_choice): timed
here in interleaved rounds for a target this machine runs, priced by the instruction-level
estimate for a board target, and the decision stored in quantize_decisions.json beside the
user's tuning logs, keyed by model, shapes, calibration data, layout and CPU or core.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgec import measured_choice
from edgec.errors import ConfigError, EdgecError
from edgec.targets import Target

DECISIONS_FILE = "quantize_decisions.json"
FP32 = "fp32"
# What a quantized variant may lose against FP32 and still be picked on speed. On 12 stock
# photos (README "INT8 and FP16") the zoo's ResNet-18 INT8 keeps a mean logit cosine of
# 0.9994 and every top-1: admitted. Its MobileNetV2 (random weights, close logits) keeps
# 0.9912 but flips 2 of 12 top-1s, and MobileNetV3-Small 0.946: not a safe automatic pick.
MIN_COSINE = 0.99
MIN_TOP1 = 0.9


@dataclass(frozen=True)
class QuantizeDecision:
    """The precision --quantize auto chose, from what: ms per candidate that passed, and
    why each other candidate was rejected."""

    mode: str  # "fp32", "fp16" or "int8"
    table: dict[str, float]
    rejected: dict[str, str] = field(default_factory=dict)
    how: str = ""
    cached: bool = False

    @property
    def warnings(self) -> list[str]:
        if "int8" in self.table and FP32 in self.table and (
                self.table["int8"] >= self.table[FP32]):
            return [f"INT8 is not faster than FP32 for this model here ({self.table['int8']:.3f}"
                    f" ms against {self.table[FP32]:.3f} ms): quantizing it buys no speed, "
                    "only error"]
        return []

    def summary(self) -> str:
        rows = measured_choice.decision_table("quantize auto", self.mode, self.how, self.cached,
                                              "precision", self.table)
        rows += [f"  {name:<10} rejected: {why}" for name, why in self.rejected.items()]
        rows += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(rows)

    def record(self) -> dict:
        return {"mode": self.mode, "table": self.table, "rejected": self.rejected,
                "how": self.how}


def candidates(calib: str | None) -> tuple[list[str], dict[str, str]]:
    """(modes to compile, {mode: why it is not tried})."""
    if calib:
        return [FP32, "fp16", "int8"], {}
    return [FP32, "fp16"], {"int8": "not tried: it needs calibration data (--calib)"}


def accuracy_problem(report: Any) -> str | None:
    """Why a quantized build's agreement with FP32 (a QuantReport) is not good enough."""
    if report is None:
        return None
    for output in report.outputs:
        if output.cosine < MIN_COSINE:
            return (f"output {output.name} cosine {output.cosine:.4f} against FP32 "
                    f"< {MIN_COSINE} on {report.sample_source}")
        if output.top1_agreement is not None and output.top1_agreement < MIN_TOP1:
            return (f"output {output.name} top-1 agrees with FP32 on "
                    f"{100 * output.top1_agreement:.0f}% of {report.sample_source} "
                    f"(< {100 * MIN_TOP1:.0f}%)")
    return None


def decision_key(source: str, shapes: Mapping, qopts: Any, layout: str, where: str) -> str:
    variant = (f"calib={measured_choice.file_digest(qopts.calib)},{qopts.method},"
               f"{'per-channel' if qopts.per_channel else 'per-tensor'},layout={layout}")
    return measured_choice.decision_key(source, shapes, variant, where)


def stored(folder: Path, key: str) -> QuantizeDecision | None:
    record = measured_choice.load_decision(folder, DECISIONS_FILE, key)
    if record is None:
        return None
    return QuantizeDecision(record["mode"], record["table"], record.get("rejected", {}),
                            record["how"], cached=True)


def where_or_error(target: Target, on_board: bool = False) -> str:
    where = measured_choice.where_measured(target, on_board)
    if where is None:
        raise ConfigError(f"--quantize auto cannot measure for {target.name}: it does not run "
                          "here and its target file names no [board] core to estimate; "
                          "choose --quantize int8 or fp16, or none")
    return where


def choose(compile_one: Callable[[str | None, Path, Callable[[str], None]], Any],
           output: Path, target: Target, calib: str | None, say: Callable[[str], None],
           *, folder: Path, key: str, where: str,
           board: Any = None) -> tuple[Any, QuantizeDecision]:
    """Compile every candidate with compile_one(mode or None for FP32, output, progress) ->
    CompileResult, time or estimate those that pass, move the fastest to `output` (with its
    metadata) and store the decision under `key`. A stored decision compiles only its
    choice. `where`: where_or_error(target), which `key` was made with; `board`: a
    sessions.BoardEndpoint to time the candidates on.

    Returns:
        (the winner's CompileResult, the decision).
    """
    decision = stored(folder, key)
    if decision is not None:
        say(decision.summary())
        return compile_one(_mode(decision.mode), output, say), decision
    modes, rejected = candidates(calib)
    passed: dict[str, Any] = {}
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgec-quantize-", dir=output.parent) as tmp:
        for mode in modes:
            say(f"quantize auto: compiling {mode} ({len(passed) + len(rejected)} of "
                f"{len(modes) + len(rejected)} done)")
            progress = _prefixed(say, f"[{mode}] ")
            try:
                result = compile_one(_mode(mode), Path(tmp) / f"{mode}.so", progress)
            except EdgecError as err:
                if mode == FP32:
                    raise  # FP32 failing is the model's problem, not a choice to make
                rejected[mode] = str(err)
                continue
            problem = accuracy_problem(result.quantization)
            if problem:
                rejected[mode] = problem
            else:
                passed[mode] = result
        table = _time_or_estimate(passed, target, say, board)
        best = min(table, key=table.get)
        decision = QuantizeDecision(best, table, rejected, where)
        winner = passed[best]
        os.replace(winner.path, output)
        os.replace(f"{winner.path}.json", f"{output}.json")
    measured_choice.store_decision(folder, DECISIONS_FILE, key, decision.record())
    say(decision.summary())
    return replace(winner, path=output), decision


def _mode(name: str) -> str | None:
    return None if name == FP32 else name


def _prefixed(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda message: say(prefix + message.replace("\n", "\n" + prefix))


def _time_or_estimate(passed: Mapping[str, Any], target: Target, say,
                      board: Any = None) -> dict[str, float]:
    from edgec import check

    first = next(iter(passed.values()))
    inputs = check.random_inputs([s.to_dict() for s in first.model.inputs], seed=0)
    return measured_choice.time_libraries({mode: result.path for mode, result in passed.items()},
                                          target, inputs, say, "quantize auto", board)
